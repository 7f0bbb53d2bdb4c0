"""The llama3 family plugin (ggufd/families/llama3.py): golden prompts byte for byte, cross-checks against
Meta's published Llama 3 and Llama 3.1 chat templates, family detection, stop strings, and
the Llama 3.1 JSON tool-call syntax."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import gguf_factory
from ggufd.chat_template import render_chat_template
from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.gguf_metadata import GGUFMetadata, read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

# The chat_template of meta-llama/Meta-Llama-3-8B-Instruct (tokenizer_config.json), as published.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# The chat_template of meta-llama/Llama-3.1-8B-Instruct (tokenizer_config.json), as published.
LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
            {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

SYSTEM_AND_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a colour."},
]
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
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


def metadata(template: str | None = None, name: str | None = "Meta Llama 3.1 8B Instruct", architecture: str | None = "llama", add_bos: bool = True) -> GGUFMetadata:
    values = {"tokenizer.ggml.add_bos_token": add_bos}
    if architecture is not None:
        values["general.architecture"] = architecture
    if name is not None:
        values["general.name"] = name
    if template is not None:
        values["tokenizer.chat_template"] = template
    return GGUFMetadata(version=3, tensor_count=0, values=values, array_lengths={}, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def model(family: str = "llama3", meta: GGUFMetadata | None = None, file_name: str = "model.gguf") -> ModelInfo:
    return ModelInfo(
        spec=ModelSpec(id=file_name[: -len(".gguf")], path=Path("/models") / file_name),
        metadata=meta or metadata(),
        family=family,
    )


def spec(file_name: str = "model.gguf") -> ModelSpec:
    return ModelSpec(id=file_name[: -len(".gguf")], path=Path("/models") / file_name)


def hf_messages(messages):
    """The same chat as Hugging Face templates expect it: arguments and JSON tool results as objects
    (given as strings, the Llama 3.1 template would JSON-quote a tool result: strings are iterable)."""
    result = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        if message["role"] == "tool":
            message["content"] = json.loads(message["content"])
        result.append(message)
    return result


def official(template: str, messages) -> str:
    return render_chat_template(template, hf_messages(messages), metadata(template)).text


@pytest.fixture(scope="module")
def llama3(pm):
    plugin = pm.manager.get_plugin("llama3")
    assert plugin is not None, "ggufd/families/llama3.py was not loaded"
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
    assert prompt.text == (
        f"{H}system{E}Be brief.{EOT}{H}user{E}padded{EOT}{H}ipython{E} 42 \n{EOT}{GENERATION}"
    )


def test_several_tool_calls_are_joined_with_semicolons(llama3):
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    prompt = llama3.format_chat(model=model(), messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": calls}])
    body = '{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {}}'
    assert prompt.text == f"{H}user{E}go{EOT}{H}assistant{E}{body}{EOT}{GENERATION}"
    # what the plugin renders, it parses back
    parsed = llama3.parse_tool_calls(model=model(), text=body)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] == [("f", {"x": 1}), ("g", {})]


def test_unparsable_arguments_are_kept_as_a_json_string(llama3):
    calls = [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "not json"}}]
    prompt = llama3.format_chat(model=model(), messages=[{"role": "assistant", "content": "", "tool_calls": calls}])
    assert prompt.text == f'{H}assistant{E}{{"name": "f", "parameters": "not json"}}{EOT}{GENERATION}'


def test_add_bos_follows_the_gguf(llama3):
    assert llama3.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False


def test_other_families_are_left_to_other_plugins(llama3):
    for family in ("gguf-template", "chatml", "mistral", "gemma"):
        assert llama3.format_chat(model=model(family=family), messages=MULTI_TURN) is None
        assert llama3.stop_sequences(model=model(family=family)) is None
        assert llama3.parse_tool_calls(model=model(family=family), text='{"name": "f", "parameters": {}}') is None


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
        PREAMBLE + EOT
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
    assert any(prompt.text.startswith(f"{H}system{E}Cutting Knowledge Date: December 2023\nToday Date: {day}\n\n") for day in (before, after))
    assert prompt.text == official(template, SYSTEM_AND_USER) or before != after


# --------------------------------------------------------------------------- Meta's templates


TEXT_CHATS = [
    [{"role": "user", "content": "Hi"}],
    SYSTEM_AND_USER,
    MULTI_TURN,
    [
        {"role": "system", "content": "Sys line 1\nSys line 2  "},
        {"role": "user", "content": "  padded user text \n"},
        {"role": "assistant", "content": "\n answer with spaces  "},
        {"role": "user", "content": "multi\nline\n\ncontent"},
        {"role": "assistant", "content": "日本語 😀 café"},
        {"role": "user", "content": "<b>tags</b> & {{ braces }} {% not jinja %}"},
    ],
]


@pytest.mark.parametrize("messages", TEXT_CHATS, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_metas_llama3_template(llama3, messages):
    reference = official(LLAMA3_TEMPLATE, messages)
    assert not reference.startswith("<|begin_of_text|>")  # the tokenizer adds it
    assert llama3.format_chat(model=model(meta=metadata(LLAMA3_TEMPLATE)), messages=messages).text == reference


@pytest.mark.parametrize("messages", TEXT_CHATS + [TOOL_CONVERSATION], ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_metas_llama31_template(llama3, messages):
    reference = official(LLAMA31_TEMPLATE, messages)
    assert not reference.startswith("<|begin_of_text|>")
    assert llama3.format_chat(model=model(meta=metadata(LLAMA31_TEMPLATE)), messages=messages).text == reference


# --------------------------------------------------------------------------- family and stops


def test_detect_family_positive(llama3):
    # the template's header markers
    for template in (LLAMA3_TEMPLATE, LLAMA31_TEMPLATE):
        assert llama3.detect_family(metadata=metadata(template, name=None), spec=spec()) == "llama3"
    # without a template, the name or the file name
    for name in ("Meta Llama 3.1 8B Instruct", "Llama-3.2-1B-Instruct", "llama3-8b", "Llama 3.3 70B"):
        assert llama3.detect_family(metadata=metadata(name=name), spec=spec()) == "llama3", name
    assert llama3.detect_family(metadata=metadata(name=None), spec=spec("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf")) == "llama3"


def test_detect_family_negative(llama3, tiny_model):
    # another architecture, even with the llama 3 template or name
    for arch in ("qwen2", "gemma3", None):
        assert llama3.detect_family(metadata=metadata(LLAMA31_TEMPLATE, architecture=arch), spec=spec()) is None
    # a Llama 3 fine-tune whose own template is ChatML (Hermes 3) is not llama3
    hermes = metadata(gguf_factory.DEFAULT_CHAT_TEMPLATE, name="Hermes 3 Llama 3.1 8B")
    assert llama3.detect_family(metadata=hermes, spec=spec("Hermes-3-Llama-3.1-8B.gguf")) is None
    # Llama 1/2 names, other llama-architecture models
    for name in ("LLaMA 30B", "llama-33b", "Llama 2 7B Chat", "tiny-llama", "Mistral 7B Instruct v0.3"):
        assert llama3.detect_family(metadata=metadata(name=name), spec=spec()) is None, name
    assert llama3.detect_family(metadata=metadata("[INST] {{ messages }} [/INST]", name="Llama 3 lookalike"), spec=spec()) is None
    assert llama3.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None


def test_a_qwen_model_is_not_claimed(pm, llama3):
    qwen = metadata("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}", name="Qwen2.5 7B Instruct", architecture="qwen2")
    assert llama3.detect_family(metadata=qwen, spec=spec("Qwen2.5-7B-Instruct.gguf")) is None
    assert pm.hook.detect_family(metadata=qwen, spec=spec("Qwen2.5-7B-Instruct.gguf")) == "chatml"
    assert pm.hook.detect_family(metadata=metadata(LLAMA31_TEMPLATE), spec=spec()) == "llama3"


def test_stop_sequences(pm, llama3):
    assert llama3.stop_sequences(model=model()) == ["<|eot_id|>", "<|eom_id|>", "<|start_header_id|>"]
    stops = [s for answer in pm.hook.stop_sequences(model=model()) for s in answer]
    assert {"<|eot_id|>", "<|eom_id|>", "<|start_header_id|>"} <= set(stops)
    for family in ("gguf-template", "generic", "chatml"):
        stops = [s for answer in pm.hook.stop_sequences(model=model(family)) for s in answer]
        assert "<|eot_id|>" not in stops


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
    gguf_factory.write_tiny_llama(folder / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", chat_template=LLAMA31_TEMPLATE, name="Meta Llama 3.1 8B Instruct")
    gguf_factory.write_tiny_llama(folder / "llama-3-no-template.gguf", chat_template=None, name="tiny")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    registry = build_registry(config, pm)
    info = registry.get("Meta-Llama-3.1-8B-Instruct-Q4_K_M")
    assert info.family == "llama3"
    assert registry.get("llama-3-no-template").family == "llama3"
    prompt = pm.hook.format_chat(model=info, messages=TEXT_CHATS[3])
    # the family plugin and ggufd's rendering of the GGUF's own template agree
    assert prompt.text == gguf_template.format_chat(model=info, messages=TEXT_CHATS[3]).text
    assert prompt.add_bos is True and prompt.stop == ("<|eot_id|>", "<|eom_id|>")
