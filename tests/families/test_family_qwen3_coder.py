"""The qwen3-coder family plugin (ggufd/families/qwen3_coder.py): golden prompts, cross-checks
against Qwen's published Qwen3-Coder and Qwen3.5 templates with tools offered, tool calls and
results in the history and enable_thinking either way (the plain chats are in
test_family_contract.py), Qwen3.5's thinking switch, detection, the typing of arguments by the
tools' schemas, and XML tool calls streamed (arguments one by one) and parsed."""

from __future__ import annotations

import json

import pytest
from family_kit import (
    QWEN3_CODER,
    QWEN3_CODER_TEMPLATE,
    QWEN3_TEMPLATE,
    QWEN25_TEMPLATE,
    QWEN35_TEMPLATE,
    TEXT_CHATS,
    published,
)

import ggufd
from ggufd.errors import InvalidRequest
from ggufd.testing import gguf_metadata, model_spec
from ggufd.types import ChatPrompt, ReasoningSyntax

CODER = published("qwen3_coder", "coder")
QWEN35 = published("qwen3_coder", "qwen3.5")
metadata, model = QWEN3_CODER.metadata, QWEN3_CODER.model
OPENED = ReasoningSyntax("<think>", "</think>", opened=True)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": " The weather in a city. ",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "days": {"type": "integer", "minimum": 1},
                "detailed": {"type": "boolean"},
                "ratio": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object"},
                "units": {"type": ["string", "null"], "enum": ["c", "f"]},
                "zip": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
NOW = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, NOW]
CALLS = [
    {
        "id": "call_0",
        "type": "function",
        "function": {
            "name": "get_weather",
            "arguments": '{"city": "Paris", "days": 3, "detailed": true, "tags": ["rain", "é"], "options": {"a": 1}, "zip": null}',
        },
    },
    {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}},
]
TOOL_CONVERSATION = [
    {"role": "system", "content": " Be brief. "},
    {"role": "user", "content": "Weather in Paris, and the time?"},
    {"role": "assistant", "content": "<think>\nTwo calls.\n</think>\n\n Let me check. ", "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "call_1", "content": " 12:00 "},
]
TOOL_CHATS = {
    "calls-and-results": TOOL_CONVERSATION,
    "without-system": TOOL_CONVERSATION[1:],
    "calls-without-text": [
        TOOL_CONVERSATION[1],
        {**TOOL_CONVERSATION[2], "content": ""},
        TOOL_CONVERSATION[3],
        {"role": "user", "content": "Thanks"},
    ],
    "answered": [
        *TOOL_CONVERSATION,
        {"role": "assistant", "content": "<think>\nWarm.\n</think>\n\nIt is 22 degrees at noon."},
        {"role": "user", "content": "Thanks"},
    ],
    "answer-last": [*TOOL_CONVERSATION, {"role": "assistant", "content": "<think>\nok\n</think>\n\n22 degrees."}],
    "reasoning-then-query": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello!"},
        {"role": "user", "content": "Name a colour."},
    ],
}


@pytest.fixture(scope="module")
def coder(pm):
    plugin = pm.manager.get_plugin("qwen3_coder")
    assert plugin is not None and plugin.__name__ == "ggufd.families.qwen3_coder"
    return plugin


def chat(plugin, info, messages, tools=(), **template_kwargs) -> ChatPrompt:
    return plugin.format_chat(model=info, messages=messages, tools=list(tools), template_kwargs=template_kwargs)


# --------------------------------------------------------------------------- golden prompts


