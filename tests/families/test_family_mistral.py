"""The mistral family plugin (ggufd/families/mistral.py): golden prompts byte for byte in the v3, tekken and v1
spacings, cross-checks against the templates Mistral publishes (Mistral-7B-Instruct-v0.3,
Mistral-Nemo-Instruct-2407, Mistral-7B-Instruct-v0.1), family detection, stop strings, and the
``[TOOL_CALLS]`` syntax."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gguf_factory
from ggufd.chat_template import render_chat_template
from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata, read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

# The chat_template of mistralai/Mistral-7B-Instruct-v0.3 (tokenizer_config.json), as published
# (the [AVAILABLE_TOOLS] block, which needs `tools`, is left out).
MISTRAL_V3_TEMPLATE = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# Mistral-Nemo-Instruct-2407 (tekken): the same template without the spaces.
MISTRAL_TEKKEN_TEMPLATE = (
    MISTRAL_V3_TEMPLATE.replace('"[INST] "', '"[INST]"')
    .replace('"[TOOL_CALLS] ["', '"[TOOL_CALLS]["')
    .replace('{{- " " + message["content"]|trim + eos_token}}', '{{- message["content"] + eos_token}}')
    .replace("'[TOOL_RESULTS] {\"content\": '", "'[TOOL_RESULTS]{\"content\": '")
)

# The chat_template of mistralai/Mistral-7B-Instruct-v0.1 (tokenizer_config.json), as published.
MISTRAL_V1_TEMPLATE = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

LLAMA2_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\\n{{ m['content'] }}\\n<</SYS>>\\n\\n{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}"
V7_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ m['content'] }}[/SYSTEM_PROMPT]{% else %}[INST]{{ m['content'] }}[/INST]{% endif %}{% endfor %}"

SYSTEM_AND_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a colour."},
]
CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 22, "unit": "celsius"}'},
    {"role": "assistant", "content": "It is 22 °C in Paris."},
    {"role": "user", "content": "Should I take a coat?"},
]
CALL_RESULT_FOLLOW_UP = TOOL_CONVERSATION[:3] + TOOL_CONVERSATION[4:]


def metadata(template: str | None = None, name: str | None = "Mistral 7B Instruct v0.3", architecture: str | None = "llama", add_bos: bool = True, pre: str | None = None) -> GGUFMetadata:
    values = {"tokenizer.ggml.add_bos_token": add_bos}
    for key, value in (("general.architecture", architecture), ("general.name", name), ("tokenizer.chat_template", template), ("tokenizer.ggml.pre", pre)):
        if value is not None:
            values[key] = value
    return GGUFMetadata(version=3, tensor_count=0, values=values, array_lengths={}, bos_token="<s>", eos_token="</s>")


V3 = metadata(MISTRAL_V3_TEMPLATE)
TEKKEN = metadata(MISTRAL_TEKKEN_TEMPLATE, name="Mistral Nemo Instruct 2407", pre="tekken")
V1 = metadata(MISTRAL_V1_TEMPLATE, name="Mistral 7B Instruct v0.1")


def spec(file_name: str = "model.gguf") -> ModelSpec:
    return ModelSpec(id=file_name[: -len(".gguf")], path=Path("/models") / file_name)


def model(family: str = "mistral", meta: GGUFMetadata | None = None, file_name: str = "model.gguf") -> ModelInfo:
    return ModelInfo(spec=spec(file_name), metadata=meta or V3, family=family)


def hf_messages(messages):
    """The same chat as Hugging Face templates expect it: tool-call arguments as objects."""
    result = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        result.append(message)
    return result


def official(meta: GGUFMetadata, messages) -> str:
    return render_chat_template(meta.chat_template, hf_messages(messages), meta).text


@pytest.fixture(scope="module")
def mistral(pm):
    plugin = pm.manager.get_plugin("mistral")
    assert plugin is not None, "ggufd/families/mistral.py was not loaded"
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
    messages = [{"role": "system", "content": "Be brief."}, *MULTI_TURN[:2], {"role": "system", "content": "Be kind."}, MULTI_TURN[2]]
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
    messages = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "\n yes \n"}, {"role": "user", "content": "ok"}]
    assert render(mistral, V3, messages) == "[INST]  hi [/INST] yes</s>[INST] ok[/INST]"


# --------------------------------------------------------------------------- golden prompts: tekken and v1


def test_tekken(mistral):
    assert render(mistral, TEKKEN, SYSTEM_AND_USER) == "[INST]You are a helpful assistant.\n\nWhat is the capital of France?[/INST]"
    assert render(mistral, TEKKEN, MULTI_TURN) == "[INST]Hi[/INST]Hello! How can I help?</s>[INST]Name a colour.[/INST]"
    assert render(mistral, TEKKEN, TOOL_CONVERSATION) == (
        "[INST]What's the weather in Paris?[/INST]"
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS]{"content": {"temperature": 22, "unit": "celsius"}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
        "It is 22 °C in Paris.</s>"
        "[INST]Should I take a coat?[/INST]"
    )


def test_v1(mistral):
    assert render(mistral, V1, SYSTEM_AND_USER) == " [INST] You are a helpful assistant.\n\nWhat is the capital of France? [/INST]"
    assert render(mistral, V1, MULTI_TURN) == " [INST] Hi [/INST] Hello! How can I help?</s> [INST] Name a colour. [/INST]"
    # v1 puts the system prompt before the first user message
    messages = [{"role": "system", "content": "Be brief."}, *MULTI_TURN]
    assert render(mistral, V1, messages) == " [INST] Be brief.\n\nHi [/INST] Hello! How can I help?</s> [INST] Name a colour. [/INST]"


def test_v1_has_no_tool_calls(mistral):
    for messages in (TOOL_CONVERSATION, [MULTI_TURN[0], {"role": "tool", "tool_call_id": "x", "content": "1"}]):
        with pytest.raises(InvalidRequest) as info:
            render(mistral, V1, messages)
        assert info.value.status == 400 and info.value.param == "messages"


def test_the_style_is_picked_by_the_template_or_the_tokenizer(mistral):
    plugin_style = mistral.style
    assert plugin_style(V3) == "v3" and plugin_style(TEKKEN) == "tekken" and plugin_style(V1) == "v1"
    # without a template: tekken by its pre-tokenizer, else the v3 default
    assert plugin_style(metadata(None, pre="tekken")) == "tekken"
    assert plugin_style(metadata(None, pre="default")) == "v3"
    assert plugin_style(metadata(None)) == "v3"
    assert render(mistral, metadata(None, pre="tekken"), MULTI_TURN) == render(mistral, TEKKEN, MULTI_TURN)
    assert render(mistral, metadata(None), MULTI_TURN) == render(mistral, V3, MULTI_TURN)


def test_a_chat_needs_a_user_message(mistral):
    for messages in ([{"role": "system", "content": "x"}], [{"role": "assistant", "content": "x"}]):
        with pytest.raises(InvalidRequest) as info:
            render(mistral, V3, messages)
        assert info.value.status == 400 and info.value.param == "messages"


def test_add_bos_follows_the_gguf(mistral):
    assert mistral.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False


def test_other_families_are_left_to_other_plugins(mistral):
    for family in ("gguf-template", "llama3", "chatml", "gemma", "generic"):
        assert mistral.format_chat(model=model(family=family), messages=MULTI_TURN) is None
        assert mistral.stop_sequences(model=model(family=family)) is None
        assert mistral.parse_tool_calls(model=model(family=family), text='[TOOL_CALLS][{"name": "f", "arguments": {}}]') is None


# --------------------------------------------------------------------------- Mistral's templates


CROSS_CHECK = [
    [{"role": "user", "content": "Hi"}],
    SYSTEM_AND_USER,
    MULTI_TURN,
    [{"role": "system", "content": "Be brief."}, *MULTI_TURN],
    [
        {"role": "system", "content": "Sys line 1\nSys line 2"},
        {"role": "user", "content": "  padded user text \n"},
        {"role": "assistant", "content": "plain answer"},
        {"role": "user", "content": "multi\nline\n\ncontent"},
        {"role": "assistant", "content": "日本語 😀 café"},
        {"role": "user", "content": "<b>tags</b> & {{ braces }} {% not jinja %}"},
    ],
]
TOOL_CROSS_CHECK = [
    TOOL_CONVERSATION,
    [{"role": "system", "content": "Use tools."}] + TOOL_CONVERSATION,
    [
        TOOL_CONVERSATION[0],
        {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "xyz789ABC", "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'}}]},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 22}'},
        {"role": "tool", "tool_call_id": "xyz789ABC", "content": '"12:00"'},
        {"role": "assistant", "content": "Warm, noon."},
        {"role": "user", "content": "Thanks"},
    ],
]


@pytest.mark.parametrize("messages", CROSS_CHECK + TOOL_CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
@pytest.mark.parametrize("meta", [V3, TEKKEN], ids=["v0.3", "nemo"])
def test_plugin_matches_mistrals_templates(mistral, meta, messages):
    reference = official(meta, messages)
    assert not reference.startswith("<s>")  # the tokenizer adds it
    assert render(mistral, meta, messages) == reference


@pytest.mark.parametrize("messages", CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_mistrals_v1_template(mistral, messages):
    assert render(mistral, V1, messages) == official(V1, messages)


# --------------------------------------------------------------------------- family and stops


def test_detect_family_positive(mistral):
    for meta in (V3, TEKKEN, V1):
        assert mistral.detect_family(metadata=meta, spec=spec()) == "mistral"
    for arch in ("llama", "mistral", "mistral3"):
        assert mistral.detect_family(metadata=metadata(MISTRAL_V3_TEMPLATE, name=None, architecture=arch), spec=spec()) == "mistral"
        assert mistral.detect_family(metadata=metadata(None, name="Mixtral 8x7B Instruct v0.1", architecture=arch), spec=spec()) == "mistral"
    assert mistral.detect_family(metadata=metadata(None, name=None), spec=spec("mistral-7b-instruct-v0.2.Q4_K_M.gguf")) == "mistral"


def test_detect_family_negative(mistral, tiny_model):
    # other [INST] formats: Llama 2 (<<SYS>>) and Mistral's v7 ([SYSTEM_PROMPT]) are not this format
    for template in (LLAMA2_TEMPLATE, V7_TEMPLATE):
        assert mistral.detect_family(metadata=metadata(template), spec=spec()) is None
    # a Mistral fine-tune in ChatML (OpenHermes 2.5 Mistral) is not ours
    openhermes = metadata(gguf_factory.DEFAULT_CHAT_TEMPLATE, name="OpenHermes 2.5 Mistral 7B")
    assert mistral.detect_family(metadata=openhermes, spec=spec("openhermes-2.5-mistral-7b.gguf")) is None
    # other architectures, names
    for arch in ("qwen2", "gemma3", None):
        assert mistral.detect_family(metadata=metadata(MISTRAL_V3_TEMPLATE, architecture=arch), spec=spec()) is None
    assert mistral.detect_family(metadata=metadata(None, name="Meta Llama 3 8B"), spec=spec()) is None
    assert mistral.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None


def test_detection_through_the_plugin_manager(pm):
    assert pm.hook.detect_family(metadata=V3, spec=spec()) == "mistral"
    assert pm.hook.detect_family(metadata=metadata(V7_TEMPLATE), spec=spec()) == "gguf-template"
    assert pm.hook.detect_family(metadata=metadata(LLAMA2_TEMPLATE, name="Llama 2 7B Chat"), spec=spec()) == "gguf-template"


def test_stop_sequences(pm, mistral):
    assert mistral.stop_sequences(model=model()) == ["</s>", "[INST]"]
    stops = [s for answer in pm.hook.stop_sequences(model=model()) for s in answer]
    assert {"</s>", "[INST]"} <= set(stops)
    for family in ("gguf-template", "generic", "llama3", "chatml"):
        stops = [s for answer in pm.hook.stop_sequences(model=model(family)) for s in answer]
        assert "[INST]" not in stops


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
    gguf_factory.write_tiny_llama(folder / "Mistral-7B-Instruct-v0.3.Q4_K_M.gguf", chat_template=MISTRAL_V3_TEMPLATE, name="Mistral 7B Instruct v0.3")
    gguf_factory.write_tiny_llama(folder / "mixtral-no-template.gguf", chat_template=None, name="tiny")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    registry = build_registry(config, pm)
    info = registry.get("Mistral-7B-Instruct-v0.3.Q4_K_M")
    assert info.family == "mistral"
    assert registry.get("mixtral-no-template").family == "mistral"
    for messages in CROSS_CHECK + TOOL_CROSS_CHECK:
        prompt = pm.hook.format_chat(model=info, messages=messages)
        # the family plugin and ggufd's rendering of the GGUF's own template agree
        assert prompt.text == gguf_template.format_chat(model=info, messages=hf_messages(messages)).text
        assert prompt.add_bos is True and prompt.stop == ("</s>",)
