"""The glm plugin (ggufd/families/glm.py): golden prompts byte for byte, cross-checks against Z.ai's
published GLM-4.6 and GLM-4.5-Air templates with tools, tool calls and results, earlier reasoning and
thinking on and off (the plain chats are in test_family_contract.py), family detection, the reasoning
filter, and GLM's ``<arg_key>``/``<arg_value>`` tool calls, streamed and whole."""

from __future__ import annotations

import json

import gguf
import pytest
from family_kit import GLM, GLM45_AIR_TEMPLATE, GLM46_TEMPLATE, R1_TEMPLATE, TEXT_CHATS, hf_messages, published

from ggufd.config import load_config
from ggufd.errors import InvalidRequest
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec, render_template
from ggufd.types import ChatPrompt, ReasoningSyntax, ToolCallDelta

GLM46 = published("glm", "glm-4.6")
GLM45_AIR = published("glm", "glm-4.5-air")
PUBLISHED = [GLM46, GLM45_AIR]
metadata, model = GLM.metadata, GLM.model
SYSTEM_AND_USER = TEXT_CHATS["system-and-user"]
MULTI_TURN = TEXT_CHATS["multi-turn"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo d'une ville",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "units": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "filters": {"type": "object"}, "limit": {"type": "number"}},
        },
    },
}
TOOLS = [WEATHER, SEARCH]


def call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What's the weather in Paris and in Rome?"},
    {
        "role": "assistant",
        "content": "<think>Two cities: two calls.</think>\nLet me check.",
        "tool_calls": [
            call("call_0", "get_weather", '{"city": "Paris", "days": 2}'),
            call("call_1", "get_weather", '{"city": "Rome", "units": "metric"}'),
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 27}'},
]
AFTER_RESULTS = [
    *TOOL_CONVERSATION,
    {"role": "assistant", "content": "Rome is warmer (27 °C).", "reasoning_content": "27 > 22"},
    {"role": "user", "content": "And Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "One more city.",
        "tool_calls": [call("call_2", "search", '{"query": "Oslo weather", "filters": {"lang": ["no", "en"]}}')],
    },
    {"role": "tool", "tool_call_id": "call_2", "content": "5 °C, snow"},
]
CROSS_CHECK = {
    "tool-calls-and-results": TOOL_CONVERSATION,
    "after-results": AFTER_RESULTS,
    "reasoning-in-content-of-an-earlier-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nGreet back.\n</think>\n\nHello!"},
        {"role": "user", "content": "Bye /nothink"},
    ],
    "a-lone-tool-result": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "tool_calls": [call("x", "now", "{}")]},
        {"role": "tool", "tool_call_id": "x", "content": "12:00"},
        {"role": "assistant", "content": "It is noon."},
        {"role": "system", "content": "Late system note."},
        {"role": "user", "content": "Thanks"},
    ],
    **TEXT_CHATS,
}
KWARGS = {
    "default": {},
    "thinking-off": {"enable_thinking": False},
    "thinking-on": {"enable_thinking": True},
}


@pytest.fixture(scope="module")
def glm(pm):
    plugin = pm.manager.get_plugin("glm")
    assert plugin is not None and plugin.__name__ == "ggufd.families.glm"
    return plugin


def prompt(glm, messages, tools=(), template_kwargs=None, meta=None) -> ChatPrompt:
    return glm.format_chat(
        model=model(meta=meta), messages=messages, tools=list(tools), template_kwargs=template_kwargs or {}
    )


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(glm):
    assert prompt(glm, SYSTEM_AND_USER) == ChatPrompt(
        text=(
            "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nWhat is the capital of France?<|assistant|>"
        ),
        stop=("<|user|>", "<|observation|>"),
        add_bos=False,
        reasoning=ReasoningSyntax("<think>", "</think>", close="</think>\n"),
    )


def test_multi_turn_answers_get_an_empty_think_block(glm):
    assert prompt(glm, MULTI_TURN).text == (
        "[gMASK]<sop><|user|>\nHi<|assistant|>\n<think></think>\nHello! How can I help?"
        "<|user|>\nName a colour.<|assistant|>"
    )