def test_coder_tools_and_calls(coder):
    prompt = chat(coder, model(), TOOL_CHATS["without-system"][:2], [NOW])
    assert prompt.tools_rendered and prompt.reasoning is None
    assert prompt.text == (
        "<|im_start|>system\nYou are Qwen, a helpful AI assistant that can interact with a computer to solve tasks."
        "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n<function>\n<name>now</name>\n"
        "<parameters>\n</parameters>\n</function>\n</tools>\n\n"
        "If you choose to call a function ONLY reply in the following format with NO suffix:\n\n<tool_call>\n"
        "<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
        "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
        "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the "
        "specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> "
        "XML tags\n- Required parameters MUST be specified\n- You may provide optional reasoning for your function "
        "call in natural language BEFORE the function call, but NOT after\n- If there is no function call available, "
        "answer the question like normal with your current knowledge and do not tell the user about function calls\n"
        "</IMPORTANT><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris, and the time?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nTwo calls.\n</think>\n\n Let me check.\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
        "</parameter>\n<parameter=detailed>\nTrue\n</parameter>\n<parameter=tags>\n"
        '["rain", "é"]\n</parameter>\n<parameter=options>\n{"a": 1}\n</parameter>\n<parameter=zip>\nNone\n'
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_coder_tool_descriptions(coder):
    text = chat(coder, model(), TEXT_CHATS["system-and-user"], [WEATHER]).text
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n")
    assert (
        "<tools>\n<function>\n<name>get_weather</name>\n<description>The weather in a city.</description>\n"
        "<parameters>\n<parameter>\n<name>city</name>\n<type>string</type>\n<description>The city</description>\n"
        "</parameter>\n<parameter>\n<name>days</name>\n<type>integer</type>\n<minimum>1</minimum>\n</parameter>\n"
    ) in text
    assert "<name>units</name>\n<type>['string', 'null']</type>\n<enum>[\"c\", \"f\"]</enum>\n</parameter>" in text
    assert '\n<required>["city"]</required>\n<additionalProperties>False</additionalProperties>\n</parameters>' in text
    assert "</parameters>\n<strict>True</strict>\n</function>\n</tools>" in text


def test_qwen35_tools_reasoning_and_results(coder):
    prompt = chat(coder, QWEN35.model(), TOOL_CONVERSATION, [NOW])
    assert prompt.reasoning == OPENED
    assert prompt.text == (
        "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
        + json.dumps(NOW)
        + "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
        "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
        "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
        "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the "
        "specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> "
        "XML tags\n- Required parameters MUST be specified\n- You may provide optional reasoning for your function "
        "call in natural language BEFORE the function call, but NOT after\n- If there is no function call available, "
        "answer the question like normal with your current knowledge and do not tell the user about function calls\n"
        "</IMPORTANT>\n\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris, and the time?<|im_end|>\n"
        # the content is trimmed before its reasoning is split off: the space after it stays
        "<|im_start|>assistant\n<think>\nTwo calls.\n</think>\n\n Let me check.\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
        "</parameter>\n<parameter=detailed>\nTrue\n</parameter>\n<parameter=tags>\n"
        '["rain", "é"]\n</parameter>\n<parameter=options>\n{"a": 1}\n</parameter>\n<parameter=zip>\nNone\n'
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temperature": 22}\n</tool_response>\n<tool_response>\n12:00\n'
        "</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )


def test_qwen35_drops_earlier_reasoning_and_trims(coder):
    prompt = chat(coder, QWEN35.model(), TOOL_CHATS["reasoning-then-query"], enable_thinking=False)
    assert prompt.text == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert prompt.reasoning is None and prompt.honoured == {"enable_thinking"}


# --------------------------------------------------------------------------- Qwen's templates


@pytest.mark.parametrize("reference", [CODER, QWEN35], ids=["coder", "qwen3.5"])
@pytest.mark.parametrize("tools", [[], TOOLS], ids=["no-tools", "tools"])
@pytest.mark.parametrize("switch", [None, True, False], ids=["default", "thinking-on", "thinking-off"])
@pytest.mark.parametrize("messages", [*TOOL_CHATS.values(), *TEXT_CHATS.values()], ids=[*TOOL_CHATS, *TEXT_CHATS])
def test_plugin_matches_qwens_template(coder, reference, tools, switch, messages):
    kwargs = {} if switch is None else {"enable_thinking": switch}
    prompt = chat(coder, reference.model(), messages, tools, **kwargs)
    assert prompt.text == reference.reference(messages, tools=tools or None, **kwargs).text
    assert prompt.tools_rendered == bool(tools)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Late."}],
        [{"role": "system", "content": "Only a system message."}],
        [{"role": "user", "content": "<tool_response>\nx\n</tool_response>"}],
        [{"role": "user", "content": "Hi"}, {"role": "function", "content": "?"}],
        [],
    ],
    ids=["late-system", "no-user", "only-tool-responses", "unknown-role", "empty"],
)
def test_qwen35_refuses_what_its_template_refuses(coder, messages):
    with pytest.raises(InvalidRequest):
        QWEN35.reference(messages)
    with pytest.raises(InvalidRequest):
        chat(coder, QWEN35.model(), messages)


# --------------------------------------------------------------------------- thinking


