"""The qwen3 family plugin (ggufd/families/qwen3.py): golden prompts, a cross-check against Qwen's
published Qwen3 and Qwen3-2507-Thinking templates with tools offered, tool calls and results in the
history and enable_thinking either way (the plain chats are in test_family_contract.py), the
thinking switch (enable_thinking, reasoning_effort), detection beside chatml and qwen3-coder, the
reasoning filter on realistic answers, and Hermes-style tool calls streamed and parsed."""

from __future__ import annotations

import json

import gguf
import pytest
from family_kit import (
    QWEN3,
    QWEN3_CODER_TEMPLATE,
    QWEN3_TEMPLATE,
    QWEN3_THINKING_TEMPLATE,
    QWEN25_TEMPLATE,
    QWEN35_TEMPLATE,
    R1_TEMPLATE,
    TEXT_CHATS,
    hf_messages,
    published,
)

import ggufd
from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec, render_template
from ggufd.types import ChatPrompt, ReasoningSyntax

HYBRID = published("qwen3", "qwen3")
THINKING = published("qwen3", "thinking-2507")
# Qwen3-2507-Instruct: the 2507 template with a plain generation prompt (derived here, not stored)
INSTRUCT_TEMPLATE = QWEN3_THINKING_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\\n<think>\\n' }}", "{{- '<|im_start|>assistant\\n' }}"
)
metadata, model = QWEN3.metadata, QWEN3.model
INSTRUCT = model(meta=metadata(INSTRUCT_TEMPLATE, name="Qwen3 30B A3B Instruct 2507", architecture="qwen3moe"))
SYNTAX = ReasoningSyntax("<think>", "</think>")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "The time.", "parameters": {"type": "object"}}}
TOOLS = [WEATHER, NOW]
CALLS = [
    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Zürich", "days": 2}'},
    },
]
TOOL_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What's the weather in Paris and in Zürich?"},
    {"role": "assistant", "content": "<think>\nTwo cities, two calls.\n</think>\n\n", "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 17}'},
]
TOOL_CHATS = {
    "calls-and-results": TOOL_CONVERSATION,
    "without-system": TOOL_CONVERSATION[1:],
    "answered": [
        *TOOL_CONVERSATION,
        {"role": "assistant", "content": "<think>\nParis is warmer.\n</think>\n\nParis is warmer."},
        {"role": "user", "content": "Thanks. And now?"},
    ],
    "answer-last": [*TOOL_CONVERSATION, {"role": "assistant", "content": "<think>\nok\n</think>\n\nParis."}],
    "text-before-a-call": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [CALLS[0]]},
        {"role": "tool", "tool_call_id": "call_0", "content": "12:00"},
        {"role": "system", "content": "Late system note."},
        {"role": "user", "content": "<tool_response>\nnot a real one\n</tool_response>"},
    ],
    "reasoning-then-query": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello!"},
        {"role": "user", "content": "Name a colour."},
    ],
}


@pytest.fixture(scope="module")
def qwen3(pm):
    plugin = pm.manager.get_plugin("qwen3")
    assert plugin is not None and plugin.__name__ == "ggufd.families.qwen3"
    return plugin


