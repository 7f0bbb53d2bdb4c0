"""ggufd.protocol.openai_chat: request parsing, the chat.completion body and its chunk stream, and a fuzz loop."""

from __future__ import annotations

import json
import random
import re

import pytest

from ggufd.errors import InvalidRequest
from ggufd.protocol.answer import Outcome
from ggufd.protocol.body import decode_json_body
from ggufd.protocol.openai_chat import (
    ChatOutput,
    ChatRequest,
    chat_completion,
    new_completion_id,
    normalise_messages,
    parse_chat_request,
    usage,
)
from ggufd.types import SamplingParams

USER = {"role": "user", "content": "Hello"}


def body(**fields) -> dict:
    return {"messages": [USER], **fields}


def refused(doc, defaults=None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(doc, defaults)
    assert info.value.status == 400
    return info.value


# --- messages


def test_minimal_request():
    chat = parse_chat_request({"messages": [USER]})
    assert chat == ChatRequest(
        model=None,
        messages=({"role": "user", "content": "Hello"},),
        sampling=SamplingParams(),
        max_tokens=None,
        stop=(),
        stream=False,
        include_usage=False,
        fields=frozenset({"messages"}),
    )


def test_model_is_passed_through():
    assert parse_chat_request(body(model="tiny")).model == "tiny"


def test_text_parts_are_joined():
    chat = parse_chat_request(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]}
            ]
        }
    )
    assert chat.messages == ({"role": "user", "content": "Hello, world"},)


def test_empty_parts_list_is_empty_text():
    assert parse_chat_request({"messages": [{"role": "user", "content": []}]}).messages[0]["content"] == ""


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
        {"type": "text"},  # a text part without text
    ],
)
def test_non_text_parts_are_refused_with_their_position(part):
    doc = {"messages": [USER, {"role": "user", "content": [{"type": "text", "text": "look:"}, part]}]}
    error = refused(doc)
    assert error.param == "messages.1.content.1"
    assert f"'{part['type']}'" in error.message


def test_developer_role_becomes_system():
    chat = parse_chat_request({"messages": [{"role": "developer", "content": "Be brief."}, USER]})
    assert [m["role"] for m in chat.messages] == ["system", "user"]
    assert chat.messages[0]["content"] == "Be brief."


def test_assistant_content_null_becomes_empty_text_and_extras_are_kept():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    chat = parse_chat_request(
        {
            "messages": [
                USER,
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"},
            ]
        }
    )
    assert chat.messages[1] == {"role": "assistant", "content": "", "tool_calls": calls}
    assert chat.messages[2] == {"role": "tool", "content": "42", "name": "f", "tool_call_id": "call_1"}


def test_normalise_messages_drops_unknown_message_keys():
    assert normalise_messages([{"role": "user", "content": "x", "audio": {"id": 1}, "name": None}]) == (
        {"role": "user", "content": "x"},
    )


# --- max_tokens


def test_max_completion_tokens_wins_over_max_tokens():
    assert parse_chat_request(body(max_tokens=10, max_completion_tokens=20)).max_tokens == 20
    assert parse_chat_request(body(max_completion_tokens=20, max_tokens=10)).max_tokens == 20
    assert parse_chat_request(body(max_tokens=10)).max_tokens == 10
    assert parse_chat_request(body(max_completion_tokens=7)).max_tokens == 7


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [-1, None])
def test_minus_one_and_null_mean_no_limit(field, value):
    assert parse_chat_request(body(**{field: value})).max_tokens is None
    # ... even when the model has a default: the client asked for no limit explicitly
    assert parse_chat_request(body(**{field: value}), {"max_tokens": 64}).max_tokens is None


def test_max_tokens_default_from_the_model_table():
    assert parse_chat_request(body(), {"max_tokens": 64}).max_tokens == 64
    assert parse_chat_request(body(max_tokens=5), {"max_tokens": 64}).max_tokens == 5


# --- sampling defaults


def test_model_defaults_fill_unset_sampling_values_and_request_values_win():
    defaults = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1, "seed": 7}
    chat = parse_chat_request(body(temperature=0.0, top_k=5, seed=None), defaults)
    assert chat.sampling == SamplingParams(temperature=0.0, top_p=0.9, top_k=5, min_p=0.1, repeat_penalty=1.1, seed=7)