@pytest.mark.parametrize(
    "kwargs,thinks,honoured",
    [
        ({}, True, set()),
        ({"enable_thinking": False}, False, {"enable_thinking"}),
        ({"enable_thinking": True}, True, {"enable_thinking"}),
        ({"reasoning_effort": "minimal"}, False, {"reasoning_effort"}),
        ({"reasoning_effort": "none"}, False, {"reasoning_effort"}),
        ({"reasoning_effort": "low"}, True, {"reasoning_effort"}),
        ({"enable_thinking": False, "reasoning_effort": "high"}, True, {"enable_thinking", "reasoning_effort"}),
    ],
)
def test_qwen35_thinking_switch(coder, kwargs, thinks, honoured):
    bare = model(meta=metadata(None, architecture="qwen35moe", name="Qwen3.5 35B A3B"))
    for info in (QWEN35.model(), bare):
        prompt = chat(coder, info, TEXT_CHATS["one-user-message"], **kwargs)
        assert prompt.honoured == honoured
        assert prompt.reasoning == (OPENED if thinks else None)
        assert prompt.text.endswith("<|im_start|>assistant\n" + ("<think>\n" if thinks else "<think>\n\n</think>\n\n"))
        answer_filter = coder.answer_filter(model=info, prompt=prompt)
        assert isinstance(answer_filter, ggufd.ReasoningFilter) if thinks else answer_filter is None


@pytest.mark.parametrize("kwargs", [{"enable_thinking": True}, {"reasoning_effort": "high"}])
def test_qwen3_coder_does_not_reason(coder, kwargs):
    prompt = chat(coder, model(), TEXT_CHATS["one-user-message"], **kwargs)
    assert prompt.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.reasoning is None and prompt.honoured == frozenset()
    assert coder.answer_filter(model=model(), prompt=prompt) is None


# --------------------------------------------------------------------------- detection


def detect(plugin, meta, spec=None):
    return plugin.detect_family(metadata=meta, spec=spec or model_spec())


NEMOTRON_LIKE = (
    "{{ '<|im_start|>system\\n' }}<think></think>{{ '<tool_call>\\n<function=' ~ name ~ '>\\n<parameter=' }}"
)


def test_detect_family(coder):
    for architecture in ("qwen3", "qwen3moe", "qwen3next"):
        assert detect(coder, metadata(QWEN3_CODER_TEMPLATE, architecture=architecture)) == "qwen3-coder"
    for architecture in ("qwen35", "qwen35moe"):
        assert detect(coder, metadata(QWEN35_TEMPLATE, architecture=architecture, name="Qwen3.5 27B")) == "qwen3-coder"
        assert detect(coder, metadata(None, architecture=architecture, name=None)) == "qwen3-coder"
    # a Qwen3-Coder without a template, by its name; a fine-tune carrying Qwen3-Coder's template
    assert detect(coder, metadata(None, name="Qwen3 Coder 480B A35B Instruct")) == "qwen3-coder"
    assert detect(coder, metadata(None, name=None), model_spec("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M")) == "qwen3-coder"
    assert detect(coder, metadata(QWEN3_CODER_TEMPLATE, architecture="llama", name="Coder Finetune")) == "qwen3-coder"
    for meta in (
        metadata(None, name="Qwen3 8B"),  # Qwen3: the qwen3 family
        metadata(QWEN3_TEMPLATE, name="Qwen3 8B"),
        metadata(QWEN25_TEMPLATE, architecture="qwen2", name="Qwen2.5 Coder 7B Instruct"),
        metadata(NEMOTRON_LIKE, architecture="nemotron_h_moe", name="NVIDIA Nemotron 3 Nano 30B A3B"),
        metadata("[INST]<function=x><parameter=y>", architecture="qwen3moe"),
        metadata(None, architecture="llama", name="Qwen3 Coder"),
    ):
        assert detect(coder, meta) is None, (meta.architecture, meta.name)