def test_tools_are_declared_in_a_system_turn(glm):
    result = prompt(glm, SYSTEM_AND_USER, tools=[WEATHER])
    assert result.tools_rendered
    assert result.text == (
        "[gMASK]<sop><|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(WEATHER, ensure_ascii=False)
        + "\n</tools>\n\nFor each function call, output the function name and arguments within the following XML "
        "format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
        "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
        "<|system|>\nYou are a helpful assistant.<|user|>\nWhat is the capital of France?<|assistant|>"
    )
    assert not prompt(glm, SYSTEM_AND_USER).tools_rendered


def test_tool_calls_results_and_the_current_turns_reasoning(glm):
    assert prompt(glm, TOOL_CONVERSATION).text == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nWhat's the weather in Paris and in Rome?"
        "<|assistant|>\n<think>Two cities: two calls.</think>\nLet me check."
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>"
        "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Rome</arg_value>\n"
        "<arg_key>units</arg_key>\n<arg_value>metric</arg_value>\n</tool_call>"
        '<|observation|>\n<tool_response>\n{"temperature": 22}\n</tool_response>'
        '\n<tool_response>\n{"temperature": 27}\n</tool_response><|assistant|>'
    )


def test_earlier_turns_lose_their_reasoning(glm):
    text = prompt(glm, AFTER_RESULTS).text
    assert "<think>Two cities" not in text and "27 > 22" not in text  # before the last user message
    assert "<|assistant|>\n<think>One more city.</think>\n<tool_call>search\n" in text  # after it
    assert '<arg_value>{"lang": ["no", "en"]}</arg_value>' in text  # non-string values as JSON


def test_thinking_off_appends_nothink_and_closes_the_reasoning(glm):
    result = prompt(glm, MULTI_TURN, template_kwargs={"enable_thinking": False})
    assert result.text == (
        "[gMASK]<sop><|user|>\nHi/nothink<|assistant|>\n<think></think>\nHello! How can I help?"
        "<|user|>\nName a colour./nothink<|assistant|>\n<think></think>"
    )
    assert result.reasoning is None and result.honoured == frozenset({"enable_thinking"})
    # a user message that already ends with /nothink keeps just one
    assert prompt(
        glm, [{"role": "user", "content": "Hi /nothink"}], template_kwargs={"enable_thinking": False}
    ).text == ("[gMASK]<sop><|user|>\nHi /nothink<|assistant|>\n<think></think>")


def test_thinking_on_is_the_default_prompt(glm):
    on = prompt(glm, MULTI_TURN, template_kwargs={"enable_thinking": True})
    default = prompt(glm, MULTI_TURN)
    assert on.text == default.text and on.reasoning == default.reasoning is not None
    assert on.honoured == frozenset({"enable_thinking"}) and default.honoured == frozenset()


@pytest.mark.parametrize(
    "effort,thinks", [("none", False), ("minimal", False), ("low", True), ("medium", True), ("high", True)]
)
def test_reasoning_effort_switches_thinking(glm, effort, thinks):
    result = prompt(glm, MULTI_TURN, template_kwargs={"reasoning_effort": effort})
    expected = prompt(glm, MULTI_TURN, template_kwargs={"enable_thinking": thinks})
    assert result.text == expected.text and result.reasoning == expected.reasoning
    assert result.honoured == frozenset({"reasoning_effort"})


def test_enable_thinking_wins_over_reasoning_effort(glm):
    result = prompt(glm, MULTI_TURN, template_kwargs={"enable_thinking": True, "reasoning_effort": "none"})
    assert result.reasoning is not None and "/nothink" not in result.text
    assert result.honoured == frozenset({"enable_thinking"})  # reasoning_effort is reported as ignored
    assert prompt(glm, MULTI_TURN, template_kwargs={"other": 1}).honoured == frozenset()


