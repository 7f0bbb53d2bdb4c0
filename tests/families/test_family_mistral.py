"""The mistral family plugin (ggufd/families/mistral.py): golden prompts byte for byte in the v3, tekken
and v1 spacings, cross-checks with tool calls against the templates Mistral publishes
(Mistral-7B-Instruct-v0.3, Mistral-Nemo-Instruct-2407; the plain chats, v0.1 included, are in
test_family_contract.py), family detection, and the ``[TOOL_CALLS]`` syntax."""

from __future__ import annotations

import json
import random

import gguf_factory
import pytest
from family_kit import (
    MAGISTRAL_2509_TEMPLATE,
    MISTRAL,
    MISTRAL_TEKKEN_PRE,
    MISTRAL_V3_TEMPLATE,
    MISTRAL_V7,
    TEXT_CHATS,
    hf_messages,
    published,
)

from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec, render_template
from ggufd.types import ChatPrompt, ModelSpec, ReasoningSyntax

LLAMA2_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\\n{{ m['content'] }}\\n<</SYS>>\\n\\n{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}"
# mistral-common's v15 templates carry the reasoning effort in [MODEL_SETTINGS]: not reproduced
V15_TEMPLATE = "[SYSTEM_PROMPT][AVAILABLE_TOOLS][MODEL_SETTINGS]{{ reasoning_effort }}[/MODEL_SETTINGS][INST]"
V7_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ m['content'] }}[/SYSTEM_PROMPT]{% else %}[INST]{{ m['content'] }}[/INST]{% endif %}{% endfor %}"

SYSTEM_AND_USER = TEXT_CHATS["system-and-user"]
MULTI_TURN = TEXT_CHATS["multi-turn"]
CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 22, "unit": "celsius"}'},
    {"role": "assistant", "content": "It is 22 °C in Paris."},
    {"role": "user", "content": "Should I take a coat?"},
]
CALL_RESULT_FOLLOW_UP = TOOL_CONVERSATION[:3] + TOOL_CONVERSATION[4:]
V3 = published("mistral", "v0.3").meta
TEKKEN = published("mistral", "nemo").meta
V1 = published("mistral", "v0.1").meta
metadata, model = MISTRAL.metadata, MISTRAL.model


@pytest.fixture(scope="module")
def mistral(pm):
    plugin = pm.manager.get_plugin("mistral")
    assert plugin is not None and plugin.__name__ == "ggufd.families.mistral"
    return plugin


def prompt_for(mistral, meta, messages, tools=()) -> ChatPrompt:
    return mistral.format_chat(model=model(meta=meta), messages=messages, tools=list(tools))


def render(mistral, meta, messages, tools=()) -> str:
    return prompt_for(mistral, meta, messages, tools).text


# --------------------------------------------------------------------------- golden prompts: v3


def test_v3_system_and_user(mistral):
    prompt = mistral.format_chat(model=model(), messages=SYSTEM_AND_USER, tools=[])
    assert prompt == ChatPrompt(
        text="[INST] You are a helpful assistant.\n\nWhat is the capital of France?[/INST]",
        stop=("</s>",),
        add_bos=True,
    )
    assert "<s>" not in prompt.text


def test_v3_multi_turn(mistral):
    assert render(mistral, V3, MULTI_TURN) == "[INST] Hi[/INST] Hello! How can I help?</s>[INST] Name a colour.[/INST]"


def test_v3_system_goes_before_the_last_user_message(mistral):
    messages = [
        {"role": "system", "content": "Be brief."},
        *MULTI_TURN[:2],
        {"role": "system", "content": "Be kind."},
        MULTI_TURN[2],
    ]
    assert render(mistral, V3, messages) == (
        "[INST] Hi[/INST] Hello! How can I help?</s>[INST] Be brief.\n\nBe kind.\n\nName a colour.[/INST]"
    )


def test_v3_tool_call_tool_result_and_follow_up(mistral):
    assert render(mistral, V3, TOOL_CONVERSATION) == (
        "[INST] What's the weather in Paris?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS] {"content": {"temperature": 22, "unit": "celsius"}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
        " It is 22 °C in Paris.</s>"
        "[INST] Should I take a coat?[/INST]"
    )
    assert render(mistral, V3, CALL_RESULT_FOLLOW_UP) == (
        "[INST] What's the weather in Paris?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS] {"content": {"temperature": 22, "unit": "celsius"}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
        "[INST] Should I take a coat?[/INST]"
    )