def test_detection_through_the_plugin_manager(pm):
    assert pm.detect_family(metadata(), model_spec()) == "qwen3-coder"
    assert pm.detect_family(metadata(QWEN35_TEMPLATE, architecture="qwen35"), model_spec()) == "qwen3-coder"
    assert pm.detect_family(metadata(QWEN3_TEMPLATE, architecture="qwen3"), model_spec()) == "qwen3"
    assert pm.detect_family(metadata(QWEN25_TEMPLATE, architecture="qwen2"), model_spec()) == "chatml"
    nemotron = gguf_metadata(NEMOTRON_LIKE, "nemotron_h_moe", name="NVIDIA Nemotron 3 Nano 30B A3B")
    assert pm.detect_family(nemotron, model_spec()) == "gguf-template"


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "raw,schema,value",
    [
        ("Paris", {"type": "string"}, "Paris"),
        ("42", {"type": "string"}, "42"),
        ("null", {"type": "string"}, "null"),
        (" multi\nline ", {"type": "string"}, " multi\nline "),
        ("42", {"type": "integer"}, 42),
        ("-7 ", {"type": "integer"}, -7),
        ("4.5", {"type": "integer"}, "4.5"),
        ("3", {"type": "number"}, 3),
        ("2.5", {"type": "number"}, 2.5),
        ("1e3", {"type": "number"}, 1000.0),
        ("nan", {"type": "number"}, "nan"),
        ("lots", {"type": "number"}, "lots"),
        ("true", {"type": "boolean"}, True),
        ("False", {"type": "boolean"}, False),
        ("yes", {"type": "boolean"}, "yes"),
        ('{"a": [1, 2]}', {"type": "object"}, {"a": [1, 2]}),
        ('["x", "y"]', {"type": "array"}, ["x", "y"]),
        ("[1, 2", {"type": "array"}, "[1, 2"),
        ("null", {"type": "integer"}, None),
        ("None", {"type": "object"}, None),
        ("null", {"type": ["string", "null"]}, None),
        ("None", {"anyOf": [{"type": "string"}, {"type": "null"}]}, None),
        ("12", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, 12),
        ("c", {"enum": ["c", "f"]}, "c"),
        ("5", {"type": "int"}, 5),
        ("5", {}, 5),  # no type: guessed
        ("5", None, 5),  # no schema known (parse_tool_calls): guessed
        ('"quoted"', None, '"quoted"'),
        ("Paris", None, "Paris"),
        ("[" * 10_000, {"type": "array"}, "[" * 10_000),
    ],
)
def test_arguments_are_typed_by_the_schema(coder, raw, schema, value):
    converted = coder.convert(raw, schema)
    assert converted == value and type(converted) is type(value)


# --------------------------------------------------------------------------- tool calls


def split_all_ways(text: str):
    """The text whole, one character at a time, and in two at every position."""
    yield [text]
    yield list(text)
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]


def collect(pieces) -> tuple[str, list[tuple[str, str]], dict[int, list[str]]]:
    """(content, [(name, arguments)], {call index: its argument deltas}) of a stream's pieces."""
    content, calls, deltas = [], {}, {}
    for piece in pieces:
        if isinstance(piece, str):
            content.append(piece)
            continue
        if piece.name is not None:
            assert piece.index not in calls and piece.id
            calls[piece.index] = [piece.name, ""]
        if piece.arguments:
            calls[piece.index][1] += piece.arguments
            deltas.setdefault(piece.index, []).append(piece.arguments)
    return "".join(content), [tuple(calls[i]) for i in sorted(calls)], deltas


def streamed(stream, pieces):
    out = []
    for piece in pieces:
        out += stream.feed(piece)
    return collect(out + stream.finish())


def stream(coder, info=None, tools=TOOLS):
    return coder.tool_call_stream(model=info or model(), tools=tools)


ANSWER = (
    "I'll check the weather first.\n\n"
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
    '<parameter=detailed>\ntrue\n</parameter>\n<parameter=tags>\n["rain", "wind"]\n</parameter>\n'
    "<parameter=note>\nline one\nline two\n</parameter>\n</function>\n</tool_call>\n"
    "<tool_call>\n<function=now>\n</function>\n</tool_call>"
)
EXPECTED_CALLS = [
    (
        "get_weather",
        '{"city": "New York", "days": 3, "detailed": true, "tags": ["rain", "wind"], "note": "line one\\nline two"}',
    ),
    ("now", "{}"),
]


@pytest.mark.parametrize("reference", [CODER, QWEN35], ids=["coder", "qwen3.5"])
def test_tool_calls_stream_the_same_however_split(coder, reference):
    whole = streamed(stream(coder, reference.model()), [ANSWER])
    assert whole[0].rstrip() == "I'll check the weather first." and whole[1] == EXPECTED_CALLS
    for pieces in split_all_ways(ANSWER):
        assert streamed(stream(coder, reference.model()), pieces)[:2] == whole[:2]


def test_arguments_stream_one_by_one(coder):
    _, calls, deltas = streamed(stream(coder), list(ANSWER))
    assert calls == EXPECTED_CALLS
    assert deltas[0] == [
        '{"city": "New York"',
        ', "days": 3',
        ', "detailed": true',
        ', "tags": ["rain", "wind"]',
        ', "note": "line one\\nline two"',
        "}",
    ]
    assert deltas[1] == ["{}"]