def chat(plugin, info, messages, tools=(), **template_kwargs) -> ChatPrompt:
    return plugin.format_chat(model=info, messages=messages, tools=list(tools), template_kwargs=template_kwargs)


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


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(qwen3):
    prompt = chat(qwen3, model(), TEXT_CHATS["system-and-user"])
    assert prompt == ChatPrompt(
        text=(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
        stop=("<|im_end|>",),
        add_bos=False,
        reasoning=SYNTAX,
    )


def test_earlier_reasoning_is_dropped(qwen3):
    prompt = chat(qwen3, model(), TOOL_CHATS["reasoning-then-query"])
    assert prompt.text == (
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_thinking_off_gives_the_empty_think_block(qwen3):
    prompt = chat(qwen3, model(), TEXT_CHATS["one-user-message"], enable_thinking=False)
    assert prompt.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert prompt.reasoning is None and prompt.honoured == {"enable_thinking"}


def test_tools_calls_and_results(qwen3):
    prompt = chat(qwen3, model(), TOOL_CONVERSATION, [NOW])
    assert prompt.tools_rendered
    assert prompt.text == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
        "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(NOW)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWhat's the weather in Paris and in Zürich?<|im_end|>\n"
        # the answer after the last query keeps its reasoning; the calls follow it
        "<|im_start|>assistant\n<think>\nTwo cities, two calls.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n"
        '{"temperature": 22}\n</tool_response>\n<tool_response>\n{"temperature": 17}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


def test_thinking_2507_opens_the_reasoning(qwen3):
    prompt = chat(qwen3, THINKING.model(), TEXT_CHATS["one-user-message"], enable_thinking=False)
    assert prompt.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert prompt.reasoning == ReasoningSyntax("<think>", "</think>", opened=True)
    assert prompt.honoured == frozenset()  # a Thinking model has no switch


def test_add_bos_follows_the_gguf(qwen3):
    assert chat(qwen3, model(meta=metadata(add_bos=True)), TEXT_CHATS["multi-turn"]).add_bos is True
    assert chat(qwen3, model(meta=metadata(add_bos=None)), TEXT_CHATS["multi-turn"]).add_bos is False


# --------------------------------------------------------------------------- Qwen's templates


CROSS_CHECK_VARIANTS = {"hybrid": HYBRID, "thinking-2507": THINKING}


@pytest.mark.parametrize("variant", list(CROSS_CHECK_VARIANTS))
@pytest.mark.parametrize("tools", [[], TOOLS], ids=["no-tools", "tools"])
@pytest.mark.parametrize("switch", [None, True, False], ids=["default", "thinking-on", "thinking-off"])
@pytest.mark.parametrize("messages", [*TOOL_CHATS.values(), *TEXT_CHATS.values()], ids=[*TOOL_CHATS, *TEXT_CHATS])
def test_plugin_matches_qwens_template(qwen3, variant, tools, switch, messages):
    reference = CROSS_CHECK_VARIANTS[variant]
    kwargs = {} if switch is None else {"enable_thinking": switch}
    prompt = chat(qwen3, reference.model(), messages, tools, **kwargs)
    assert prompt.text == reference.reference(messages, tools=tools or None, **kwargs).text
    assert prompt.tools_rendered == bool(tools)


def test_instruct_2507_matches_its_template(qwen3):
    for messages in [*TOOL_CHATS.values(), *TEXT_CHATS.values()]:
        prompt = chat(qwen3, INSTRUCT, messages, TOOLS)
        assert (
            prompt.text
            == render_template(INSTRUCT_TEMPLATE, hf_messages(messages), INSTRUCT.metadata, tools=TOOLS).text
        )


# --------------------------------------------------------------------------- thinking


@pytest.mark.parametrize(
    "kwargs,thinks,honoured",
    [
        ({}, True, set()),
        ({"enable_thinking": True}, True, {"enable_thinking"}),
        ({"enable_thinking": False}, False, {"enable_thinking"}),
        ({"enable_thinking": "false"}, True, {"enable_thinking"}),  # as the template: only false turns it off
        ({"reasoning_effort": "none"}, False, {"reasoning_effort"}),
        ({"reasoning_effort": "minimal"}, False, {"reasoning_effort"}),
        ({"reasoning_effort": "low"}, True, {"reasoning_effort"}),
        ({"reasoning_effort": "medium"}, True, {"reasoning_effort"}),
        ({"reasoning_effort": "high"}, True, {"reasoning_effort"}),
        ({"reasoning_effort": "extreme"}, True, set()),  # not a known effort: ignored
        ({"enable_thinking": False, "reasoning_effort": "high"}, True, {"enable_thinking", "reasoning_effort"}),
        ({"enable_thinking": True, "reasoning_effort": "none"}, False, {"enable_thinking", "reasoning_effort"}),
        ({"enable_thinking": False, "temperature_hint": 1}, False, {"enable_thinking"}),
    ],
)
def test_the_hybrid_models_thinking_switch(qwen3, kwargs, thinks, honoured):
    for info in (model(), HYBRID.model()):  # no template (a bare qwen3 GGUF) and Qwen's template
        prompt = chat(qwen3, info, TEXT_CHATS["one-user-message"], **kwargs)
        assert prompt.honoured == honoured
        assert prompt.reasoning == (SYNTAX if thinks else None)
        assert prompt.text.endswith("<|im_start|>assistant\n" + ("" if thinks else "<think>\n\n</think>\n\n"))


@pytest.mark.parametrize(
    "kwargs", [{"enable_thinking": False}, {"reasoning_effort": "none"}, {"reasoning_effort": "high"}]
)
def test_thinking_and_instruct_models_have_no_switch(qwen3, kwargs):
    thinking = chat(qwen3, THINKING.model(), TEXT_CHATS["one-user-message"], **kwargs)
    assert thinking.honoured == frozenset() and thinking.reasoning.opened
    assert thinking.text.endswith("<|im_start|>assistant\n<think>\n")
    instruct = chat(qwen3, INSTRUCT, TEXT_CHATS["one-user-message"], **kwargs)
    assert instruct.honoured == frozenset() and instruct.reasoning is None
    assert instruct.text.endswith("<|im_start|>assistant\n")


def test_answer_filter_follows_the_prompt(qwen3):
    thinking = chat(qwen3, model(), TEXT_CHATS["one-user-message"])
    assert isinstance(qwen3.answer_filter(model=model(), prompt=thinking), ggufd.ReasoningFilter)
    off = chat(qwen3, model(), TEXT_CHATS["one-user-message"], enable_thinking=False)
    assert qwen3.answer_filter(model=model(), prompt=off) is None
    assert qwen3.answer_filter(model=INSTRUCT, prompt=chat(qwen3, INSTRUCT, TEXT_CHATS["one-user-message"])) is None


def split_all_ways(text: str):
    """The text whole, one character at a time, and in two at every position."""
    yield [text]
    yield list(text)
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]


def filtered(answer_filter, pieces) -> tuple[str, str]:
    content, reasoning = [], []
    for piece in pieces:
        c, r = answer_filter.feed(piece)
        content.append(c)
        reasoning.append(r)
    c, r = answer_filter.finish()
    return "".join(content + [c]), "".join(reasoning + [r])


@pytest.mark.parametrize(
    "info,answer,expected",
    [
        (
            model(),
            "<think>\nThe user asks for the capital of France. That is Paris.\n</think>\n\nThe capital is **Paris**.",
            ("The capital is **Paris**.", "The user asks for the capital of France. That is Paris."),
        ),
        (
            THINKING.model(),  # the prompt opened <think>: the answer starts inside it
            "Okay, the user asks for France's capital.\nIt is Paris.\n</think>\n\nParis.",
            ("Paris.", "Okay, the user asks for France's capital.\nIt is Paris."),
        ),
        (model(), "Paris, without thinking.", ("Paris, without thinking.", "")),
        (model(), "<think>\n\n</think>\n\nParis.", ("Paris.", "")),
        (model(), "<think>\nStill thinking when the tokens ran out", ("", "Still thinking when the tokens ran out")),
    ],
    ids=["hybrid", "thinking-2507", "no-reasoning", "empty-reasoning", "cut-short"],
)
def test_reasoning_is_split_off_realistic_answers(qwen3, info, answer, expected):
    prompt = chat(qwen3, info, TEXT_CHATS["system-and-user"])
    for pieces in split_all_ways(answer):
        assert filtered(qwen3.answer_filter(model=info, prompt=prompt), pieces) == expected


# --------------------------------------------------------------------------- detection


def detect(plugin, meta, spec=None):
    return plugin.detect_family(metadata=meta, spec=spec or model_spec())


def test_detect_family(qwen3):
    for architecture in ("qwen3", "qwen3moe", "qwen3next"):
        for template in (None, QWEN3_TEMPLATE, QWEN3_THINKING_TEMPLATE, INSTRUCT_TEMPLATE):
            assert detect(qwen3, metadata(template, architecture=architecture)) == "qwen3", (architecture, template)
    # Qwen3's template on another architecture (a fine-tune)
    assert detect(qwen3, metadata(QWEN3_TEMPLATE, architecture="llama", name="Qwen3 Finetune")) == "qwen3"
    # not Qwen3's: Qwen 2/2.5 (chatml), Qwen's XML tool calls (qwen3-coder), DeepSeek's format on qwen3
    # (DeepSeek-R1-0528-Qwen3-8B), other thinking ChatML templates, other architectures
    for meta in (
        metadata(QWEN25_TEMPLATE, architecture="qwen2", name="Qwen2.5 7B Instruct"),
        metadata(None, architecture="qwen2", name="Qwen2.5 7B Instruct"),
        metadata(QWEN3_CODER_TEMPLATE, architecture="qwen3moe", name="Qwen3 Coder 30B A3B Instruct"),
        metadata(QWEN35_TEMPLATE, architecture="qwen35"),
        metadata(None, architecture="qwen35moe"),
        metadata(None, architecture="qwen3moe", name="Qwen3 Coder 480B A35B Instruct"),
        metadata(R1_TEMPLATE, architecture="qwen3", name="DeepSeek R1 0528 Qwen3 8B"),
        metadata("{{ '<|im_start|>' }}{% if enable_thinking %}<think>{% endif %}<tool_call>", architecture="llama"),
        metadata(None, architecture="llama", name="Qwen3 8B"),
    ):
        assert detect(qwen3, meta) is None, (meta.architecture, meta.name)
    assert (
        detect(qwen3, metadata(None, architecture="qwen3moe"), model_spec("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M"))
        is None
    )


@pytest.mark.parametrize(
    "file_name,architecture,template,family",
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M", "qwen2", QWEN25_TEMPLATE, "chatml"),
        ("Qwen3-8B-Q4_K_M", "qwen3", QWEN3_TEMPLATE, "qwen3"),
        ("Qwen3-30B-A3B-Thinking-2507-Q4_K_M", "qwen3moe", QWEN3_THINKING_TEMPLATE, "qwen3"),
        ("Qwen3-30B-A3B-Instruct-2507-Q4_K_M", "qwen3moe", INSTRUCT_TEMPLATE, "qwen3"),
        ("Qwen3-8B-bare", "qwen3", None, "qwen3"),
        ("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M", "qwen3moe", QWEN3_CODER_TEMPLATE, "qwen3-coder"),
        ("Qwen3.5-4B-Q4_K_M", "qwen35", QWEN35_TEMPLATE, "qwen3-coder"),
        ("DeepSeek-R1-0528-Qwen3-8B-Q4_K_M", "qwen3", R1_TEMPLATE, "deepseek"),
    ],
)
def test_real_ggufs_get_their_family(tmp_path, file_name, architecture, template, family):
    folder = tmp_path / "models"
    folder.mkdir()
    values = {"general.name": file_name.replace("-", " "), "tokenizer.ggml.add_bos_token": False}
    if template is not None:
        values["tokenizer.chat_template"] = template
    write_gguf(folder / f"{file_name}.gguf", architecture, **values)
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    plugins = make_plugin_manager(config)
    info = build_registry(config, plugins).get(file_name)
    assert info.family == family
    if family == "qwen3" and template is not None:
        for messages in [*TEXT_CHATS.values(), *TOOL_CHATS.values()]:
            prompt = plugins.format_chat(info, messages)
            # the family plugin and ggufd's rendering of the GGUF's own template agree
            assert (
                prompt.text
                == gguf_template.format_chat(model=info, messages=hf_messages(messages), template_kwargs={}).text
            )


