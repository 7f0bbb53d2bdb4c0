"""The deepseek plugin (ggufd/families/deepseek.py): golden prompts byte for byte (V3 and R1 style, tool
calls and results), cross-checks with tool calls against DeepSeek's published templates (the plain
chats are in test_family_contract.py), family detection (R1 distills on llama and qwen2 included),
and parsing of DeepSeek's tool-call syntax."""

from __future__ import annotations

import json

import gguf_factory
import pytest
from family_kit import (
    DEEPSEEK,
    DISTILL_TEMPLATE,
    R1_TEMPLATE,
    TEXT_CHATS,
    published,
)
from family_kit import (
    DEEPSEEK_BOS as BOS,
)
from family_kit import (
    DEEPSEEK_EOS as EOS,
)
from family_kit import (
    DEEPSEEK_V2_TEMPLATE as V2_TEMPLATE,
)

from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.testing import render_template
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec, PassThrough, ReasoningSyntax

# DeepSeek V3.1 (llama.cpp's models/templates/deepseek-ai-DeepSeek-V3.1.jinja), shortened to the
# generation prompt that marks the format: another family, left to the GGUF's own template.
V31_TEMPLATE = "{{ bos_token }}{%- for message in messages -%}{{'<｜User｜>' + message['content']}}{%- endfor -%}{%- if add_generation_prompt -%}{{'<｜Assistant｜></think>'}}{%- endif %}"
SYSTEM_AND_USER = TEXT_CHATS["terse-system"]
MULTI_TURN = TEXT_CHATS["short-multi-turn"]
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOLS_THEN_USER = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": "call_1"},
    {"role": "user", "content": "And in Rome?"},
]
RENDERED_CALL = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>' + EOS
)
RENDERED_RESULT = (
    '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{"temperature": 21}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>'
)
R1 = published("deepseek", "r1")
DISTILL = published("deepseek", "distill")
metadata, model = DEEPSEEK.metadata, DEEPSEEK.model


@pytest.fixture(scope="module")
def deepseek(pm):
    plugin = pm.manager.get_plugin("deepseek")
    assert plugin is not None and plugin.__name__ == "ggufd.families.deepseek"
    return plugin


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(deepseek):
    prompt = deepseek.format_chat(model=model(), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(text="You are terse.<｜User｜>Hi<｜Assistant｜>", stop=(EOS,), add_bos=True)
    assert not prompt.text.startswith(BOS)


def test_system_and_user_r1(deepseek):
    prompt = deepseek.format_chat(model=R1.model(), messages=SYSTEM_AND_USER)
    assert prompt.text == "You are terse.<｜User｜>Hi<｜Assistant｜><think>\n"


def test_multi_turn(deepseek):
    prompt = deepseek.format_chat(model=model(), messages=MULTI_TURN)
    assert prompt.text == "<｜User｜>Hi<｜Assistant｜>Hello!" + EOS + "<｜User｜>Name a colour.<｜Assistant｜>"


def test_multi_turn_r1_drops_earlier_reasoning(deepseek):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nThe user greets me.\n</think>\n\nHello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    prompt = deepseek.format_chat(model=R1.model(), messages=messages)
    assert (
        prompt.text
        == "<｜User｜>Hi<｜Assistant｜>\n\nHello!" + EOS + "<｜User｜>Name a colour.<｜Assistant｜><think>\n"
    )


def test_several_system_messages_open_the_prompt(deepseek):
    messages = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "B"},
    ]
    assert deepseek.format_chat(model=model(), messages=messages).text == "A\n\nB<｜User｜>Hi<｜Assistant｜>"


def test_tool_call_result_and_follow_up(deepseek):
    prompt = deepseek.format_chat(model=model(), messages=TOOLS_THEN_USER)
    assert prompt.text == (
        "<｜User｜>Weather in Paris?<｜Assistant｜>"
        + RENDERED_CALL
        + RENDERED_RESULT
        + "<｜User｜>And in Rome?<｜Assistant｜>"
    )


def test_tool_result_then_generation(deepseek):
    # after the results, the model goes on with its answer: no new <｜Assistant｜>
    prompt = deepseek.format_chat(model=model(), messages=TOOLS_THEN_USER[:3])
    assert prompt.text == "<｜User｜>Weather in Paris?<｜Assistant｜>" + RENDERED_CALL + RENDERED_RESULT