def test_the_name_goes_out_once_the_function_tag_is_complete(coder):
    calls = stream(coder)
    assert "".join(calls.feed("Checking.\n<tool_call>\n<function=get_wea")).rstrip() == "Checking."
    header = calls.feed("ther>\n<parameter=city>\nPar")
    assert [(p.index, p.name, p.arguments) for p in header if not isinstance(p, str)] == [(0, "get_weather", "")]
    assert [p.arguments for p in calls.feed("is\n</parameter>\n")] == ['{"city": "Paris"']
    assert [p.arguments for p in calls.feed("</function>\n</tool_call>")] == ["}"]


def test_a_call_to_a_tool_not_offered_is_content(coder):
    text = "Sure.\n<tool_call>\n<function=rm_rf>\n<parameter=path>\n/\n</parameter>\n</function>\n</tool_call>"
    for reference in (CODER, QWEN35):
        for pieces in ([text], list(text)):
            content, calls, _ = streamed(stream(coder, reference.model()), pieces)
            assert calls == [] and content == text


BARE = "Let me look.\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</function>\nDone."


def test_qwen3_coder_calls_without_tool_call_tags(coder):
    """Qwen3-Coder sometimes leaves out <tool_call>; the block still is a call (as llama.cpp and vLLM take it)."""
    for pieces in split_all_ways(BARE):
        content, calls, _ = streamed(stream(coder), pieces)
        assert calls == [("get_weather", '{"city": "Rome"}')]
        assert content == "Let me look.\nDone."  # the whitespace before a call is dropped
    # a bare block that is no call stays as written, and so does one in Qwen3.5's answers
    for text in (BARE.replace("get_weather", "unknown"), "Write <function=f> in C.", "See <function=a>b</function>."):
        for pieces in ([text], list(text)):
            assert streamed(stream(coder), pieces)[:2] == (text, [])
    for pieces in ([BARE], list(BARE)):
        assert streamed(stream(coder, QWEN35.model()), pieces)[:2] == (BARE, [])


def test_a_cut_off_call_is_completed(coder):
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo"
    for pieces in split_all_ways(text):
        assert streamed(stream(coder), pieces)[1] == [("get_weather", '{"city": "Oslo"}')]


def test_reasoning_then_calls(coder):
    """Qwen3.5 answers inside the reasoning its prompt opened: the filter first, then the calls."""
    answer = "The user wants the weather.\n</think>\n\n" + ANSWER
    prompt = chat(coder, QWEN35.model(), TOOL_CONVERSATION[:2], TOOLS)
    for pieces in ([answer], list(answer)):
        answer_filter = coder.answer_filter(model=QWEN35.model(), prompt=prompt)
        calls = stream(coder, QWEN35.model())
        out, reasoning = [], []
        for piece in pieces:
            content, thought = answer_filter.feed(piece)
            reasoning.append(thought)
            out += calls.feed(content)
        content, thought = answer_filter.finish()
        out += calls.feed(content) + calls.finish()
        assert "".join(reasoning) + thought == "The user wants the weather."
        assert collect(out)[1] == EXPECTED_CALLS


def test_parse_tool_calls_gives_the_streamed_calls(coder):
    for reference in (CODER, QWEN35):
        calls = coder.parse_tool_calls(model=reference.model(), text=ANSWER)
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == EXPECTED_CALLS
        assert [c["id"] for c in calls] == ["call_0", "call_1"]
    assert coder.parse_tool_calls(model=model(), text=BARE)[0]["function"]["arguments"] == '{"city": "Rome"}'
    assert coder.parse_tool_calls(model=QWEN35.model(), text=BARE) is None


def test_what_the_plugin_renders_it_parses_back(coder):
    prompt = chat(coder, QWEN35.model(), TOOL_CONVERSATION, TOOLS)
    turn = prompt.text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = coder.parse_tool_calls(model=QWEN35.model(), text=turn)
    assert [c["function"]["name"] for c in parsed] == ["get_weather", "now"]
    assert json.loads(parsed[0]["function"]["arguments"])["tags"] == ["rain", "é"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris is the capital of France.",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "<tool_call>\n</tool_call>",
        "<tool_call>\n<function=>\n</function>\n</tool_call>",
        "<tool_call>\n<function=a\nb>\n</function>\n</tool_call>",
    ],
    ids=lambda text: repr(text[:40]),
)
def test_no_tool_call(coder, text):
    assert coder.parse_tool_calls(model=model(), text=text) is None


def test_openers_and_stops(coder, pm):
    assert coder.tool_call_openers(model=model()) == ["<tool_call>", "<function="]
    assert coder.tool_call_openers(model=QWEN35.model()) == ["<tool_call>"]
    assert pm.stop_sequences(model()) == ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