def test_tool_details(mistral):
    messages = [
        {"role": "user", "content": "Go"},
        {
            "role": "assistant",
            "content": "text beside tool calls is not part of the format",
            "tool_calls": [
                {"type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "call_xyz", "type": "function", "function": {"name": "b", "arguments": "not json"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_xyz", "content": "22 degrees, sunny"},
        {"role": "tool", "content": "42"},
    ]
    assert render(mistral, V3, messages) == (
        "[INST] Go[/INST]"
        '[TOOL_CALLS] [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "not json", "id": "call_xyz"}]</s>'
        '[TOOL_RESULTS] {"content": "22 degrees, sunny", "call_id": "call_xyz"}[/TOOL_RESULTS]'
        '[TOOL_RESULTS] {"content": 42}[/TOOL_RESULTS]'
    )


def test_v3_trims_answers(mistral):
    messages = [
        {"role": "user", "content": " hi "},
        {"role": "assistant", "content": "\n yes \n"},
        {"role": "user", "content": "ok"},
    ]
    assert render(mistral, V3, messages) == "[INST]  hi [/INST] yes</s>[INST] ok[/INST]"


# --------------------------------------------------------------------------- golden prompts: tekken and v1


def test_tekken(mistral):
    assert (
        render(mistral, TEKKEN, SYSTEM_AND_USER)
        == "[INST]You are a helpful assistant.\n\nWhat is the capital of France?[/INST]"
    )
    assert render(mistral, TEKKEN, MULTI_TURN) == "[INST]Hi[/INST]Hello! How can I help?</s>[INST]Name a colour.[/INST]"
    assert render(mistral, TEKKEN, TOOL_CONVERSATION) == (
        "[INST]What's the weather in Paris?[/INST]"
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS]{"content": {"temperature": 22, "unit": "celsius"}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
        "It is 22 °C in Paris.</s>"
        "[INST]Should I take a coat?[/INST]"
    )


def test_v1(mistral):
    assert (
        render(mistral, V1, SYSTEM_AND_USER)
        == " [INST] You are a helpful assistant.\n\nWhat is the capital of France? [/INST]"
    )
    assert (
        render(mistral, V1, MULTI_TURN) == " [INST] Hi [/INST] Hello! How can I help?</s> [INST] Name a colour. [/INST]"
    )
    # v1 puts the system prompt before the first user message
    messages = [{"role": "system", "content": "Be brief."}, *MULTI_TURN]
    assert (
        render(mistral, V1, messages)
        == " [INST] Be brief.\n\nHi [/INST] Hello! How can I help?</s> [INST] Name a colour. [/INST]"
    )


def test_v1_has_no_tool_calls(mistral):
    for messages in (TOOL_CONVERSATION, [MULTI_TURN[0], {"role": "tool", "tool_call_id": "x", "content": "1"}]):
        with pytest.raises(InvalidRequest) as info:
            render(mistral, V1, messages)
        assert info.value.status == 400 and info.value.param == "messages"


def test_the_style_is_picked_by_the_template_or_the_tokenizer(mistral):
    plugin_style = mistral.style
    assert plugin_style(V3) == "v3" and plugin_style(TEKKEN) == "tekken" and plugin_style(V1) == "v1"
    # without a template: tekken by its pre-tokenizer, else the v3 default
    assert plugin_style(metadata(None, values=MISTRAL_TEKKEN_PRE)) == "tekken"
    assert plugin_style(metadata(None, values={"tokenizer.ggml.pre": "default"})) == "v3"
    assert plugin_style(metadata(None)) == "v3"
    assert render(mistral, metadata(None, values=MISTRAL_TEKKEN_PRE), MULTI_TURN) == render(mistral, TEKKEN, MULTI_TURN)
    assert render(mistral, metadata(None), MULTI_TURN) == render(mistral, V3, MULTI_TURN)


def test_a_chat_needs_a_user_message(mistral):
    for messages in ([{"role": "system", "content": "x"}], [{"role": "assistant", "content": "x"}]):
        with pytest.raises(InvalidRequest) as info:
            render(mistral, V3, messages)
        assert info.value.status == 400 and info.value.param == "messages"


def test_add_bos_follows_the_gguf(mistral):
    assert prompt_for(mistral, metadata(add_bos=False), MULTI_TURN).add_bos is False


# --------------------------------------------------------------------------- Mistral's templates


TOOL_CROSS_CHECK = [
    TOOL_CONVERSATION,
    [{"role": "system", "content": "Use tools."}] + TOOL_CONVERSATION,
    [
        TOOL_CONVERSATION[0],
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                CALL,
                {**CALL, "id": "xyz789ABC", "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 22}'},
        {"role": "tool", "tool_call_id": "xyz789ABC", "content": '"12:00"'},
        {"role": "assistant", "content": "Warm, noon."},
        {"role": "user", "content": "Thanks"},
    ],
]


# the plain chats are checked for every family in test_family_contract.py (the v0.1 template has no tools)
@pytest.mark.parametrize("messages", TOOL_CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
@pytest.mark.parametrize("meta", [V3, TEKKEN], ids=["v0.3", "nemo"])
def test_plugin_matches_mistrals_templates(mistral, meta, messages):
    reference = MISTRAL.reference(meta.chat_template, messages, meta).text
    assert not reference.startswith("<s>")  # the tokenizer adds it
    assert render(mistral, meta, messages) == reference


# --------------------------------------------------------------------------- family


def test_detect_family_positive(mistral):
    for meta in (V3, TEKKEN, V1):
        assert mistral.detect_family(metadata=meta, spec=model_spec()) == "mistral"
    for arch in ("llama", "mistral", "mistral3"):
        assert (
            mistral.detect_family(
                metadata=metadata(MISTRAL_V3_TEMPLATE, name=None, architecture=arch), spec=model_spec()
            )
            == "mistral"
        )
        assert (
            mistral.detect_family(
                metadata=metadata(None, name="Mixtral 8x7B Instruct v0.1", architecture=arch), spec=model_spec()
            )
            == "mistral"
        )
    assert (
        mistral.detect_family(metadata=metadata(None, name=None), spec=model_spec("mistral-7b-instruct-v0.2.Q4_K_M"))
        == "mistral"
    )


def test_detect_family_negative(mistral, tiny_model):
    # another [INST] format: Llama 2 (<<SYS>>)
    assert mistral.detect_family(metadata=metadata(LLAMA2_TEMPLATE), spec=model_spec()) is None
    # v7+ templates on an architecture no Mistral model has, and mistral-common's v15 ([MODEL_SETTINGS])
    for arch in ("qwen2", "gemma3", None):
        assert (
            mistral.detect_family(metadata=metadata(MAGISTRAL_2509_TEMPLATE, architecture=arch), spec=model_spec())
            is None
        )
    assert mistral.detect_family(metadata=metadata(V15_TEMPLATE), spec=model_spec()) is None
    # a Mistral fine-tune in ChatML (OpenHermes 2.5 Mistral) is not ours
    openhermes = metadata(gguf_factory.DEFAULT_CHAT_TEMPLATE, name="OpenHermes 2.5 Mistral 7B")
    assert mistral.detect_family(metadata=openhermes, spec=model_spec("openhermes-2.5-mistral-7b")) is None
    # other architectures, names
    for arch in ("qwen2", "gemma3", None):
        assert (
            mistral.detect_family(metadata=metadata(MISTRAL_V3_TEMPLATE, architecture=arch), spec=model_spec()) is None
        )
    assert mistral.detect_family(metadata=metadata(None, name="Meta Llama 3 8B"), spec=model_spec()) is None
    assert mistral.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None


def test_detection_through_the_plugin_manager(pm):
    assert pm.hook.detect_family(metadata=V3, spec=model_spec()) == "mistral"
    assert pm.hook.detect_family(metadata=metadata(V7_TEMPLATE), spec=model_spec()) == "mistral"
    assert pm.hook.detect_family(metadata=metadata(V15_TEMPLATE), spec=model_spec()) == "gguf-template"
    assert (
        pm.hook.detect_family(metadata=metadata(LLAMA2_TEMPLATE, name="Llama 2 7B Chat"), spec=model_spec())
        == "gguf-template"
    )


# --------------------------------------------------------------------------- tool calls


def calls(mistral, text):
    return mistral.parse_tool_calls(model=model(), text=text)


def test_parse_tool_calls(mistral):
    text = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}, {"name": "get_time", "arguments": {}}]'
    assert calls(mistral, text) == [
        {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    # tekken spacing, whitespace around, text after the list
    expected = [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"q": "café"}'}}]
    assert calls(mistral, '\n[TOOL_CALLS][{"name": "f", "arguments": {"q": "café"}}]\n') == expected
    assert calls(mistral, '[TOOL_CALLS][{"name": "f", "arguments": {"q": "café"}}] Done.') == expected


def test_what_the_plugin_renders_it_parses_back(mistral):
    turn = render(mistral, V3, TOOL_CONVERSATION[:2]).split("[/INST]")[1].removesuffix("</s>")
    assert calls(mistral, turn) == [CALL]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris is the capital of France.",
        '[{"name": "f", "arguments": {}}]',
        'Sure. [TOOL_CALLS][{"name": "f", "arguments": {}}]',
        "[TOOL_CALLS]",
        "[TOOL_CALLS] []",
        '[TOOL_CALLS] {"name": "f", "arguments": {}}',
        '[TOOL_CALLS] [{"name": "f", "arguments": {"city": "Par',
        '[TOOL_CALLS] [{"arguments": {}}]',
        '[TOOL_CALLS] [{"name": "f", "arguments": "{}"}]',
        '[TOOL_CALLS] ["f"]',
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        "[TOOL_CALLS]" + "[" * 100_000,
    ],
    ids=lambda text: repr(text[:40]),
)
def test_no_tool_call(mistral, text):
    assert calls(mistral, text) is None


# --------------------------------------------------------------------------- a real GGUF


def test_a_mistral_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    gguf_factory.write_tiny_llama(
        folder / "Mistral-7B-Instruct-v0.3.Q4_K_M.gguf",
        chat_template=MISTRAL_V3_TEMPLATE,
        name="Mistral 7B Instruct v0.3",
    )
    gguf_factory.write_tiny_llama(folder / "mixtral-no-template.gguf", chat_template=None, name="tiny")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    registry = build_registry(config, pm)
    info = registry.get("Mistral-7B-Instruct-v0.3.Q4_K_M")
    assert info.family == "mistral"
    assert registry.get("mixtral-no-template").family == "mistral"
    for messages in [*TEXT_CHATS.values(), *TOOL_CROSS_CHECK]:
        prompt = pm.format_chat(model=info, messages=messages)
        # the family plugin and ggufd's rendering of the GGUF's own template agree
        assert (
            prompt.text
            == gguf_template.format_chat(model=info, messages=hf_messages(messages), template_kwargs={}).text
        )
        assert prompt.add_bos is True and prompt.stop == ("</s>",)


# --------------------------------------------------------------------------- v7 and later: Mistral's 2025 models

SMALL31, SMALL32, DEVSTRAL, MAGISTRAL, MINISTRAL = MISTRAL_V7
NEMO = published("mistral", "nemo-2407")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": 'Time "now", café',
        "parameters": {"type": "object", "properties": {}},
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
TIME_CALL = {
    "id": "xyz789ABC",
    "type": "function",
    "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
}
TWO_CALLS = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather and time?"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL, TIME_CALL]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "xyz789ABC", "content": "12:00"},
    {"role": "assistant", "content": "Warm, noon."},
    {"role": "user", "content": "Thanks"},
]
V7_CONVERSATIONS = {
    "call-result-answer": TOOL_CONVERSATION,
    "two-calls": TWO_CALLS,
    "ends-with-results": TWO_CALLS[:5],
    "text-result": [*TOOL_CONVERSATION[:2], {**TOOL_CONVERSATION[2], "content": "sunny, 22 degrees"}],
    "empty-arguments": [
        TOOL_CONVERSATION[0],
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**CALL, "function": {"name": "get_time", "arguments": "{}"}}],
        },
        {**TOOL_CONVERSATION[2], "content": "12:00"},
    ],
}
LATER_SYSTEM = [*MULTI_TURN[:2], {"role": "system", "content": "Be kind."}, MULTI_TURN[2]]


