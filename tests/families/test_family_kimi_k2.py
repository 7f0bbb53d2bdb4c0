"""The kimi-k2 plugin (ggufd/families/kimi_k2.py): golden prompts byte for byte, cross-checks against
Moonshot's published Kimi K2 Thinking and Kimi K2 Instruct templates with tools, tool calls and results
(the plain chats are in test_family_contract.py), the one departure from the first Instruct template,
detection by template (DeepSeek's deepseek2 models stay DeepSeek's), the reasoning filter, and Kimi's
tool calls, streamed and whole, with the ids the model writes."""

from __future__ import annotations

import json

import gguf
import pytest
from family_kit import (
    KIMI_K2,
    KIMI_K2_TEMPLATE,
    KIMI_K2_THINKING_TEMPLATE,
    R1_TEMPLATE,
    TEXT_CHATS,
    published,
)

from ggufd.config import load_config
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import gguf_metadata, model_spec, render_template
from ggufd.types import ChatPrompt, PassThrough, ReasoningSyntax, ToolCallDelta

THINKING = published("kimi_k2", "thinking")
INSTRUCT = published("kimi_k2", "instruct")
metadata, model = KIMI_K2.metadata, KIMI_K2.model
SYSTEM_AND_USER = TEXT_CHATS["system-and-user"]
MULTI_TURN = TEXT_CHATS["multi-turn"]
KIMI_SYSTEM = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo d'une ville",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
}
TOOLS = [WEATHER, SEARCH]


def call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What's the weather in Paris and in Rome?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            call("functions.get_weather:0", "get_weather", '{"city": "Paris"}'),
            call("functions.get_weather:1", "get_weather", '{"city":"Rome"}'),
        ],
    },
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "functions.get_weather:1", "name": "get_weather", "content": "27"},
]
AFTER_RESULTS = [
    *TOOL_CONVERSATION,
    {"role": "assistant", "content": "Rome is warmer."},
    {"role": "user", "name": "alice", "content": "And Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "One more city.",
        "tool_calls": [call("functions.search:2", "search", '{"query": "Oslo weather"}')],
    },
    {"role": "tool", "tool_call_id": "functions.search:2", "content": "5 °C, snow"},
]
CROSS_CHECK = {
    "tool-calls-and-results": TOOL_CONVERSATION,
    "after-results": AFTER_RESULTS,
    "without-a-system-message": AFTER_RESULTS[1:],
    "no-messages": [],
    **TEXT_CHATS,
}


@pytest.fixture(scope="module")
def kimi(pm):
    plugin = pm.manager.get_plugin("kimi_k2")
    assert plugin is not None and plugin.__name__ == "ggufd.families.kimi_k2"
    return plugin


def prompt(kimi, messages, tools=(), meta=None) -> ChatPrompt:
    return kimi.format_chat(model=model(meta=meta), messages=messages, tools=list(tools))


def instruct(kimi, messages, tools=()) -> ChatPrompt:
    return kimi.format_chat(model=INSTRUCT.model(), messages=messages, tools=list(tools))


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(kimi):
    assert prompt(kimi, SYSTEM_AND_USER) == ChatPrompt(
        text=(
            "<|im_system|>system<|im_middle|>You are a helpful assistant.<|im_end|>"
            "<|im_user|>user<|im_middle|>What is the capital of France?<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|>"
        ),
        stop=("<|im_end|>",),
        add_bos=False,
        reasoning=ReasoningSyntax("<think>", "</think>", close="</think>"),
    )