def test_request_sampling_values_without_defaults():
    chat = parse_chat_request(
        body(
            temperature=1.5,
            top_p=0.5,
            top_k=3,
            min_p=0.2,
            repeat_penalty=1.3,
            presence_penalty=-1,
            frequency_penalty=0.5,
            seed=42,
        )
    )
    assert chat.sampling == SamplingParams(1.5, 0.5, 3, 0.2, 1.3, -1, 0.5, 42)


def test_zero_request_values_are_not_replaced_by_defaults():
    chat = parse_chat_request(body(temperature=0, presence_penalty=0), {"temperature": 0.8, "presence_penalty": 1.0})
    assert chat.sampling.temperature == 0
    assert chat.sampling.presence_penalty == 0


# --- stop


def test_stop_string_becomes_a_tuple():
    assert parse_chat_request(body(stop="###")).stop == ("###",)
    assert parse_chat_request(body(stop=["a", "b"])).stop == ("a", "b")


def test_stop_default_only_when_the_request_has_none():
    defaults = {"stop": ["\n\n"]}
    assert parse_chat_request(body(), defaults).stop == ("\n\n",)
    assert parse_chat_request(body(stop=None), defaults).stop == ("\n\n",)
    assert parse_chat_request(body(stop="END"), defaults).stop == ("END",)
    assert parse_chat_request(body(stop=["x", "y"]), defaults).stop == ("x", "y")
    assert parse_chat_request(body(stop=[]), defaults).stop == ()


# --- streaming


def test_stream_and_include_usage():
    assert parse_chat_request(body(stream=True)).stream is True
    assert parse_chat_request(body(stream=True)).include_usage is False
    chat = parse_chat_request(body(stream=True, stream_options={"include_usage": True}))
    assert (chat.stream, chat.include_usage) == (True, True)
    assert parse_chat_request(body(stream=None, stream_options=None)).stream is False
    with pytest.raises(InvalidRequest, match="stream_options"):  # as OpenAI: only with a stream
        parse_chat_request(body(stream_options={"include_usage": False}))


# --- refused fields


@pytest.mark.parametrize(
    "field, value",
    [
        ("functions", [{"name": "f"}]),
    ],
)
def test_unsupported_fields_are_refused_naming_the_field(field, value):
    error = refused(body(**{field: value}))
    assert error.param == field
    assert "not supported" in error.message


def test_n_above_one_is_refused():
    error = refused(body(n=2))
    assert error.param == "n"
    assert error.message == "Only n=1 is supported."


@pytest.mark.parametrize(
    "fields",
    [
        {"response_format": {"type": "text"}},
        {"tools": []},
        {"tools": None},
        {"logprobs": False},
        {"logit_bias": {}},
        {"n": 1},
        {"n": None},
    ],
)
def test_harmless_values_of_unsupported_fields_are_accepted(fields):
    assert isinstance(parse_chat_request(body(**fields)), ChatRequest)


def test_validation_errors_come_before_anything_else():
    error = refused({"messages": [{"role": "user", "content": 5}], "functions": [{"name": "f"}]})
    assert error.param == "messages.0.content"


# --- responses


def test_usage_and_chat_completion():
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    doc = chat_completion(
        "chatcmpl-1", 1700000000, "tiny", Outcome(reason="stop", prompt_tokens=5, completion_tokens=2, content="Hi!")
    )
    assert doc == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "tiny",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_completion_ids_are_unique_and_openai_shaped():
    ids = {new_completion_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids)


def parse_event(event: bytes) -> dict:
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    payload = event[len(b"data: ") : -2]
    assert b"\n" not in payload  # one line per event
    return json.loads(payload.decode("utf-8"))