def reference(published_model, messages, tools=()):
    return published_model.reference(messages, **({"tools": list(tools)} if tools else {}))


@pytest.fixture
def pinned(mistral, monkeypatch):
    return MISTRAL.pin(mistral, monkeypatch)  # the date in Small 3.x's default system prompt


def test_small_31_golden(pinned):
    prompt = prompt_for(pinned, SMALL31.meta, SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text="[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST]What is the capital of France?[/INST]",
        stop=("</s>",),
        add_bos=True,
    )
    # no system message: the template's default one, dated (its line continuations join the lines)
    default = render(pinned, SMALL31.meta, MULTI_TURN)
    assert default.startswith(
        "[SYSTEM_PROMPT]You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup "
        "headquartered in Paris.Your knowledge base was last updated on 2023-10-01. The current date is 2025-09-17."
    )
    assert default.endswith("[/SYSTEM_PROMPT][INST]Hi[/INST]Hello! How can I help?</s>[INST]Name a colour.[/INST]")


def test_small_31_tools_and_calls_golden(pinned):
    text = render(pinned, SMALL31.meta, [SYSTEM_AND_USER[0], *TOOL_CONVERSATION], [WEATHER_TOOL])
    assert text == (
        "[SYSTEM_PROMPT]You are a helpful assistant that can call tools. If you call one or more tools, format them in a "
        "single JSON array or objects, where each object is a tool call, not as separate objects outside of an array or "
        'multiple arrays. Use the format [{"name": tool call name, "arguments": tool call arguments}, additional tool '
        "calls] if you call more than one tool. If you call tools, do not attempt to interpret them or otherwise provide "
        "a response until you receive a tool call result that you can interpret for the user."
        "You are a helpful assistant.[/SYSTEM_PROMPT]"
        "[INST]What's the weather in Paris?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS] {"content": {"temperature": 22, "unit": "celsius"}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
        "It is 22 °C in Paris.</s>"
        '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a '
        'city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]'
        "[/AVAILABLE_TOOLS][INST]Should I take a coat?[/INST]"
    )