def test_arguments_that_are_not_an_object_are_refused(glm):
    for arguments in ('["Paris"]', '"Paris"', "not json", "42"):
        messages = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "", "tool_calls": [call("a", "f", arguments)]},
        ]
        with pytest.raises(InvalidRequest):
            prompt(glm, messages)
    empty = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "tool_calls": [call("a", "f", "")]},
    ]
    assert prompt(glm, empty).text.endswith("<think></think>\n<tool_call>f\n</tool_call><|assistant|>")


def test_gmask_is_in_the_text_unless_the_tokenizer_adds_it(glm):
    # llama.cpp adds no BOS to GLM vocabularies: without the key the prompt keeps [gMASK]
    for add_bos in (False, None):
        result = prompt(glm, MULTI_TURN, meta=metadata(add_bos=add_bos))
        assert result.add_bos is False and result.text.startswith("[gMASK]<sop><|user|>")
    result = prompt(glm, MULTI_TURN, meta=metadata(add_bos=True))
    assert result.add_bos is True and result.text.startswith("<sop><|user|>")
    reference = render_template(GLM46_TEMPLATE, MULTI_TURN, metadata(add_bos=True))
    assert (result.text, result.add_bos) == (reference.text, reference.add_bos)


# --------------------------------------------------------------------------- the published templates


@pytest.mark.parametrize("kwargs", list(KWARGS.values()), ids=list(KWARGS))
@pytest.mark.parametrize("tools", [[], [WEATHER], TOOLS], ids=["no-tools", "one-tool", "two-tools"])
@pytest.mark.parametrize("messages", list(CROSS_CHECK.values()), ids=list(CROSS_CHECK))
@pytest.mark.parametrize("source", PUBLISHED, ids=lambda p: p.variant)
def test_plugin_matches_the_published_templates(glm, source, messages, tools, kwargs):
    result = glm.format_chat(model=source.model(), messages=messages, tools=tools, template_kwargs=kwargs)
    reference = render_template(source.source, hf_messages(messages), source.meta, tools=tools or None, **kwargs)
    assert result.text == reference.text
    assert result.add_bos == reference.add_bos


@pytest.mark.parametrize("effort", ["none", "high"])
def test_reasoning_effort_matches_the_template_with_enable_thinking(glm, effort):
    result = prompt(glm, AFTER_RESULTS, tools=TOOLS, template_kwargs={"reasoning_effort": effort})
    reference = render_template(
        GLM46_TEMPLATE, hf_messages(AFTER_RESULTS), GLM46.meta, tools=TOOLS, enable_thinking=effort != "none"
    )
    assert result.text == reference.text


def test_through_the_plugin_manager(pm):
    result = pm.format_chat(model(), TOOL_CONVERSATION, TOOLS, {"enable_thinking": False, "foo": "bar"})
    assert (
        result.text
        == render_template(
            GLM46_TEMPLATE, hf_messages(TOOL_CONVERSATION), GLM46.meta, tools=TOOLS, enable_thinking=False
        ).text
    )
    assert result.tools_rendered and result.honoured == frozenset({"enable_thinking"})


# --------------------------------------------------------------------------- detection

