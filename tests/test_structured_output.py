"""response_format (grammar-constrained JSON) and logit_bias, end to end on the tiny model."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from http_helpers import chat, error_of

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["happy", "sad"]}},
    "required": ["ok", "mood"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(tiny_daemon):
    return openai.OpenAI(base_url=tiny_daemon.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("seed", range(5))
def test_json_schema_output_parses_and_validates(client, seed):
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=100, temperature=1.0, seed=seed, response_format=response_format
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=100,
            temperature=1.0,
            seed=seed,
            response_format=response_format,
            stream=True,
        )
        if c.choices
    )
    assert streamed == choice.message.content


def test_json_object_output_is_an_object(client):
    finished = 0
    for seed in range(6):
        response = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=200,
            temperature=0.8,
            seed=seed,
            response_format={"type": "json_object"},
        )
        choice = response.choices[0]
        text = choice.message.content
        assert text.lstrip().startswith("{")
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
            finished += 1
    assert finished >= 1


def test_oversized_schema_is_refused_quickly(tiny_daemon):
    import time

    started = time.perf_counter()
    status, _, _ = response = chat(
        tiny_daemon.url,
        {
            "messages": MESSAGES,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1000000},
                },
            },
        },
    )
    assert status == 400 and error_of(response)["param"] == "response_format.json_schema.schema"
    assert time.perf_counter() - started < 1


def test_logit_bias_forces_and_bans_tokens(client, tiny_model):
    import llama_cpp

    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    forced = 400
    piece = vocab.detokenize([forced]).decode()
    text = (
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, logit_bias={str(forced): 100}
        )
        .choices[0]
        .message.content
    )
    assert text.strip() == (piece * 5).strip()

    plain = (
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1, temperature=0)
        .choices[0]
        .message.content
    )
    # ban every token that spells the greedy answer's first token on its own
    same = [t for t in range(vocab.n_vocab()) if vocab.detokenize([t]).decode("utf-8", "replace") == plain]
    assert same
    banned = (
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=1, temperature=0, logit_bias={str(t): -100 for t in same}
        )
        .choices[0]
        .message.content
    )
    assert banned != plain


def test_logit_bias_with_a_token_outside_the_vocabulary_is_400(tiny_daemon):
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, "logit_bias": {"999999": 5}})
    assert status == 400 and error_of(response)["param"] == "logit_bias"


@pytest.mark.parametrize(
    "extension",
    [
        {"json_schema": SCHEMA},  # llama.cpp: a schema at the top level
        {"response_format": {"type": "json_object", "schema": SCHEMA}},  # llama.cpp: json_object with a schema
    ],
)
def test_llama_cpp_schema_extensions_constrain_the_output(client, extension):
    for seed in range(3):
        response = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=100, temperature=1.0, seed=seed, extra_body=extension
        )
        assert response.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(response.choices[0].message.content), SCHEMA)


def test_a_raw_gbnf_grammar_constrains_the_output(client):
    grammar = 'root ::= ("yes" | "no") " " [0-9] [0-9]'
    for seed in range(3):
        response = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=20, temperature=1.0, seed=seed, extra_body={"grammar": grammar}
        )
        text = response.choices[0].message.content
        assert text.split(" ")[0] in ("yes", "no") and len(text.split(" ")[1]) == 2 and text[-2:].isdigit()


def test_bad_grammars_are_400s(tiny_daemon):
    cases = [
        ({"grammar": "root ::= ("}, "grammar"),  # llama.cpp cannot parse it
        ({"grammar": 'root ::= "\\x00"'}, "grammar"),  # would need U+0000: llama.cpp aborts on it
        ({"grammar": "root ::= [\\u0000-\\u0020]"}, "grammar"),
        ({"grammar": "x" * 300_000}, "grammar"),
        ({"grammar": "root ::= [a-z]", "json_schema": SCHEMA}, "grammar"),
        ({"json_schema": "not a schema"}, "json_schema"),
        ({"response_format": {"type": "json_object", "schema": {"type": "object", "maxItems": 10**9}}}, None),
    ]
    for extra, param in cases:
        answer = chat(tiny_daemon.url, {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **extra})
        status, error = answer[0], error_of(answer)
        assert status == 400 and error["type"] == "invalid_request_error", extra
        if param is not None:
            assert error["param"] == param, (extra, error)


def test_text_completions_take_the_grammar_extensions_too(client):
    response = client.completions.create(
        model="tiny", prompt="Answer:", max_tokens=20, temperature=1.0, seed=1, extra_body={"grammar": 'root ::= "ok"'}
    )
    assert response.choices[0].text == "ok"
    response = client.completions.create(
        model="tiny", prompt="Answer:", max_tokens=100, temperature=1.0, seed=1, extra_body={"json_schema": SCHEMA}
    )
    jsonschema.validate(json.loads(response.choices[0].text), SCHEMA)