def test_small_32_golden(pinned):
    text = render(pinned, SMALL32.meta, [SYSTEM_AND_USER[0], *TWO_CALLS[1:5]], TOOLS)
    assert text == (
        "[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT]"
        "[AVAILABLE_TOOLS]" + json.dumps(TOOLS, ensure_ascii=False) + "[/AVAILABLE_TOOLS]"
        "[INST]Weather and time?[/INST]"
        '[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_time[CALL_ID]xyz789ABC[ARGS]{"tz": "Europe/Paris"}</s>'
        '[TOOL_RESULTS]abcDEF123[TOOL_CONTENT]{"temperature": 22}[/TOOL_RESULTS]'
        "[TOOL_RESULTS]xyz789ABC[TOOL_CONTENT]12:00[/TOOL_RESULTS]"
    )


def test_magistral_golden(pinned):
    prompt = prompt_for(pinned, MAGISTRAL.meta, TWO_CALLS[:5], TOOLS)
    assert prompt.text == (
        "[SYSTEM_PROMPT]Use tools.[/SYSTEM_PROMPT]"
        "[AVAILABLE_TOOLS]" + json.dumps(TOOLS, ensure_ascii=False) + "[/AVAILABLE_TOOLS]"
        "[INST]Weather and time?[/INST]"
        'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"tz": "Europe/Paris"}</s>'
        '[TOOL_RESULTS]{"temperature": 22}[/TOOL_RESULTS][TOOL_RESULTS]12:00[/TOOL_RESULTS]'
    )
    assert prompt.tools_rendered is True
    assert prompt.reasoning == ReasoningSyntax("[THINK]", "[/THINK]", close="[/THINK]")
    default = render(pinned, MAGISTRAL.meta, [MULTI_TURN[0]])
    assert default == (
        "[SYSTEM_PROMPT]First draft your thinking process (inner monologue) until you arrive at a response. Format your "
        "response using Markdown, and use LaTeX for any mathematical equations. Write both your thoughts and the "
        "response in the same language as the input.\n\nYour thinking process must follow the template below:[THINK]"
        "Your thoughts or/and draft, like working through an exercise on scratch paper. Be as casual and as long as you "
        "want until you are confident to generate the response. Use the same language as the input.[/THINK]Here, "
        "provide a self-contained response.[/SYSTEM_PROMPT][INST]Hi[/INST]"
    )


