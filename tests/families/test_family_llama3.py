"""The llama3 family plugin (ggufd/families/llama3.py): golden prompts byte for byte, cross-checks
against Meta's published Llama 3.1 chat template with tool calls (the plain chats are in
test_family_contract.py, for the Llama 3 template too), the dated preamble, family detection, and
the Llama 3.1 JSON tool-call syntax."""

from __future__ import annotations

import json
from datetime import datetime

import gguf_factory
import pytest
from family_kit import LLAMA3, LLAMA3_TEMPLATE, LLAMA31_TEMPLATE, TEXT_CHATS

from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.gguf_metadata import read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec
from ggufd.types import ChatPrompt, ModelSpec

SYSTEM_AND_USER = TEXT_CHATS["system-and-user"]
MULTI_TURN = TEXT_CHATS["multi-turn"]
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 22, "unit": "celsius"}'},
    {"role": "user", "content": "Should I take a coat?"},
]

H = "<|start_header_id|>"
E = "<|end_header_id|>\n\n"
EOT = "<|eot_id|>"
GENERATION = f"{H}assistant{E}"
PREAMBLE = f"{H}system{E}Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
metadata, model = LLAMA3.metadata, LLAMA3.model


@pytest.fixture(scope="module")
def llama3(pm):
    plugin = pm.manager.get_plugin("llama3")
    assert plugin is not None and plugin.__name__ == "ggufd.families.llama3"
    return plugin


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(llama3):
    prompt = llama3.format_chat(model=model(), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text=(
            "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        stop=("<|eot_id|>", "<|eom_id|>"),
        add_bos=True,
    )
    assert "<|begin_of_text|>" not in prompt.text


def test_multi_turn(llama3):
    prompt = llama3.format_chat(model=model(), messages=MULTI_TURN)
    assert prompt.text == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_tool_call_tool_result_and_follow_up(llama3):
    prompt = llama3.format_chat(model=model(), messages=TOOL_CONVERSATION)
    assert prompt.text == (
        "<|start_header_id|>user<|end_header_id|>\n\nWhat's the weather in Paris?<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'
        '<|start_header_id|>ipython<|end_header_id|>\n\n{"temperature": 22, "unit": "celsius"}<|eot_id|>'
        "<|start_header_id|>user<|end_header_id|>\n\nShould I take a coat?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_contents_are_trimmed_but_tool_results_are_not(llama3):
    messages = [
        {"role": "system", "content": "\n  Be brief. \n"},
        {"role": "user", "content": "  padded \n"},
        {"role": "tool", "tool_call_id": "x", "content": " 42 \n"},
    ]
    prompt = llama3.format_chat(model=model(), messages=messages)
    assert prompt.text == (f"{H}system{E}Be brief.{EOT}{H}user{E}padded{EOT}{H}ipython{E} 42 \n{EOT}{GENERATION}")


def test_several_tool_calls_are_joined_with_semicolons(llama3):
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    prompt = llama3.format_chat(
        model=model(),
        messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": calls}],
    )
    body = '{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {}}'
    assert prompt.text == f"{H}user{E}go{EOT}{H}assistant{E}{body}{EOT}{GENERATION}"
    # what the plugin renders, it parses back
    parsed = llama3.parse_tool_calls(model=model(), text=body)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] == [
        ("f", {"x": 1}),
        ("g", {}),
    ]


def test_unparsable_arguments_are_kept_as_a_json_string(llama3):
    calls = [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "not json"}}]
    prompt = llama3.format_chat(model=model(), messages=[{"role": "assistant", "content": "", "tool_calls": calls}])
    assert prompt.text == f'{H}assistant{E}{{"name": "f", "parameters": "not json"}}{EOT}{GENERATION}'


def test_add_bos_follows_the_gguf(llama3):
    assert llama3.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False


# --------------------------------------------------------------------------- Llama 3.1 preamble