def test_chat_output_stream():
    enc = ChatOutput("chatcmpl-abc", "tiny", created=1700000001)
    events = [enc.role(), enc.content("Hel"), enc.content("lo\nworld"), enc.finish("length"), enc.usage(4, 3)]
    chunks = [parse_event(e) for e in events]
    for chunk in chunks:
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-abc",
            "chat.completion.chunk",
            1700000001,
            "tiny",
        )
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert chunks[2]["choices"][0]["delta"] == {"content": "lo\nworld"}
    assert chunks[2]["choices"][0]["finish_reason"] is None
    assert chunks[3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert "usage" not in chunks[0]
    assert ChatOutput.DONE == b"data: [DONE]\n\n"


def test_chat_output_created_defaults_to_now_and_stays_fixed():
    import time

    before = int(time.time())
    enc = ChatOutput("id", "m")
    after = int(time.time())
    assert before <= enc.created <= after
    assert parse_event(enc.content("a"))["created"] == parse_event(enc.finish("stop"))["created"] == enc.created


def test_chat_output_error_event():
    from ggufd.errors import ServerError

    event = ChatOutput("id", "m").error(ServerError("boom"))
    assert parse_event(event) == {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}


# --- fuzz: any JSON-ish document is a ChatRequest or a 400, never another exception

FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "tools",
    "functions",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "extra",
]
MESSAGE_KEYS = ["role", "content", "name", "tool_calls", "tool_call_id", "type", "text", "include_usage"]
ROLES = ["system", "developer", "user", "assistant", "tool", "bot", ""]
ATOMS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    -2,
    2,
    3,
    128,
    129,
    2**31,
    -(2**63),
    10**30,
    0.0,
    -0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
    -1.0,
    1e308,
    -1e308,
    "",
    "text",
    "é😀",
    "\x00",
    "\n\n",
    "x" * 2000,
    "text",
    "json_object",
    "image_url",
]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 5 or kind < 0.45:
        return rng.choice(ATOMS)
    if kind < 0.6:
        return rng.choice(ROLES)
    if kind < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = FIELDS + MESSAGE_KEYS
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def random_message(rng: random.Random):
    if rng.random() < 0.1:
        return random_value(rng, 2)
    message = {"role": rng.choice(ROLES)}
    r = rng.random()
    if r < 0.4:
        message["content"] = rng.choice(["hi", "", "é😀", None])
    elif r < 0.7:
        message["content"] = [
            {"type": rng.choice(["text", "text", "image_url", 5]), "text": rng.choice(["a", "", 5, None])}
            if rng.random() < 0.8
            else random_value(rng, 3)
            for _ in range(rng.randint(0, 3))
        ]
    elif r < 0.9:
        message["content"] = random_value(rng, 2)
    for key in ("name", "tool_calls", "tool_call_id"):
        if rng.random() < 0.1:
            message[key] = random_value(rng, 3)
    return message


PLAUSIBLE = {
    "model": ["tiny", None, ""],
    "max_tokens": [1, 16, -1, None, 0],
    "max_completion_tokens": [1, 8, -1, None],
    "temperature": [0, 0.7, 2, None, 2.1],
    "top_p": [0, 0.9, 1, None],
    "top_k": [0, 40, None, 40.0],
    "min_p": [0.05, None],
    "seed": [0, -1, 2**40, None, 1.0],
    "stop": ["###", ["a", "b"], [], None, ""],
    "stream": [True, False, None],
    "stream_options": [{"include_usage": True}, {}, None],
    "n": [1, None, 2],
    "response_format": [{"type": "text"}, {"type": "json_object"}, "text"],
    "tools": [[], None],
    "logprobs": [False, None, True],
    "extra": [{"anything": [1, 2]}, "x"],
}