def test_ministral_and_devstral_golden(pinned):
    assert render(pinned, MINISTRAL.meta, [MULTI_TURN[0]]).startswith(
        "[SYSTEM_PROMPT]# HOW YOU SHOULD THINK AND ANSWER\n\nFirst draft your thinking process"
    )
    devstral = render(pinned, DEVSTRAL.meta, [MULTI_TURN[0]])
    assert devstral.startswith("[SYSTEM_PROMPT]You are Devstral, a helpful agentic model trained by Mistral AI")
    assert "don't try to fix the problem" in devstral  # the template's \' escapes
    assert devstral.endswith("</TROUBLESHOOTING>[/SYSTEM_PROMPT][INST]Hi[/INST]")
    assert prompt_for(pinned, DEVSTRAL.meta, MULTI_TURN).reasoning is None


V7_MODELS = [*MISTRAL_V7, NEMO]


def v7_cases():
    for published_model in V7_MODELS:
        chats = [*TEXT_CHATS, "call-result-answer"] if published_model is NEMO else [*TEXT_CHATS, *V7_CONVERSATIONS]
        for chat in chats:
            messages = TEXT_CHATS.get(chat) or V7_CONVERSATIONS[chat]
            for tools_id, tools in (("no-tools", []), ("one-tool", [WEATHER_TOOL]), ("two-tools", TOOLS)):
                yield pytest.param(published_model, messages, tools, id=f"{published_model.variant}-{chat}-{tools_id}")


# Nemo's template with tool conversations beyond one call: the v3/tekken departures the module documents
@pytest.mark.parametrize("published_model,messages,tools", list(v7_cases()))
def test_v7_prompts_equal_the_published_templates(pinned, published_model, messages, tools):
    expected = reference(published_model, messages, tools)
    prompt = prompt_for(pinned, published_model.meta, messages, tools)
    assert prompt.text == expected.text
    assert prompt.tools_rendered is bool(tools)
    assert not expected.text.startswith("<s>")  # the tokenizer adds it


@pytest.mark.parametrize("published_model", MISTRAL_V7, ids=lambda p: p.variant)
def test_a_later_system_message_keeps_its_place(pinned, published_model):
    text = render(pinned, published_model.meta, LATER_SYSTEM)
    assert text.endswith("</s>[SYSTEM_PROMPT]Be kind.[/SYSTEM_PROMPT][INST]Name a colour.[/INST]")
    if published_model in (DEVSTRAL, MAGISTRAL):  # the others' templates refuse it
        assert text == reference(published_model, LATER_SYSTEM).text
    else:
        with pytest.raises(InvalidRequest):
            reference(published_model, LATER_SYSTEM)


def test_tools_are_rendered_only_where_the_template_renders_them(pinned):
    # a [SYSTEM_PROMPT] template without [AVAILABLE_TOOLS], and v1: ggufd's generic instruction instead
    for meta in (metadata(V7_TEMPLATE), V1):
        prompt = prompt_for(pinned, meta, MULTI_TURN, TOOLS)
        assert prompt.tools_rendered is False and "AVAILABLE_TOOLS" not in prompt.text
    # v3 and tekken: before the last user message, in the templates' hand-written JSON
    v3 = render(pinned, V3, MULTI_TURN, [TIME_TOOL])
    assert v3.endswith(
        '</s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_time", "description": "Time "now", café", '
        '"parameters": {"type": "object", "properties": {}}}}][/AVAILABLE_TOOLS][INST] Name a colour.[/INST]'
    )
    assert render(pinned, TEKKEN, MULTI_TURN, [TIME_TOOL]) == render(pinned, NEMO.meta, MULTI_TURN, [TIME_TOOL])