# --------------------------------------------------------------------------- tool calls


def collect(pieces) -> tuple[str, list[tuple[str, str]], dict[int, int]]:
    """(content, [(name, arguments)], {call index: how many argument deltas}) of a stream's pieces."""
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
            deltas[piece.index] = deltas.get(piece.index, 0) + 1
    return "".join(content), [tuple(calls[i]) for i in sorted(calls)], deltas


def streamed(stream, pieces):
    out = []
    for piece in pieces:
        out += stream.feed(piece)
    return collect(out + stream.finish())


ANSWER = (
    "I'll look both up.\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n'
    '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
)
EXPECTED_CALLS = [("get_weather", '{"city": "Paris", "days": 3}'), ("now", "{}")]


def test_tool_calls_stream_the_same_however_split(qwen3):
    whole = streamed(qwen3.tool_call_stream(model=model(), tools=TOOLS), [ANSWER])
    assert whole[0].rstrip() == "I'll look both up." and whole[1] == EXPECTED_CALLS
    for pieces in split_all_ways(ANSWER):
        assert streamed(qwen3.tool_call_stream(model=model(), tools=TOOLS), pieces)[:2] == whole[:2]
    _, _, deltas = streamed(qwen3.tool_call_stream(model=model(), tools=TOOLS), list(ANSWER))
    assert deltas[0] > 1  # the arguments arrived as they were written