def test_answer_after_tool_results(deepseek):
    messages = [*TOOLS_THEN_USER[:3], {"role": "assistant", "content": "21 °C."}, {"role": "user", "content": "Thanks"}]
    prompt = deepseek.format_chat(model=model(), messages=messages)
    assert prompt.text == (
        "<｜User｜>Weather in Paris?<｜Assistant｜>"
        + RENDERED_CALL
        + RENDERED_RESULT
        + "21 °C."
        + EOS
        + "<｜User｜>Thanks<｜Assistant｜>"
    )


def test_two_calls_and_two_results(deepseek):
    second = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [WEATHER_CALL, second]},
        {"role": "tool", "content": "21", "tool_call_id": "call_1"},
        {"role": "tool", "content": "10:00", "tool_call_id": "call_2"},
    ]
    prompt = deepseek.format_chat(model=model(), messages=messages)
    assert prompt.text == (
        "<｜User｜>Weather and time?<｜Assistant｜>Let me check.<｜tool▁calls▁begin｜>"
        '<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>\n'
        '<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{"tz": "CET"}\n```<｜tool▁call▁end｜>'
        "<｜tool▁calls▁end｜>" + EOS + "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>21<｜tool▁output▁end｜>\n"
        "<｜tool▁output▁begin｜>10:00<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"
    )
    # R1's own template joins the results without a newline, and so does the plugin for it
    assert (
        "<｜tool▁output▁end｜><｜tool▁output▁begin｜>" in deepseek.format_chat(model=R1.model(), messages=messages).text
    )


def test_a_second_round_of_tool_calls_opens_its_own_blocks(deepseek):
    again = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    messages = [
        *TOOLS_THEN_USER,
        {"role": "assistant", "content": "", "tool_calls": [again]},
        {"role": "tool", "content": "25", "tool_call_id": "call_2"},
    ]
    text = deepseek.format_chat(model=model(), messages=messages).text
    assert text.count("<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>") == 2
    assert text.count("<｜tool▁outputs▁begin｜>") == text.count("<｜tool▁outputs▁end｜>") == 2
    assert text.endswith("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>25<｜tool▁output▁end｜><｜tool▁outputs▁end｜>")


def test_tool_calls_right_after_results_continue_the_answer(deepseek):
    again = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    messages = [*TOOLS_THEN_USER[:3], {"role": "assistant", "content": "", "tool_calls": [again]}]
    text = deepseek.format_chat(model=model(), messages=messages).text
    assert "<｜tool▁outputs▁end｜><｜tool▁calls▁begin｜>" in text
    assert text.endswith(EOS + "<｜Assistant｜>")


def test_add_bos_follows_the_vocabulary(deepseek):
    assert deepseek.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False
    assert deepseek.format_chat(model=model(meta=metadata(add_bos=None)), messages=MULTI_TURN).add_bos is True


def test_only_a_system_message_is_rejected(deepseek):
    with pytest.raises(InvalidRequest) as info:
        deepseek.format_chat(model=model(), messages=[{"role": "system", "content": "x"}])
    assert info.value.status == 400 and info.value.param == "messages"


# --------------------------------------------------------------------------- DeepSeek's templates


# the plain chats are checked for every family in test_family_contract.py
TOOL_CROSS_CHECK = [
    TOOLS_THEN_USER[:3],
    [*TOOLS_THEN_USER[:3], {"role": "assistant", "content": "21 °C."}, {"role": "user", "content": "Thanks"}],
]


@pytest.mark.parametrize("messages", TOOL_CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_r1_template(deepseek, messages):
    reference = R1.reference(messages).text
    assert not reference.startswith(BOS)  # the tokenizer adds BOS
    assert deepseek.format_chat(model=R1.model(), messages=messages).text == reference


@pytest.mark.parametrize("messages", TOOL_CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_distill_template(deepseek, messages):
    assert deepseek.format_chat(model=DISTILL.model(), messages=messages).text == DISTILL.reference(messages).text


def test_user_after_tool_results_closes_the_results_unlike_the_template(deepseek):
    reference = R1.reference(TOOLS_THEN_USER).text
    fixed = reference.replace(
        "<｜tool▁output▁end｜><｜User｜>", "<｜tool▁output▁end｜><｜tool▁outputs▁end｜><｜User｜>"
    )
    assert fixed != reference
    assert deepseek.format_chat(model=R1.model(), messages=TOOLS_THEN_USER).text == fixed


def test_two_results_match_each_template(deepseek):
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL, {**WEATHER_CALL, "id": "call_2"}]},
        {"role": "tool", "content": "21", "tool_call_id": "call_1"},
        {"role": "tool", "content": "22", "tool_call_id": "call_2"},
    ]
    assert deepseek.format_chat(model=R1.model(), messages=messages).text == R1.reference(messages).text
    distill = model(meta=metadata(DISTILL_TEMPLATE, architecture="llama", name="DeepSeek R1 Distill Llama 8B"))
    assert (
        deepseek.format_chat(model=distill, messages=messages).text
        == DEEPSEEK.reference(DISTILL_TEMPLATE, messages).text
    )