def test_default_system_prompts(kimi):
    assert prompt(kimi, [{"role": "user", "content": "Hi"}]).text == (
        KIMI_SYSTEM + "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    )
    assert instruct(kimi, [{"role": "user", "content": "Hi"}]).text == (
        "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>"
        "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    )


def test_thinking_answers_and_tool_calls(kimi):
    assert prompt(kimi, AFTER_RESULTS, tools=[WEATHER]).text == (
        "<|im_system|>tool_declare<|im_middle|>" + json.dumps([WEATHER], ensure_ascii=False) + "<|im_end|>"
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
        "<|im_user|>user<|im_middle|>What's the weather in Paris and in Rome?<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><think></think>Let me check.<|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        '<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>{"city":"Rome"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
        '<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n{"temperature": 22}<|im_end|>'
        "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:1\n27<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><think></think>Rome is warmer.<|im_end|>"
        "<|im_user|>alice<|im_middle|>And Oslo?<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><think>One more city.</think><|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.search:2<|tool_call_argument_begin|>{"query": "Oslo weather"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
        "<|im_system|>tool<|im_middle|>## Return of functions.search:2\n5 °C, snow<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>"
    )
    assert prompt(kimi, AFTER_RESULTS, tools=[WEATHER]).tools_rendered
    assert not prompt(kimi, AFTER_RESULTS).tools_rendered


def test_instruct_does_not_reason(kimi):
    result = instruct(kimi, MULTI_TURN)
    assert result.reasoning is None and "<think>" not in result.text
    assert kimi.answer_filter(model=INSTRUCT.model(), prompt=result) is None


def test_instruct_renders_earlier_calls_unlike_its_first_template(kimi):
    """Kimi-K2-Instruct's first template dropped the calls and rendered results bare; the plugin renders
    them as Moonshot's later templates do (Thinking's, without the reasoning)."""
    result = instruct(kimi, TOOL_CONVERSATION).text
    assert result == (
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
        "<|im_user|>user<|im_middle|>What's the weather in Paris and in Rome?<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>Let me check.<|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        '<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>{"city":"Rome"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
        '<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n{"temperature": 22}<|im_end|>'
        "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:1\n27<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>"
    )
    reference = render_template(KIMI_K2_TEMPLATE, TOOL_CONVERSATION, INSTRUCT.meta).text
    assert "<|tool_call_begin|>" not in reference and "## Return of" not in reference


def test_template_kwargs_are_not_honoured(kimi, pm):
    result = pm.format_chat(model(), MULTI_TURN, (), {"enable_thinking": False, "reasoning_effort": "none"})
    assert result.honoured == frozenset() and result.reasoning is not None  # Kimi K2 Thinking always thinks
    assert result.text == prompt(kimi, MULTI_TURN).text


def test_add_bos_follows_the_vocabulary(kimi):
    assert prompt(kimi, MULTI_TURN, meta=metadata(add_bos=None)).add_bos is False
    assert prompt(kimi, MULTI_TURN, meta=metadata(add_bos=True)).add_bos is True


# --------------------------------------------------------------------------- the published templates


@pytest.mark.parametrize("tools", [[], [WEATHER], TOOLS], ids=["no-tools", "one-tool", "two-tools"])
@pytest.mark.parametrize("messages", list(CROSS_CHECK.values()), ids=list(CROSS_CHECK))
def test_plugin_matches_kimi_k2_thinking(kimi, messages, tools):
    result = kimi.format_chat(model=THINKING.model(), messages=messages, tools=tools)
    reference = render_template(KIMI_K2_THINKING_TEMPLATE, messages, THINKING.meta, tools=tools or None)
    assert result.text == reference.text and result.add_bos == reference.add_bos


@pytest.mark.parametrize("tools", [[], [WEATHER], TOOLS], ids=["no-tools", "one-tool", "two-tools"])
@pytest.mark.parametrize("messages", list(TEXT_CHATS.values()), ids=list(TEXT_CHATS))
def test_plugin_matches_kimi_k2_instruct(kimi, messages, tools):
    result = instruct(kimi, messages, tools)
    reference = render_template(KIMI_K2_TEMPLATE, messages, INSTRUCT.meta, tools=tools or None)
    assert result.text == reference.text and result.add_bos == reference.add_bos


# --------------------------------------------------------------------------- detection

# Kimi K2.5 (moonshotai/Kimi-K2.5), shortened to what marks its format: a thinking switch
KIMI_K25_TEMPLATE = (
    "{%- for message in messages -%}<|im_user|>user<|im_middle|>{{ message.content }}<|im_end|>{%- endfor -%}"
    "<|im_assistant|>assistant<|im_middle|>{% if thinking is defined and thinking is false %}<think></think>{% endif %}"
)
DEEPSEEK_V3_TEMPLATE = "{% for m in messages %}<｜User｜>{{ m['content'] }}{% endfor %}<｜Assistant｜>"


def test_detect_family_positive(kimi):
    spec = model_spec()
    for template in (KIMI_K2_TEMPLATE, KIMI_K2_THINKING_TEMPLATE):
        for architecture in ("deepseek2", "kimi-linear", None):  # the template decides
            assert kimi.detect_family(metadata=metadata(template, architecture=architecture), spec=spec) == "kimi-k2"
        assert kimi.detect_family(metadata=metadata(template.replace("\n", "\r\n")), spec=spec) == "kimi-k2"


def test_detect_family_negative(kimi):
    spec = model_spec()
    for template, architecture, name in (
        (None, "deepseek2", "Kimi K2 Instruct"),  # no template: DeepSeek's architecture
        (R1_TEMPLATE, "deepseek2", "DeepSeek R1"),
        (DEEPSEEK_V3_TEMPLATE, "deepseek2", "DeepSeek V3"),
        (KIMI_K25_TEMPLATE, "deepseek2", "Kimi K2.5"),
        (
            "{% for m in messages %}<|im_user|>{{ m['content'] }}<|im_end|>{% endfor %}<|im_assistant|>",
            "deepseek2",
            None,
        ),
        ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}", "qwen2", None),
    ):
        meta = metadata(template, architecture=architecture, name=name)
        assert kimi.detect_family(metadata=meta, spec=spec) is None, (name, template and template[:40])


def test_deepseek_models_stay_deepseek_and_kimi_models_are_not_deepseeks(pm):
    spec = model_spec()
    for meta in (
        gguf_metadata(R1_TEMPLATE, "deepseek2", name="DeepSeek R1"),
        gguf_metadata(DEEPSEEK_V3_TEMPLATE, "deepseek2", name="DeepSeek V3"),
        gguf_metadata(None, "deepseek2", name="DeepSeek V3"),
    ):
        assert pm.detect_family(meta, spec) == "deepseek"
    for template in (KIMI_K2_TEMPLATE, KIMI_K2_THINKING_TEMPLATE):
        assert pm.detect_family(gguf_metadata(template, "deepseek2", name="Kimi K2"), spec) == "kimi-k2"
    assert pm.detect_family(gguf_metadata(KIMI_K25_TEMPLATE, "deepseek2"), spec) == "gguf-template"


def write_gguf(path, architecture: str, **values):
    """A GGUF with metadata only (no tensors): enough for discovery and family detection."""
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in values.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        else:
            writer.add_string(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_kimi_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(
        folder / "Kimi-K2-Thinking-Q2_K.gguf",
        "deepseek2",
        **{"general.name": "Kimi K2 Thinking", "tokenizer.chat_template": KIMI_K2_THINKING_TEMPLATE},
    )
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    info = build_registry(config, pm).get("Kimi-K2-Thinking-Q2_K")
    assert info.family == "kimi-k2"
    for messages in CROSS_CHECK.values():
        result = pm.format_chat(info, messages, TOOLS)
        assert result.text == render_template(KIMI_K2_THINKING_TEMPLATE, messages, info.metadata, tools=TOOLS).text


# --------------------------------------------------------------------------- stops and reasoning


def test_stop_sequences(kimi):
    assert kimi.stop_sequences(model=model()) == ["<|im_end|>", "[EOS]"]
    assert kimi.stop_sequences(model=model(family="deepseek")) is None


def filtered(kimi, text: str, size: int | None = None) -> tuple[str, str]:
    answer = kimi.answer_filter(model=model(), prompt=prompt(kimi, MULTI_TURN))
    pieces = [text] if size is None else [text[i : i + size] for i in range(0, len(text), size)]
    content, reasoning = zip(*[answer.feed(piece) for piece in pieces], answer.finish(), strict=False)
    return "".join(content), "".join(reasoning)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>The user wants the capital.\nParis.</think>Paris.", ("Paris.", "The user wants the capital.\nParis.")),
        ("<think></think>Paris.", ("Paris.", "")),
        ("<think>Cut short", ("", "Cut short")),
        (
            "<think>Weather first.</think>Let me check.<|tool_calls_section_begin|><|tool_call_begin|>"
            'functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
            "<|tool_calls_section_end|>",
            (
                "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>',
                "Weather first.",
            ),
        ),
    ],
    ids=["reasoning", "empty", "unfinished", "then-a-call"],
)
def test_the_answer_filter_splits_the_reasoning_off(kimi, text, expected):
    for size in (None, 1, 3):
        assert filtered(kimi, text, size) == expected, size