def test_a_call_to_a_tool_not_offered_is_content(qwen3):
    text = 'Sure.\n<tool_call>\n{"name": "delete_everything", "arguments": {}}\n</tool_call>'
    for pieces in ([text], list(text)):
        content, calls, _ = streamed(qwen3.tool_call_stream(model=model(), tools=TOOLS), pieces)
        assert calls == [] and content == text


def test_reasoning_then_calls(qwen3):
    """The answer filter first, then the calls in its content, as a request runs them."""
    answer = "<think>\nThe user wants the weather.\n</think>\n\n" + ANSWER
    prompt = chat(qwen3, model(), TOOL_CONVERSATION[:2], TOOLS)
    for pieces in ([answer], list(answer)):
        answer_filter = qwen3.answer_filter(model=model(), prompt=prompt)
        stream = qwen3.tool_call_stream(model=model(), tools=TOOLS)
        out, reasoning = [], []
        for piece in pieces:
            content, thought = answer_filter.feed(piece)
            reasoning.append(thought)
            out += stream.feed(content)
        content, thought = answer_filter.finish()
        out += stream.feed(content) + stream.finish()
        assert "".join(reasoning) + thought == "The user wants the weather."
        assert collect(out)[1] == EXPECTED_CALLS


def test_parse_tool_calls_gives_the_streamed_calls(qwen3):
    calls = qwen3.parse_tool_calls(model=model(), text=ANSWER)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == EXPECTED_CALLS
    assert [c["id"] for c in calls] == ["call_0", "call_1"] and all(c["type"] == "function" for c in calls)


def test_what_the_plugin_renders_it_parses_back(qwen3):
    prompt = chat(qwen3, model(), TOOL_CONVERSATION, TOOLS)
    turn = prompt.text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = qwen3.parse_tool_calls(model=model(), text=turn)
    assert [json.loads(c["function"]["arguments"]) for c in parsed] == [
        json.loads(c["function"]["arguments"]) for c in CALLS
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris is the capital of France.",
        '{"name": "f", "arguments": {}}',
        "<tool_call>\n</tool_call>",
        '<tool_call>\n{"name": "f", "arguments": {"city": "Par\n</tool_call>',
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
        '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><tool_call>\nnot json\n</tool_call>',
        "<tool_call>" + "[" * 100_000 + "</tool_call>",
    ],
    ids=lambda text: repr(text[:40]),
)
def test_no_tool_call(qwen3, text):
    assert qwen3.parse_tool_calls(model=model(), text=text) is None


def test_openers_and_stops(qwen3, pm):
    assert qwen3.tool_call_openers(model=model()) == ["<tool_call>"]
    assert pm.tool_call_openers(model()) == ("<tool_call>",)
    assert pm.stop_sequences(model()) == ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