# --------------------------------------------------------------------------- detection


def test_detect_family(deepseek):
    spec = model().spec
    assert deepseek.detect_family(metadata=metadata(None, architecture="deepseek2"), spec=spec) == "deepseek"
    assert (
        deepseek.detect_family(metadata=metadata(None, architecture="deepseek", name="DeepSeek LLM"), spec=spec)
        == "deepseek"
    )
    assert deepseek.detect_family(metadata=metadata(R1_TEMPLATE, architecture="deepseek2"), spec=spec) == "deepseek"
    for architecture in ("llama", "qwen2"):  # the distills
        assert (
            deepseek.detect_family(metadata=metadata(DISTILL_TEMPLATE, architecture=architecture), spec=spec)
            == "deepseek"
        )
    # later DeepSeek formats and other templates on deepseek architectures are left to their own template
    assert deepseek.detect_family(metadata=metadata(V31_TEMPLATE, architecture="deepseek2"), spec=spec) is None
    assert (
        deepseek.detect_family(
            metadata=metadata(V2_TEMPLATE, architecture="deepseek2", name="DeepSeek V2 Chat"), spec=spec
        )
        is None
    )
    assert (
        deepseek.detect_family(
            metadata=metadata("{{ '｜DSML｜<｜User｜><｜Assistant｜>' }}", architecture="deepseek2"), spec=spec
        )
        is None
    )


@pytest.mark.parametrize("architecture", ["deepseek2", "llama", "qwen2"])
def test_through_the_plugin_manager(pm, architecture):
    # the R1 distills are llama and qwen2 models: the Llama 3 and ChatML plugins must leave them to us
    meta = metadata(DISTILL_TEMPLATE, architecture=architecture, name="DeepSeek R1 Distill")
    assert pm.hook.detect_family(metadata=meta, spec=model().spec) == "deepseek"
    prompt = pm.format_chat(model=model(meta=meta), messages=SYSTEM_AND_USER)
    assert prompt.text == "You are terse.<｜User｜>Hi<｜Assistant｜><think>\n"


def test_tiny_gguf_with_a_distill_template(pm, tmp_path):
    path = gguf_factory.write_tiny_llama(
        tmp_path / "r1-distill-llama.gguf", chat_template=DISTILL_TEMPLATE, name="DeepSeek R1 Distill Llama 8B"
    )
    meta = read_metadata(path)
    spec = ModelSpec(id="r1-distill-llama", path=path)
    assert meta.architecture == "llama" and meta.chat_template == DISTILL_TEMPLATE
    assert pm.hook.detect_family(metadata=meta, spec=spec) == "deepseek"
    prompt = pm.format_chat(model=ModelInfo(spec=spec, metadata=meta, family="deepseek"), messages=MULTI_TURN)
    assert prompt.text == render_template(DISTILL_TEMPLATE, MULTI_TURN, meta).text


# --------------------------------------------------------------------------- tool calls