def test_answer_filter_only_for_the_thinking_model(kimi, pm):
    assert isinstance(pm.answer_filter(INSTRUCT.model(), instruct(kimi, MULTI_TURN)), PassThrough)
    thinking = prompt(kimi, MULTI_TURN)
    assert not isinstance(pm.answer_filter(THINKING.model(), thinking), PassThrough)
    assert kimi.answer_filter(model=model(family="glm"), prompt=thinking) is None


# --------------------------------------------------------------------------- tool calls

ANSWER = (
    "I'll look both up.<|tool_calls_section_begin|>"
    '<|tool_call_begin|>functions.get_weather:3<|tool_call_argument_begin|>{"city": "Zürich"}<|tool_call_end|>'
    '<|tool_call_begin|>functions.search:4<|tool_call_argument_begin|>{"query": "Zürich } {events\\"", "n": [1, 2]}'
    "<|tool_call_end|><|tool_calls_section_end|>"
)
CALLS = [
    ("functions.get_weather:3", "get_weather", '{"city": "Zürich"}'),
    ("functions.search:4", "search", '{"query": "Zürich } {events\\"", "n": [1, 2]}'),
]


def streamed(kimi, pieces: list[str], tools=TOOLS) -> tuple[str, list[tuple[str, str, str]], int]:
    """(content, [(id, name, arguments)], deltas) from a tool-call stream fed ``pieces``."""
    stream = kimi.tool_call_stream(model=model(), tools=tools)
    out = [item for piece in pieces for item in stream.feed(piece)] + stream.finish()
    content = "".join(item for item in out if isinstance(item, str))
    calls: dict[int, list[str]] = {}
    for item in out:
        if isinstance(item, ToolCallDelta):
            if item.id is not None:
                assert item.index not in calls and item.name
                calls[item.index] = [item.id, item.name, ""]
            calls[item.index][2] += item.arguments
    return content, [(i, n, a) for i, n, a in calls.values()], sum(isinstance(item, ToolCallDelta) for item in out)