# GLM-4.7's template (zai-org/GLM-4.7), shortened to what marks its format: arguments without
# newlines, '</think>' for earlier answers, clear_thinking, a generation prompt that opens <think>
GLM47_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}{%- if m.role == 'user' -%}<|user|>{{ m.content }}"
    "{%- elif m.role == 'assistant' -%}<|assistant|>"
    "{%- if ((clear_thinking is defined and not clear_thinking) or loop.index0 > ns.last_user_index) -%}"
    "{{ '<think>' + m.reasoning_content + '</think>' }}{%- else -%}{{ '</think>' }}{%- endif -%}"
    "{{- '<tool_call>' + tc.name -}}<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value></tool_call>"
    "{%- elif m.role == 'tool' -%}<|observation|>{%- endif -%}{%- endfor -%}<|assistant|><think>"
)
# GLM-4-9B-0414 / GLM-Z1 (the "glm4" architecture): [gMASK]<sop> and <|user|>, JSON tool calls
GLM4_0414_TEMPLATE = (
    "[gMASK]<sop>{%- for msg in messages %}{%- if msg.role == 'system' %}<|system|>\n{{ msg.content }}"
    "{%- elif msg.role == 'user' %}<|user|>\n{{ msg.content }}{%- elif msg.role == 'assistant' %}<|assistant|>\n"
    "{{ msg.content }}{%- elif msg.role == 'observation' %}<|observation|>\n{{ msg.content }}{%- endif %}"
    "{%- endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# GLM-4.5V: the GLM-4.5 format with image and video tokens (and another generation prompt)
GLM45V_TEMPLATE = GLM46_TEMPLATE.replace(
    "{%- elif item is string -%}",
    "{%- elif item is mapping and (item.type == 'image' or 'image' in item) -%}"
    "<|begin_of_image|><|image|><|end_of_image|>{%- elif item is string -%}",
)


def test_detect_family_positive(glm):
    spec = model_spec()
    for template in (GLM46_TEMPLATE, GLM45_AIR_TEMPLATE):
        for architecture in ("glm4moe", "glm4", None):  # the template decides
            assert glm.detect_family(metadata=metadata(template, architecture=architecture), spec=spec) == "glm"
        # with Windows line ends, as some converters store it
        assert glm.detect_family(metadata=metadata(template.replace("\n", "\r\n")), spec=spec) == "glm"
    # a glm4moe GGUF without a template
    assert glm.detect_family(metadata=metadata(None, name=None), spec=spec) == "glm"


def test_detect_family_negative(glm):
    spec = model_spec()
    for template, architecture in (
        (GLM47_TEMPLATE, "glm4moe"),
        (GLM4_0414_TEMPLATE, "glm4"),
        (GLM45V_TEMPLATE, "glm4v_moe"),
        (R1_TEMPLATE, "glm4moe"),  # the template decides, even on GLM's architecture
        (None, "chatglm"),
        (None, "glm4"),
        (None, "deepseek2"),
        (None, None),
    ):
        assert glm.detect_family(metadata=metadata(template, architecture=architecture), spec=spec) is None, (
            architecture,
            template and template[:40],
        )


def test_detection_through_the_plugin_manager(pm):
    spec = model_spec()
    assert pm.detect_family(metadata(GLM46_TEMPLATE), spec) == "glm"
    assert pm.detect_family(metadata(GLM47_TEMPLATE), spec) == "gguf-template"  # its own template renders it
    assert pm.detect_family(metadata(GLM4_0414_TEMPLATE, architecture="glm4"), spec) == "gguf-template"
    assert pm.detect_family(metadata(R1_TEMPLATE, architecture="deepseek2"), spec) == "deepseek"


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


def test_a_glm_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(
        folder / "GLM-4.5-Air-Q4_K_M.gguf",
        "glm4moe",
        **{"general.name": "GLM 4.5 Air", "tokenizer.chat_template": GLM45_AIR_TEMPLATE},
    )
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    info = build_registry(config, pm).get("GLM-4.5-Air-Q4_K_M")
    assert info.family == "glm"
    for messages in CROSS_CHECK.values():
        result = pm.format_chat(info, messages, TOOLS, {"enable_thinking": False})
        reference = render_template(
            GLM45_AIR_TEMPLATE, hf_messages(messages), GLM.metadata(), tools=TOOLS, enable_thinking=False
        )
        assert result.text == reference.text and result.add_bos is False  # no BOS key: llama.cpp adds none


# --------------------------------------------------------------------------- stops and reasoning


def test_stop_sequences(glm):
    assert glm.stop_sequences(model=model()) == ["<|user|>", "<|observation|>", "<|endoftext|>"]
    assert glm.stop_sequences(model=model(family="chatml")) is None


def filtered(glm, text: str, size: int | None = None, template_kwargs=None) -> tuple[str, str]:
    """The (content, reasoning) of ``text`` through the filter for the request's prompt."""
    answer = glm.answer_filter(model=model(), prompt=prompt(glm, MULTI_TURN, template_kwargs=template_kwargs))
    pieces = [text] if size is None else [text[i : i + size] for i in range(0, len(text), size)]
    content, reasoning = zip(*[answer.feed(piece) for piece in pieces], answer.finish(), strict=False)
    return "".join(content), "".join(reasoning)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "\n<think>The user asks for the capital.\nIt is Paris.</think>\nParis.",
            ("Paris.", "The user asks for the capital.\nIt is Paris."),
        ),
        ("<think>Short.</think>\nParis is the capital of France.", ("Paris is the capital of France.", "Short.")),
        ("\nParis.", ("Paris.", "")),
        ("\n<think></think>\nParis.", ("Paris.", "")),
        ("\n<think>Cut short by max_tokens", ("", "Cut short by max_tokens")),
        (
            "\n<think>Need the weather.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
            "<arg_value>Paris</arg_value>\n</tool_call>",
            (
                "Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
                "Need the weather.",
            ),
        ),
    ],
    ids=["reasoning", "no-newline", "no-reasoning", "empty-reasoning", "unfinished", "then-a-call"],
)
def test_the_answer_filter_splits_the_reasoning_off(glm, text, expected):
    for size in (None, 1, 2, 5):
        assert filtered(glm, text, size) == expected, size