def plausible_document(rng: random.Random) -> dict:
    """Mostly valid requests with a few fields that may or may not be acceptable."""
    messages = [
        {
            "role": rng.choice(["system", "developer", "user", "assistant", "tool"]),
            "content": rng.choice(["hi", "", "é😀"]),
        }
    ]
    if rng.random() < 0.3:
        messages.append({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    if rng.random() < 0.2:
        messages.append({"role": "assistant", "content": None})
    doc = {"messages": messages}
    for field in rng.sample(sorted(PLAUSIBLE), rng.randint(0, 4)):
        doc[field] = rng.choice(PLAUSIBLE[field])
    return doc


def random_document(rng: random.Random):
    r = rng.random()
    if r < 0.25:
        return random_value(rng)
    if r < 0.55:
        return plausible_document(rng)
    doc = {"messages": [random_message(rng) for _ in range(rng.randint(0, 4))]}
    for _ in range(rng.randint(0, 6)):
        doc[rng.choice(FIELDS)] = random_value(rng, 1)
    return doc


def check_request(chat: ChatRequest) -> None:
    assert isinstance(chat, ChatRequest)
    assert chat.messages and all(isinstance(m["content"], str) for m in chat.messages)
    assert all(m["role"] in {"system", "user", "assistant", "tool"} for m in chat.messages)
    assert chat.max_tokens is None or (isinstance(chat.max_tokens, int) and chat.max_tokens >= 1)
    assert all(isinstance(s, str) and s for s in chat.stop) and len(chat.stop) <= 4
    assert isinstance(chat.stream, bool) and isinstance(chat.include_usage, bool)
    assert chat.sampling.top_k is None or type(chat.sampling.top_k) is int
    assert chat.sampling.seed is None or type(chat.sampling.seed) is int
    assert chat.sampling.temperature is None or 0 <= chat.sampling.temperature <= 2


def test_fuzz_parse_chat_request_returns_a_request_or_a_400():
    rng = random.Random(0)
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(3000):
        doc = random_document(rng)
        defaults = {"temperature": 0.5, "stop": ["\n"], "max_tokens": 16} if rng.random() < 0.2 else None
        try:
            chat = parse_chat_request(doc, defaults)
        except InvalidRequest as exc:
            assert exc.status == 400, doc
            outcomes["refused"] += 1
        else:
            check_request(chat)
            outcomes["accepted"] += 1
        # the same document through the byte-level path
        raw = json.dumps(doc).encode("utf-8")
        try:
            decoded = decode_json_body(raw)
            parse_chat_request(decoded)
        except InvalidRequest as exc:
            assert exc.status == 400
    # the generator reaches both outcomes often enough to mean something
    assert outcomes["accepted"] >= 100, outcomes
    assert outcomes["refused"] >= 1000, outcomes


def test_fuzz_decode_json_body_with_mutated_bytes():
    rng = random.Random(1)
    seed_body = json.dumps(
        {"messages": [{"role": "user", "content": 'héllo [1, {2}] \\ "'}], "stop": ["a"], "max_tokens": 5}
    ).encode()
    for _ in range(3000):
        raw = bytearray(seed_body)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(raw) + 1)
            if op < 0.4 and raw:
                del raw[min(pos, len(raw) - 1)]
            elif op < 0.8:
                raw.insert(pos, rng.randrange(256))
            else:
                raw[pos:pos] = rng.choice([b"\\ud800", b"NaN", b"[", b"{", b"\xff", b"1" * 5000, b'"', b"\\"])
        try:
            doc = decode_json_body(bytes(raw))
        except InvalidRequest as exc:
            assert exc.status == 400
            continue
        assert isinstance(doc, dict)
        try:
            check_request(parse_chat_request(doc))
        except InvalidRequest as exc:
            assert exc.status == 400


@pytest.mark.parametrize(
    "value", ["json", ["text"], {"type": "yaml"}, {"type": "json_schema", "json_schema": {"schema": "x"}}]
)
def test_malformed_response_format_is_400(value):
    with pytest.raises(InvalidRequest) as err:
        parse_chat_request(body(response_format=value))
    assert err.value.status == 400 and err.value.param.startswith("response_format")


def test_response_format_becomes_a_grammar():
    assert parse_chat_request(body(response_format={"type": "text"})).sampling.grammar is None
    assert "object" in parse_chat_request(body(response_format={"type": "json_object"})).sampling.grammar
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    grammar = parse_chat_request(
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    ).sampling.grammar
    assert '"\\"ok\\""' in grammar or '"ok"' in grammar


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "maxItems": 100000},
        {"type": "string", "minLength": 5000},
        {
            "a": {
                "b": {
                    "c": {
                        "d": {
                            "e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": {"p": {"q": {}}}}}}}}}}}}}
                        }
                    }
                }
            }
        },
    ],
)
def test_grammar_blowups_are_refused_at_once(schema):
    with pytest.raises(InvalidRequest) as err:
        parse_chat_request(
            body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        )
    assert err.value.param == "response_format.json_schema.schema"


def test_logit_bias_is_parsed():
    assert parse_chat_request(body(logit_bias={"5": -100, "7": 2.5})).sampling.logit_bias == ((5, -100.0), (7, 2.5))
    for bad in ({"x": 1}, {"5": 101}, {"-1": 1}):
        with pytest.raises(InvalidRequest):
            parse_chat_request(body(logit_bias=bad))