def test_llama31_template_adds_the_dated_system_turn(llama3):
    meta = metadata(LLAMA31_TEMPLATE)
    prompt = llama3.format_chat(model=model(meta=meta), messages=SYSTEM_AND_USER)
    assert prompt.text == (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # without a system message the dated turn is still there, empty after the date
    prompt = llama3.format_chat(model=model(meta=meta), messages=MULTI_TURN)
    assert prompt.text.startswith(PREAMBLE + EOT + f"{H}user{E}Hi{EOT}")


def test_llama31_tool_conversation(llama3):
    prompt = llama3.format_chat(model=model(meta=metadata(LLAMA31_TEMPLATE)), messages=TOOL_CONVERSATION)
    assert prompt.text == (
        PREAMBLE
        + EOT
        + "<|start_header_id|>user<|end_header_id|>\n\nWhat's the weather in Paris?<|eot_id|>"
        + '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'
        + '<|start_header_id|>ipython<|end_header_id|>\n\n{"temperature": 22, "unit": "celsius"}<|eot_id|>'
        + "<|start_header_id|>user<|end_header_id|>\n\nShould I take a coat?<|eot_id|>"
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama32_template_dates_the_preamble_today(llama3):
    # Llama 3.2's template: {%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}
    template = LLAMA31_TEMPLATE.replace(
        '{%- set date_string = "26 Jul 2024" %}',
        '{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}'
        '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}',
    )
    before = datetime.now().strftime("%d %b %Y")
    prompt = llama3.format_chat(model=model(meta=metadata(template)), messages=SYSTEM_AND_USER)
    after = datetime.now().strftime("%d %b %Y")
    assert any(
        prompt.text.startswith(f"{H}system{E}Cutting Knowledge Date: December 2023\nToday Date: {day}\n\n")
        for day in (before, after)
    )
    assert prompt.text == LLAMA3.reference(template, SYSTEM_AND_USER).text or before != after


# --------------------------------------------------------------------------- Meta's templates


def test_plugin_matches_metas_llama31_template_with_a_tool_call(llama3):
    # the plain chats, with the Llama 3 and 3.1 templates, are checked in test_family_contract.py
    reference = LLAMA3.reference(LLAMA31_TEMPLATE, TOOL_CONVERSATION).text
    assert not reference.startswith("<|begin_of_text|>")  # the tokenizer adds it
    assert (
        llama3.format_chat(model=model(meta=metadata(LLAMA31_TEMPLATE)), messages=TOOL_CONVERSATION).text == reference
    )


# --------------------------------------------------------------------------- family and stops


def test_detect_family_positive(llama3):
    # the template's header markers
    for template in (LLAMA3_TEMPLATE, LLAMA31_TEMPLATE):
        assert llama3.detect_family(metadata=metadata(template, name=None), spec=model_spec()) == "llama3"
    # without a template, the name or the file name
    for name in ("Meta Llama 3.1 8B Instruct", "Llama-3.2-1B-Instruct", "llama3-8b", "Llama 3.3 70B"):
        assert llama3.detect_family(metadata=metadata(name=name), spec=model_spec()) == "llama3", name
    assert (
        llama3.detect_family(metadata=metadata(name=None), spec=model_spec("Meta-Llama-3-8B-Instruct.Q4_K_M"))
        == "llama3"
    )


def test_detect_family_negative(llama3, tiny_model):
    # another architecture, even with the llama 3 template or name
    for arch in ("qwen2", "gemma3", None):
        assert llama3.detect_family(metadata=metadata(LLAMA31_TEMPLATE, architecture=arch), spec=model_spec()) is None
    # a Llama 3 fine-tune whose own template is ChatML (Hermes 3) is not llama3
    hermes = metadata(gguf_factory.DEFAULT_CHAT_TEMPLATE, name="Hermes 3 Llama 3.1 8B")
    assert llama3.detect_family(metadata=hermes, spec=model_spec("Hermes-3-Llama-3.1-8B")) is None
    # Llama 1/2 names, other llama-architecture models
    for name in ("LLaMA 30B", "llama-33b", "Llama 2 7B Chat", "tiny-llama", "Mistral 7B Instruct v0.3"):
        assert llama3.detect_family(metadata=metadata(name=name), spec=model_spec()) is None, name
    assert (
        llama3.detect_family(
            metadata=metadata("[INST] {{ messages }} [/INST]", name="Llama 3 lookalike"), spec=model_spec()
        )
        is None
    )
    assert llama3.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None


def test_a_qwen_model_is_not_claimed(pm, llama3):
    qwen = metadata(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        name="Qwen2.5 7B Instruct",
        architecture="qwen2",
    )
    assert llama3.detect_family(metadata=qwen, spec=model_spec("Qwen2.5-7B-Instruct")) is None
    assert pm.hook.detect_family(metadata=qwen, spec=model_spec("Qwen2.5-7B-Instruct")) == "chatml"
    assert pm.hook.detect_family(metadata=metadata(LLAMA31_TEMPLATE), spec=model_spec()) == "llama3"


# --------------------------------------------------------------------------- tool calls


def calls(llama3, text):
    return llama3.parse_tool_calls(model=model(), text=text)


def test_parse_one_tool_call(llama3):
    assert calls(llama3, '{"name": "get_weather", "parameters": {"city": "Paris"}}') == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    # "arguments" instead of "parameters", surrounding whitespace, the python tag
    expected = [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"q": "café"}'}}]
    assert calls(llama3, '\n {"name": "f", "arguments": {"q": "café"}} \n') == expected
    assert calls(llama3, '<|python_tag|>{"name": "f", "parameters": {"q": "café"}}') == expected


def test_parse_several_tool_calls(llama3):
    text = '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {"y": "; not a separator"}};'
    assert calls(llama3, text) == [
        {"id": "call_0", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_1", "type": "function", "function": {"name": "b", "arguments": '{"y": "; not a separator"}'}},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The capital of France is Paris.",
        'Sure: {"name": "f", "parameters": {}}',
        '{"name": "f", "parameters": {}} and then some text',
        '{"name": "f", "parameters": {}} {"name": "g", "parameters": {}}',
        '{"name": "f"}',
        '{"name": "f", "parameters": "x=1"}',
        '{"name": "", "parameters": {}}',
        '{"name": 3, "parameters": {}}',
        '{"city": "Paris"}',
        '[{"name": "f", "parameters": {}}]',
        '{"name": "f", "parameters": {"city": "Par',
        '{"name": "f", "parameters": {}}; oops',
        '{"name": "f", "parameters": {}};; {"name": "g", "parameters": {}}',
        "{" * 100_000,
        '{"a": ' * 50_000,
    ],
    ids=lambda text: repr(text[:30]),
)
def test_no_tool_call(llama3, text):
    assert calls(llama3, text) is None


# --------------------------------------------------------------------------- a real GGUF


def test_a_llama31_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    gguf_factory.write_tiny_llama(
        folder / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        chat_template=LLAMA31_TEMPLATE,
        name="Meta Llama 3.1 8B Instruct",
    )
    gguf_factory.write_tiny_llama(folder / "llama-3-no-template.gguf", chat_template=None, name="tiny")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    registry = build_registry(config, pm)
    info = registry.get("Meta-Llama-3.1-8B-Instruct-Q4_K_M")
    assert info.family == "llama3"
    assert registry.get("llama-3-no-template").family == "llama3"
    prompt = pm.format_chat(model=info, messages=TEXT_CHATS["odd-content-spaces-after-system"])
    # the family plugin and ggufd's rendering of the GGUF's own template agree
    assert (
        prompt.text
        == gguf_template.format_chat(
            model=info, messages=TEXT_CHATS["odd-content-spaces-after-system"], template_kwargs={}
        ).text
    )
    assert prompt.add_bos is True and prompt.stop == ("<|eot_id|>", "<|eom_id|>")