def test_with_thinking_off_the_answer_is_content(glm):
    """The prompt closed the reasoning (<think></think>): the model answers after a newline."""
    off = {"enable_thinking": False}
    for size in (None, 1, 3):
        assert filtered(glm, "\nParis is the capital of France.", size, off) == ("Paris is the capital of France.", "")
        assert filtered(glm, "\n<think>x</think>", size, off) == ("<think>x</think>", "")


def test_answer_filter_only_for_glm(glm, pm):
    assert glm.answer_filter(model=model(family="deepseek"), prompt=prompt(glm, MULTI_TURN)) is None
    assert isinstance(pm.answer_filter(model(), prompt(glm, MULTI_TURN)), glm.GlmAnswer)


# --------------------------------------------------------------------------- tool calls

ANSWER = (
    "Let me look both up.\n"
    "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Zürich</arg_value>\n"
    "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>units</arg_key>\n<arg_value>42</arg_value>\n</tool_call>\n"
    "<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>Zürich </arg_value>\n"
    '<arg_key>filters</arg_key>\n<arg_value>{"lang": ["de", "en"], "safe": true}</arg_value>\n'
    "<arg_key>limit</arg_key>\n<arg_value>2.5</arg_value>\n</tool_call>"
)
CALLS = [
    ("get_weather", '{"city": "Zürich", "days": 3, "units": "42"}'),
    ("search", '{"query": "Zürich ", "filters": {"lang": ["de", "en"], "safe": true}, "limit": 2.5}'),
]


def streamed(glm, text: str, pieces: list[str], tools=TOOLS) -> tuple[str, list[tuple[str, str]], int]:
    """(content, [(name, arguments)], deltas) from a tool-call stream fed ``pieces``."""
    stream = glm.tool_call_stream(model=model(), tools=tools)
    out = [item for piece in pieces for item in stream.feed(piece)] + stream.finish()
    content = "".join(item for item in out if isinstance(item, str))
    calls: dict[int, list[str]] = {}
    for item in out:
        if isinstance(item, ToolCallDelta):
            if item.id is not None:
                assert item.index not in calls and item.name and item.id.startswith("call_")
                calls[item.index] = [item.name, ""]
            calls[item.index][1] += item.arguments
    return (
        content,
        [(name, arguments) for name, arguments in calls.values()],
        sum(isinstance(item, ToolCallDelta) for item in out),
    )


def splits(text: str) -> list[list[str]]:
    """The text whole, a character at a time, and cut in two at every place."""
    return [[text], list(text)] + [[text[:at], text[at:]] for at in range(1, len(text))]


def test_tool_calls_stream_the_same_however_the_answer_is_split(glm):
    results = {repr(streamed(glm, ANSWER, pieces)[:2]) for pieces in splits(ANSWER)}
    assert results == {repr(("Let me look both up.", CALLS))}  # the newlines around the calls are dropped