def call(name: str, arguments: str) -> str:
    return f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{arguments}\n```<｜tool▁call▁end｜>"


def functions(calls):
    return [(c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls]


def test_parse_one_call(deepseek):
    text = "<｜tool▁calls▁begin｜>" + call("get_weather", '{"city": "Paris"}') + "<｜tool▁calls▁end｜>"
    calls = deepseek.parse_tool_calls(model=model(), text=text)
    assert functions(calls) == [("function", "get_weather", '{"city": "Paris"}')]
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) > 10


def test_parse_two_calls_after_some_text(deepseek):
    text = (
        "Let me look.<｜tool▁calls▁begin｜>"
        + call("a", '{"x": 1}')
        + "\n"
        + call("b", '{"y": [1, 2]}')
        + "<｜tool▁calls▁end｜>"
    )
    calls = deepseek.parse_tool_calls(model=model(), text=text)
    assert functions(calls) == [("function", "a", '{"x": 1}'), ("function", "b", '{"y": [1, 2]}')]
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_without_the_closing_marker(deepseek):
    # generation stops at <｜end▁of▁sentence｜>; the closing marker of the block may be missing
    text = "<｜tool▁calls▁begin｜>" + call("f", "{}")
    assert functions(deepseek.parse_tool_calls(model=model(), text=text)) == [("function", "f", "{}")]


def test_parse_what_format_chat_renders(deepseek):
    rendered = deepseek.format_chat(
        model=model(), messages=TOOLS_THEN_USER[:2] + [{"role": "user", "content": "x"}]
    ).text
    assert functions(deepseek.parse_tool_calls(model=model(), text=rendered)) == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]


def test_parse_tolerates_the_distills_slips(deepseek):
    slipped = '<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜>f\n```json\n{"a": 1}\n```<｜tool_call_end｜><｜tool_calls_end｜>'
    assert functions(deepseek.parse_tool_calls(model=model(), text=slipped)) == [("function", "f", '{"a": 1}')]
    v31 = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Rome"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    assert functions(deepseek.parse_tool_calls(model=model(), text=v31)) == [
        ("function", "get_weather", '{"city": "Rome"}')
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Just an answer.",
        'Here is JSON:\n```json\n{"a": 1}\n```',
        "<think>\nshould I call a tool?\n</think>\n\nNo.",
        "",
    ],
    ids=["plain", "json-block", "reasoning", "empty"],
)
def test_parse_no_call(deepseek, text):
    assert deepseek.parse_tool_calls(model=model(), text=text) is None


@pytest.mark.parametrize(
    "text",
    [
        "<｜tool▁calls▁begin｜>" + call("f", '{"a": '),  # bad JSON
        "<｜tool▁calls▁begin｜>" + call("f", "[1, 2]"),  # arguments are not an object
        "<｜tool▁calls▁begin｜>" + call("", "{}"),  # no name
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function get_weather {}<｜tool▁call▁end｜>",  # no separator
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}",  # cut short
        "<｜tool▁calls▁begin｜>"
        + call("f", "{}")
        + "<｜tool▁call▁begin｜>function<｜tool▁sep｜>g\n```json\n{",  # second cut short
        "<｜tool▁calls▁begin｜><｜tool▁calls▁end｜>",  # empty block
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\nno fence<｜tool▁call▁end｜>",
    ],
    ids=["bad-json", "array", "no-name", "no-sep", "cut", "second-cut", "empty-block", "no-fence"],
)
def test_parse_malformed_calls_give_none(deepseek, text):
    assert deepseek.parse_tool_calls(model=model(), text=text) is None


def test_parse_through_the_plugin_manager(pm):
    text = "<｜tool▁calls▁begin｜>" + call("f", '{"q": "ü"}') + "<｜tool▁calls▁end｜>"
    assert json.loads(pm.hook.parse_tool_calls(model=model(), text=text)[0]["function"]["arguments"]) == {"q": "ü"}
    assert pm.hook.parse_tool_calls(model=model(family="gguf-template"), text=text) is None


def test_r1_reasons_in_think_and_its_reasoning_is_split_off(pm):
    plugins = pm
    r1 = model(meta=metadata(R1_TEMPLATE))
    prompt = plugins.format_chat(r1, SYSTEM_AND_USER)
    assert prompt.text.endswith("<｜Assistant｜><think>\n")
    assert prompt.reasoning == ReasoningSyntax("<think>", "</think>", opened=True)
    generated = "Okay, the user greets me.\n</think>\n\nHello! How can I help?"
    for pieces in ([generated], list(generated)):
        answer = plugins.answer_filter(r1, prompt)
        parts = [answer.feed(piece) for piece in pieces] + [answer.finish()]
        assert ("".join(c for c, _ in parts), "".join(r for _, r in parts)) == (
            "Hello! How can I help?",
            "Okay, the user greets me.",
        )
    v3 = model()  # no <think> in its template: no reasoning, no filter
    v3_prompt = plugins.format_chat(v3, SYSTEM_AND_USER)
    assert v3_prompt.reasoning is None
    assert isinstance(plugins.answer_filter(v3, v3_prompt), PassThrough)