def test_the_profile_follows_the_template_markers(mistral):
    profiles = {p.variant: mistral.profile(p.source) for p in MISTRAL_V7}
    assert {
        v: (p.calls, p.results, p.tools, p.space, p.hand_written_tools, p.keep_content) for v, p in profiles.items()
    } == {
        "mistral-small-3.1-24b-instruct-2503": ("list", "json", "last_user", " ", True, False),
        "mistral-small-3.2-24b-instruct-2506": ("call_id", "call_id", "last_user", "", False, False),
        "devstral-small-2507": ("args", "plain", "start", "", False, True),
        "magistral-small-2509": ("args", "plain", "start", "", False, True),
        "ministral-3-14b-reasoning-2512": ("args", "plain", "start", "", False, True),
    }
    assert [p.reasoning is not None for p in profiles.values()] == [False, False, False, True, True]
    assert profiles["mistral-small-3.1-24b-instruct-2503"].tool_instruction.startswith("You are a helpful assistant")
    assert profiles["mistral-small-3.1-24b-instruct-2503"].instruction_separator == ""  # its "\<newline>" twice
    assert "{today}" in profiles["mistral-small-3.2-24b-instruct-2506"].default_system
    assert mistral.profile(V7_TEMPLATE).default_system is None and mistral.profile(V7_TEMPLATE).tools is None
    # Magistral Small 2506 taught <think> tags in its system prompt
    think_tags = MAGISTRAL_2509_TEMPLATE.replace("[THINK]", "<think>").replace("[/THINK]", "</think>")
    assert mistral.profile(think_tags).reasoning == ReasoningSyntax("<think>", "</think>")
    assert mistral.style(MAGISTRAL.meta) == "v7" and mistral.style(V3) == "v3"


def test_the_default_system_prompt_is_read_as_jinja_reads_it(mistral):
    template_string = mistral._template_string
    assert (
        template_string("{%- set default_system_message = 'a\\'b\\n\"c\"' %}", "default_system_message") == 'a\'b\n"c"'
    )
    assert template_string('{% set default_system_message = "x {y} " + today + "." -%}', "default_system_message") == (
        "x {{y}} {today}."
    )
    assert template_string("{%- set default_system_message = '' %}", "default_system_message") is None
    assert template_string("{{ messages }}", "default_system_message") is None
    assert template_string("{% set default_system_message = 'caf\\u00e9 é' %}", "default_system_message") == "café é"