def test_arguments_arrive_one_by_one(glm):
    stream = glm.tool_call_stream(model=model(), tools=TOOLS)
    out = [item for char in ANSWER for item in stream.feed(char)] + stream.finish()
    deltas = [item for item in out if isinstance(item, ToolCallDelta)]
    assert [d.arguments for d in deltas if d.index == 0] == [
        "",
        '{"city": "Zürich"',
        ', "days": 3',
        ', "units": "42"',
        "}",
    ]
    assert [d.arguments for d in deltas if d.index == 1][1:] == [
        '{"query": "Zürich "',
        ', "filters": {"lang": ["de", "en"], "safe": true}',
        ', "limit": 2.5',
        "}",
    ]
    # the header goes out once the name's line is complete, before any argument
    at = ANSWER.index("get_weather\n") + len("get_weather\n")
    early = glm.tool_call_stream(model=model(), tools=TOOLS)
    assert [d for d in early.feed(ANSWER[:at]) if isinstance(d, ToolCallDelta)][0].name == "get_weather"


def test_values_follow_the_schema(glm):
    text = (
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>null</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value> 7 </arg_value>\n<arg_key>extra</arg_key>\n<arg_value>True</arg_value>\n"
        "<arg_key>note</arg_key>\n<arg_value>not json</arg_value>\n<arg_key>nan</arg_key>\n<arg_value>NaN</arg_value>\n"
        "</tool_call>"
    )
    _, calls, _ = streamed(glm, text, [text])
    # strings stay strings; others are JSON, or a Python literal, or the text; never a NaN
    assert json.loads(calls[0][1]) == {"city": "null", "days": 7, "extra": True, "note": "not json", "nan": "NaN"}


def test_a_call_to_a_tool_not_offered_is_content(glm):
    text = "Sure.\n<tool_call>delete_everything\n<arg_key>really</arg_key>\n<arg_value>yes</arg_value>\n</tool_call>"
    for pieces in ([text], list(text)):
        assert streamed(glm, text, pieces) == (text, [], 0)
    # nor is a Hermes-style JSON body, nor an empty block
    for text in ('<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>', "<tool_call></tool_call>"):
        assert streamed(glm, text, list(text)) == (text, [], 0)


def test_a_call_without_arguments_and_an_unclosed_call(glm):
    tools = [{"type": "function", "function": {"name": "now", "parameters": {}}}]
    assert streamed(glm, "", ["<tool_call>now\n</tool_call>"], tools)[1] == [("now", "{}")]
    assert streamed(glm, "", ["<tool_call>now</tool_call>"], tools)[1] == [("now", "{}")]
    unclosed = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
    assert streamed(glm, unclosed, list(unclosed))[1] == [("get_weather", '{"city": "Paris"}')]


def test_parse_tool_calls_gives_the_same_calls(glm):
    parsed = glm.parse_tool_calls(model=model(), text=ANSWER)
    # without the schemas every value that parses is parsed: "42" for the string "units" becomes 42
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] == [
        ("get_weather", {"city": "Zürich", "days": 3, "units": 42}),
        ("search", {"query": "Zürich", "filters": {"lang": ["de", "en"], "safe": True}, "limit": 2.5}),
    ]
    unambiguous = ANSWER.replace("<arg_value>42</arg_value>", "<arg_value>metric</arg_value>").replace(
        "Zürich <", "Zürich<"
    )
    assert [
        (c["function"]["name"], c["function"]["arguments"])
        for c in glm.parse_tool_calls(model=model(), text=unambiguous)
    ] == (streamed(glm, unambiguous, [unambiguous])[1])
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in parsed)
    assert len({c["id"] for c in parsed}) == 2


def test_what_the_plugin_renders_it_parses_back(glm):
    text = prompt(glm, TOOL_CONVERSATION).text
    turn = text.split("<|assistant|>")[1].split("<|observation|>")[0]
    parsed = glm.parse_tool_calls(model=model(), text=turn)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in TOOL_CONVERSATION[2]["tool_calls"]
    ]


