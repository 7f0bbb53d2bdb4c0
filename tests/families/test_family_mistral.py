"""The mistral family plugin (ggufd/families/mistral.py): golden prompts byte for byte in the v3, tekken
and v1 spacings, cross-checks with tool calls against the templates Mistral publishes
(Mistral-7B-Instruct-v0.3, Mistral-Nemo-Instruct-2407; the plain chats, v0.1 included, are in
test_family_contract.py), family detection, and the ``[TOOL_CALLS]`` syntax."""

from __future__ import annotations

import gguf_factory
import pytest
from family_kit import MISTRAL, MISTRAL_TEKKEN_PRE, MISTRAL_V3_TEMPLATE, TEXT_CHATS, hf_messages, published

from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec
from ggufd.types import ChatPrompt, ModelSpec

LLAMA2_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\\n{{ m['content'] }}\\n<</SYS>>\\n\\n{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}"
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


def render(mistral, meta, messages) -> str:
    return mistral.format_chat(model=model(meta=meta), messages=messages).text


# --------------------------------------------------------------------------- golden prompts: v3


def test_v3_system_and_user(mistral):
    prompt = mistral.format_chat(model=model(), messages=SYSTEM_AND_USER)
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
    assert mistral.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False


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
    # other [INST] formats: Llama 2 (<<SYS>>) and Mistral's v7 ([SYSTEM_PROMPT]) are not this format
    for template in (LLAMA2_TEMPLATE, V7_TEMPLATE):
        assert mistral.detect_family(metadata=metadata(template), spec=model_spec()) is None
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
    assert pm.hook.detect_family(metadata=metadata(V7_TEMPLATE), spec=model_spec()) == "gguf-template"
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