def test_call_ids_are_nine_characters(pinned):
    calls = [
        {"id": "call_0123456789abcdef", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"id": "c1", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        {"type": "function", "function": {"name": "c", "arguments": "{}"}},
    ]
    messages = [
        MULTI_TURN[0],
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_0123456789abcdef", "content": "1"},
        {"role": "tool", "content": "2"},  # no id: the next call still waiting, "c1"
        {"role": "tool", "content": "3"},
    ]
    assert render(pinned, SMALL32.meta, messages).endswith(
        "[INST]Hi[/INST]"
        "[TOOL_CALLS]a[CALL_ID]789abcdef[ARGS]{}[TOOL_CALLS]b[CALL_ID]0000000c1[ARGS]{}"
        "[TOOL_CALLS]c[CALL_ID]000000002[ARGS]{}</s>"
        "[TOOL_RESULTS]789abcdef[TOOL_CONTENT]1[/TOOL_RESULTS][TOOL_RESULTS]0000000c1[TOOL_CONTENT]2[/TOOL_RESULTS]"
        "[TOOL_RESULTS]000000002[TOOL_CONTENT]3[/TOOL_RESULTS]"
    )


def test_v7_needs_a_user_message(pinned):
    with pytest.raises(InvalidRequest) as info:
        render(pinned, MAGISTRAL.meta, [{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


def test_v7_detection(mistral, pm):
    for published_model in MISTRAL_V7:
        for arch in ("llama", "mistral", "mistral3", "mistral4", "deepseek2"):
            meta = metadata(published_model.source, architecture=arch, name=None)
            assert mistral.detect_family(metadata=meta, spec=model_spec()) == "mistral"
            assert pm.hook.detect_family(metadata=meta, spec=model_spec()) == "mistral"
    # Mistral 7B v0.3 stays what it was
    assert mistral.style(V3) == "v3" and mistral.model_profile(model(meta=V3)) is None


# --------------------------------------------------------------------------- v7: reasoning

THOUGHT = "[THINK]The user greets me. I greet back.[/THINK]Hello!"


def run_filter(answer, pieces):
    content, reasoning = [], []
    for piece in pieces:
        c, r = answer.feed(piece)
        content.append(c)
        reasoning.append(r)
    c, r = answer.finish()
    return "".join(content) + c, "".join(reasoning) + r


def test_think_reasoning_is_split_off(pinned, pm):
    prompt = prompt_for(pinned, MAGISTRAL.meta, MULTI_TURN)
    expected = ("Hello!", "The user greets me. I greet back.")
    answer = pinned.answer_filter(model=model(meta=MAGISTRAL.meta), prompt=prompt)
    assert run_filter(answer, [THOUGHT]) == expected
    for at in range(len(THOUGHT) + 1):
        fresh = pm.answer_filter(model(meta=MAGISTRAL.meta), prompt)
        assert run_filter(fresh, [THOUGHT[:at], THOUGHT[at:]]) == expected, at
    assert run_filter(pm.answer_filter(model(meta=MAGISTRAL.meta), prompt), list(THOUGHT)) == expected
    # a budget spent: the engine makes the model write the close, the answer follows
    cut = "[THINK]Let me think about this for" + prompt.reasoning.closing_text + "Hi."
    assert run_filter(pm.answer_filter(model(meta=MAGISTRAL.meta), prompt), [cut]) == (
        "Hi.",
        "Let me think about this for",
    )


def test_the_answer_filter_leaves_other_answers_alone(pinned, pm):
    for meta in (V3, SMALL32.meta, MAGISTRAL.meta):
        for text in ("Hello!", " [TOOL_CALLS][]", "[TH", "", "[INST] text"):
            prompt = prompt_for(pinned, meta, MULTI_TURN)
            assert run_filter(pm.answer_filter(model(meta=meta), prompt), [text]) == (text, "")
    assert pinned.answer_filter(model=model(family="chatml"), prompt=ChatPrompt("")) is None


# --------------------------------------------------------------------------- v7: tool calls in answers


def v7_calls(mistral, text, meta=MAGISTRAL.meta):
    return mistral.parse_tool_calls(model=model(meta=meta), text=text)


def named(calls):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


@pytest.mark.parametrize(
    "text,expected",
    [
        ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', [("get_weather", '{"city": "Paris"}')]),
        (
            'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
            [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")],
        ),
        ('[TOOL_CALLS]get_weather[ARGS] {"city":"Paris"}\n', [("get_weather", '{"city":"Paris"}')]),
        ('[TOOL_CALLS]get_weather{"city": "Paris"}', [("get_weather", '{"city": "Paris"}')]),  # [ARGS] not rendered
        (
            '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            [("get_weather", '{"city": "Paris"}')],
        ),
        (
            '[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": [1]}}]',
            [("a", "{}"), ("b", '{"x": [1]}')],
        ),
        (
            '[THINK]I could write [TOOL_CALLS]no[ARGS]{} here.[/THINK][TOOL_CALLS]get_time[ARGS]{"tz": "CET"}',
            [("get_time", '{"tz": "CET"}')],
        ),
        ('[TOOL_CALLS]get_weather[ARGS]{"q": "[x] {y}"}', [("get_weather", '{"q": "[x] {y}"}')]),
    ],
    ids=[
        "one",
        "text-and-two",
        "spaces",
        "no-args-token",
        "list",
        "list-two",
        "after-reasoning",
        "brackets-in-strings",
    ],
)
def test_parse_v7_calls(mistral, text, expected):
    calls = v7_calls(mistral, text)
    assert named(calls) == expected
    assert all(c["type"] == "function" and len(c["id"]) == 9 and c["id"].isalnum() for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


def test_parse_v7_keeps_the_models_ids(mistral):
    assert [c["id"] for c in v7_calls(mistral, "[TOOL_CALLS]get_time[CALL_ID]abcDEF123[ARGS]{}", SMALL32.meta)] == [
        "abcDEF123"
    ]
    listed = '[TOOL_CALLS][{"name": "a", "arguments": {}, "id": "xyz789ABC"}]'
    assert [c["id"] for c in v7_calls(mistral, listed, SMALL31.meta)] == ["xyz789ABC"]


def test_parse_v7_what_it_renders(pinned):
    for published_model in MISTRAL_V7:
        text = render(pinned, published_model.meta, TWO_CALLS[:3])
        answer = text.rpartition("[/INST]")[2].removesuffix("</s>")
        assert named(v7_calls(pinned, answer, published_model.meta)) == [
            ("get_weather", '{"city": "Paris"}'),
            ("get_time", '{"tz": "Europe/Paris"}'),
        ], published_model.variant


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris is the capital of France.",
        '{"name": "f", "arguments": {}}',
        "[TOOL_CALLS]",
        "[TOOL_CALLS]get_weather",
        "[TOOL_CALLS]get_weather[ARGS]",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Par',
        "[TOOL_CALLS]get_weather[ARGS][1, 2]",
        '[TOOL_CALLS]get weather[ARGS]{"city": "Paris"}',
        '[TOOL_CALLS][ARGS]{"city": "Paris"}',
        '[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[ARGS]{"x": ',
        "[TOOL_CALLS] []",
        "[THINK][TOOL_CALLS]a[ARGS]{}[/THINK]The answer.",
        "[TOOL_CALLS]" + "{" * 100_000,
    ],
    ids=lambda text: repr(text[:40]),
)
def test_no_v7_tool_call(mistral, text):
    assert v7_calls(mistral, text) is None


# streaming: the same content and calls however the text is split

STREAMED = [
    'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": [1, 2]}[TOOL_CALLS]get_time[ARGS]{}',
    '[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS] {"city": "[TOOL"}',
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"[TOOL_CALLS]get_time[ARGS]{"tz": "CET"}',
    'Text [TOOL_CALLS] not a call, and [TOOL_CALLS]unknown_tool[ARGS]{"a": 1} then [TOOL_CALLS]get_time[ARGS]{}',
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    "[TOOL_CALLS][not json",
    "Plain text with [brackets] and [TOOL_CALL",
    '[TOOL_CALLS]get_weather{"city": "Rome"} and after.',
    '[TOOL_CALLS]get_weather[ARGS]{"q": "a\\"}[TOOL_CALLS]b"}',
    "[TOOL_CALLS]get_weather[ARGS]",
    "",
]


def stream(mistral, pieces, meta=MAGISTRAL.meta, tools=TOOLS):
    calls = mistral.tool_call_stream(model=model(meta=meta), tools=tools)
    out = []
    for piece in pieces:
        out.extend(calls.feed(piece))
    out.extend(calls.finish())
    return out


def assembled(pieces):
    """(content, [(name, arguments)], number of argument pieces) from a stream's output."""
    content, found, deltas = [], {}, 0
    for piece in pieces:
        if isinstance(piece, str):
            content.append(piece)
            continue
        entry = found.setdefault(piece.index, [None, ""])
        if piece.name is not None:
            assert entry[0] is None and piece.id, piece  # the header comes once, first, with an id
            entry[0] = piece.name
        else:
            assert entry[0] is not None, piece
        entry[1] += piece.arguments
        deltas += bool(piece.arguments)
    assert sorted(found) == list(range(len(found)))
    return "".join(content), [tuple(found[index]) for index in sorted(found)], deltas


@pytest.mark.parametrize("text", STREAMED, ids=lambda text: repr(text[:40]))
def test_the_stream_does_not_depend_on_the_split(mistral, text):
    content, calls, _ = assembled(stream(mistral, [text]))
    for at in range(len(text) + 1):
        assert assembled(stream(mistral, [text[:at], text[at:]]))[:2] == (content, calls), at
    assert assembled(stream(mistral, list(text)))[:2] == (content, calls)
    rng = random.Random(text)
    for _ in range(50):
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(1, 6)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert assembled(stream(mistral, pieces))[:2] == (content, calls), pieces


def test_what_the_stream_finds(mistral):
    found = [assembled(stream(mistral, [text]))[:2] for text in STREAMED]
    assert found == [
        ("Let me check.", [("get_weather", '{"city": "Paris", "days": [1, 2]}'), ("get_time", "{}")]),
        ("", [("get_weather", '{"city": "[TOOL"}')]),
        ("", [("get_weather", '{"city": "Paris"'), ("get_time", '{"tz": "CET"}')]),  # cut short by the next call
        ('Text [TOOL_CALLS] not a call, and [TOOL_CALLS]unknown_tool[ARGS]{"a": 1} then ', [("get_time", "{}")]),
        ("", [("get_weather", '{"city": "Paris"}')]),
        ("[TOOL_CALLS][not json", []),
        ("Plain text with [brackets] and [TOOL_CALL", []),
        (" and after.", [("get_weather", '{"city": "Rome"}')]),
        ('[TOOL_CALLS]b"}', [("get_weather", '{"q": "a\\"}')]),
        ("", [("get_weather", "")]),
        ("", []),
    ]


def test_arguments_stream_as_they_are_written(mistral):
    text = STREAMED[0]
    pieces = stream(mistral, list(text))
    _, calls, deltas = assembled(pieces)
    assert deltas > 10  # one piece per character, not one at the end
    header = next(p for p in pieces if not isinstance(p, str))
    assert header.name == "get_weather" and header.arguments == "" and len(header.id) == 9
    model_id = next(p for p in stream(mistral, [STREAMED[1]]) if not isinstance(p, str))
    assert model_id.id == "abcDEF123"  # the model's own [CALL_ID]


def test_stream_and_parse_agree(mistral):
    for text in STREAMED[:2] + STREAMED[4:5] + STREAMED[7:8]:
        _, calls, _ = assembled(stream(mistral, [text]))
        assert calls == named(v7_calls(mistral, text)), text


def test_tool_call_stream_only_for_v7(mistral, pm):
    assert mistral.tool_call_stream(model=model(meta=V3), tools=TOOLS) is None
    assert mistral.tool_call_stream(model=model(family="chatml", meta=MAGISTRAL.meta), tools=TOOLS) is None
    # no [AVAILABLE_TOOLS] in the template: ggufd's generic JSON call, found by its default stream
    assert mistral.tool_call_stream(model=model(meta=metadata(V7_TEMPLATE)), tools=TOOLS) is None
    through_pm = pm.tool_call_stream(model(meta=MAGISTRAL.meta), TOOLS)
    assert type(through_pm).__name__ == "MistralCalls"
    assert pm.tool_call_openers(model(meta=MAGISTRAL.meta)) == ("[TOOL_CALLS]",)


# --------------------------------------------------------------------------- v7: a real GGUF


def test_a_magistral_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    gguf_factory.write_tiny_llama(
        folder / "Magistral-Small-2509-Q4_K_M.gguf", chat_template=MAGISTRAL_2509_TEMPLATE, name="Magistral Small 2509"
    )
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    info = build_registry(config, pm).get("Magistral-Small-2509-Q4_K_M")
    assert info.family == "mistral"
    for messages in [*TEXT_CHATS.values(), *V7_CONVERSATIONS.values()]:
        for tools in ([], TOOLS):
            prompt = pm.format_chat(info, messages, tools)
            expected = gguf_template.format_chat(model=info, messages=hf_messages(messages), template_kwargs={})
            if tools:
                expected = render_template(MAGISTRAL_2509_TEMPLATE, hf_messages(messages), info.metadata, tools=tools)
            assert prompt.text == expected.text
            assert prompt.tools_rendered is bool(tools) and prompt.reasoning is not None