def splits(text: str) -> list[list[str]]:
    """The text whole, a character at a time, and cut in two at every place."""
    return [[text], list(text)] + [[text[:at], text[at:]] for at in range(1, len(text))]


def test_tool_calls_stream_the_same_however_the_answer_is_split(kimi):
    results = {repr(streamed(kimi, pieces)[:2]) for pieces in splits(ANSWER)}
    assert results == {repr(("I'll look both up.", CALLS))}  # the section markers are not content


def test_arguments_stream_as_they_grow(kimi):
    _, calls, deltas = streamed(kimi, list(ANSWER))
    assert calls == CALLS and deltas > 10
    stream = kimi.tool_call_stream(model=model(), tools=TOOLS)
    at = ANSWER.index('"Zürich"}')
    early = [item for item in stream.feed(ANSWER[:at]) if isinstance(item, ToolCallDelta)]
    assert early[0].id == "functions.get_weather:3" and early[-1].arguments == '{"city":'  # trailing space held


def test_the_ids_round_trip_into_the_next_prompt(kimi):
    """The calls keep the ids the model wrote; sent back as the client's history, the prompt shows the model
    exactly the calls it wrote."""
    content, calls, _ = streamed(kimi, [ANSWER])
    history = [
        {"role": "user", "content": "Weather and events in Zürich?"},
        {"role": "assistant", "content": content, "tool_calls": [call(i, n, a) for i, n, a in calls]},
        {"role": "tool", "tool_call_id": calls[0][0], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1][0], "content": "a concert"},
    ]
    text = prompt(kimi, history).text
    assert "<|im_assistant|>assistant<|im_middle|><think></think>" + ANSWER + "<|im_end|>" in text
    assert (
        "## Return of functions.get_weather:3\nsunny" in text and "## Return of functions.search:4\na concert" in text
    )


def test_a_repeated_id_is_replaced(kimi):
    text = ANSWER.replace("functions.search:4", "functions.search:3").replace("get_weather:3", "search:3")
    text = text.replace('{"city": "Zürich"}', '{"query": "x"}')
    _, calls, _ = streamed(kimi, list(text))
    assert calls[0][0] == "functions.search:3" and calls[1][0].startswith("call_")
    parsed = kimi.parse_tool_calls(model=model(), text=text)
    assert parsed[0]["id"] == "functions.search:3" and parsed[1]["id"].startswith("call_")


def test_a_call_to_a_tool_not_offered_is_content(kimi):
    call_text = "<|tool_call_begin|>functions.rm:0<|tool_call_argument_begin|>{}<|tool_call_end|>"
    text = "Sure.<|tool_calls_section_begin|>" + call_text + "<|tool_calls_section_end|>"
    for pieces in ([text], list(text)):
        assert streamed(kimi, pieces) == ("Sure." + call_text, [], 0)