@pytest.mark.parametrize(
    "text",
    ["", "Paris.", "<tool_call>", "<tool_call>\n</tool_call>", '<tool_call>{"name": "f", "arguments": {}}</tool_call>'],
)
def test_no_tool_call(glm, text):
    assert glm.parse_tool_calls(model=model(), text=text) is None


def test_openers(glm, pm):
    assert glm.tool_call_openers(model=model()) == ["<tool_call>"]
    assert glm.tool_call_openers(model=model(family="chatml")) is None
    assert glm.tool_call_stream(model=model(family="chatml"), tools=TOOLS) is None
    assert pm.tool_call_stream(model(), TOOLS) is not None


def test_a_long_argument_with_markup_in_it(glm):
    code = "if a < b and b > c:\n    print('<arg_value>?', {\"k\": [1, 2]})\n" * 200
    tools = [
        {"type": "function", "function": {"name": "write", "parameters": {"properties": {"code": {"type": "string"}}}}}
    ]
    text = f"<tool_call>write\n<arg_key>path</arg_key>\n<arg_value>a.py</arg_value>\n<arg_key>code</arg_key>\n<arg_value>{code}</arg_value>\n</tool_call>"
    whole = streamed(glm, text, [text], tools)
    assert whole[1] == [("write", json.dumps({"path": "a.py", "code": code}, ensure_ascii=False))]
    content, calls, deltas = streamed(glm, text, [text[i : i + 3] for i in range(0, len(text), 3)], tools)
    assert (content, calls) == whole[:2] and deltas >= 3  # MarkedCalls re-parses a growing call every 1/32


# --------------------------------------------------------------------------- through the application


def _agent_reply(request) -> list[str]:
    """What a GLM model writes: its reasoning, a sentence, then a call when tools were declared."""
    if "# Tools" not in request.prompt.text:
        return ["\n", "Paris", "."]
    return [
        "\n<think>",
        "The user wants",
        " the weather.",
        "</think>",
        "\nLet me",
        " check.",
        "\n<tool_call>",
        "get_weather\n",
        "<arg_key>city</arg_key>\n",
        "<arg_value>Par",
        "is</arg_value>\n",
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n",
        "</tool_call>",
    ]


@pytest.fixture(scope="module")
def server():
    from inprocess import InProcessServer, registry_of

    from ggufd.engine.fake import FakeEngine
    from ggufd.types import ModelInfo

    registry = registry_of(ModelInfo(model_spec("glm-4.6"), GLM.metadata(), "glm"))
    with InProcessServer(FakeEngine(reply=_agent_reply), registry=registry) as server:
        yield server


def test_an_agent_chat_through_the_application(server):
    from http_helpers import chat, sse_events

    request = {"model": "glm-4.6", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}
    message = json.loads(chat(server.url, request)[2])["choices"][0]["message"]
    prompt_text = server.engine.requests[-1].prompt.text
    assert (
        prompt_text.startswith("[gMASK]<sop><|system|>\n# Tools") and "You can call these functions" not in prompt_text
    )
    assert message["content"] == "Let me check." and message["reasoning_content"] == "The user wants the weather."
    (call_,) = message["tool_calls"]
    assert call_["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}
    # streamed: the same, the arguments in pieces
    status, _, raw = chat(server.url, {**request, "stream": True})
    events = [e for e in sse_events(raw)[:-1] if e["choices"]]
    parts = [p for e in events for p in e["choices"][0]["delta"].get("tool_calls", ())]
    assert "".join(p["function"].get("arguments", "") for p in parts) == call_["function"]["arguments"]
    assert len(parts) >= 4 and parts[0]["function"]["name"] == "get_weather"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "Let me check."
    # thinking off: /nothink in the prompt, the answer without its leading newline
    request = {"model": "glm-4.6", "messages": [{"role": "user", "content": "Capital?"}]}
    status, headers, raw = chat(server.url, {**request, "chat_template_kwargs": {"enable_thinking": False}})
    assert status == 200 and "x-ggufd-ignored" not in headers
    assert server.engine.requests[-1].prompt.text.endswith("<|user|>\nCapital?/nothink<|assistant|>\n<think></think>")
    assert json.loads(raw)["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