def test_a_call_without_the_end_markers(kimi):
    text = (
        'Ok<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>{"query": "a"}'
    )
    assert streamed(kimi, list(text))[:2] == ("Ok", [("functions.search:0", "search", '{"query": "a"}')])


def test_parse_tool_calls_gives_the_same_calls(kimi):
    parsed = kimi.parse_tool_calls(model=model(), text=ANSWER)
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in parsed] == CALLS
    assert all(c["type"] == "function" for c in parsed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris.",
        "<|tool_calls_section_begin|><|tool_calls_section_end|>",
        "<|tool_call_begin|>functions.f:0<|tool_call_end|>",  # no arguments marker
        "<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>not json<|tool_call_end|>",
        "<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>[1]<|tool_call_end|>",
        "<|tool_call_begin|>a b<|tool_call_argument_begin|>{}<|tool_call_end|>",
    ],
)
def test_no_tool_call(kimi, text):
    assert kimi.parse_tool_calls(model=model(), text=text) is None


def test_openers(kimi, pm):
    assert kimi.tool_call_openers(model=model()) == ["<|tool_calls_section_begin|>", "<|tool_call_begin|>"]
    assert kimi.tool_call_openers(model=model(family="deepseek")) is None
    assert kimi.tool_call_stream(model=model(family="deepseek"), tools=TOOLS) is None
    assert pm.tool_call_stream(model(), TOOLS) is not None


def test_a_long_argument_with_brackets_and_quotes_in_it(kimi):
    code = 'if a < b:\n    print("}{", r"\\"", [1, {"k": "]"}])\n' * 200
    arguments = json.dumps({"path": "a.py", "code": code})
    text = f"<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>{arguments}<|tool_call_end|><|tool_calls_section_end|>"
    whole = streamed(kimi, [text])
    assert whole[:2] == ("", [("functions.search:0", "search", arguments)])
    pieces = streamed(kimi, [text[i : i + 3] for i in range(0, len(text), 3)])
    assert pieces[:2] == whole[:2] and pieces[2] > 100


# --------------------------------------------------------------------------- through the application

AGENT_REPLY = [
    "<think>",
    "Weather",
    " needed.",
    "</think>",
    "Let me check.",
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "functions.get_weather:0",
    "<|tool_call_argument_begin|>",
    '{"city": ',
    '"Paris"}',
    "<|tool_call_end|>",
    "<|tool_calls_section_end|>",
]


@pytest.fixture(scope="module")
def server():
    from inprocess import InProcessServer, registry_of

    from ggufd.engine.fake import FakeEngine
    from ggufd.types import ModelInfo

    registry = registry_of(ModelInfo(model_spec("kimi-k2-thinking"), THINKING.meta, "kimi-k2"))
    with InProcessServer(FakeEngine(reply=lambda request: AGENT_REPLY), registry=registry) as server:
        yield server


def test_an_agent_chat_round_trips_kimis_call_ids(server):
    from http_helpers import chat, sse_events

    messages = [{"role": "user", "content": "Weather in Paris?"}]
    request = {"model": "kimi-k2-thinking", "messages": messages, "tools": [WEATHER]}
    message = json.loads(chat(server.url, request)[2])["choices"][0]["message"]
    assert server.engine.requests[-1].prompt.text.startswith("<|im_system|>tool_declare<|im_middle|>")
    assert message["content"] == "Let me check." and message["reasoning_content"] == "Weather needed."
    (call_,) = message["tool_calls"]
    assert call_["id"] == "functions.get_weather:0"
    assert call_["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    status, _, raw = chat(server.url, {**request, "stream": True})
    parts = [p for e in sse_events(raw)[:-1] if e["choices"] for p in e["choices"][0]["delta"].get("tool_calls", ())]
    assert parts[0]["id"] == "functions.get_weather:0" and len(parts) >= 3
    # the client sends the call back with its result: the model sees exactly what it wrote
    history = [
        *messages,
        {"role": "assistant", "content": message["content"], "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": call_["id"], "content": "sunny"},
    ]
    chat(server.url, {**request, "messages": history})
    text = server.engine.requests[-1].prompt.text
    written = "".join(AGENT_REPLY[4:])
    assert f"<|im_assistant|>assistant<|im_middle|><think></think>{written}<|im_end|>" in text
    assert text.endswith("## Return of functions.get_weather:0\nsunny<|im_end|><|im_assistant|>assistant<|im_middle|>")
