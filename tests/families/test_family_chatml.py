"""The chatml family plugin (ggufd/families/chatml.py): golden prompts byte for byte, a cross-check
against Qwen's published Qwen2.5 chat template with tool calls and tool results (the plain chats
are in test_family_contract.py), conservative family detection, and the Hermes-style
``<tool_call>`` syntax."""

from __future__ import annotations

import gguf
import gguf_factory
import pytest
from family_kit import (
    CHATML,
    QWEN3_CODER_TEMPLATE,
    QWEN3_TEMPLATE,
    QWEN25_TEMPLATE,
    QWEN35_TEMPLATE,
    TEXT_CHATS,
    hf_messages,
    published,
)

from ggufd.config import load_config
from ggufd.default_plugins import gguf_template
from ggufd.gguf_metadata import read_metadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry
from ggufd.testing import model_spec
from ggufd.types import ChatPrompt, ModelSpec

QWEN25 = published("chatml", "qwen2.5")

# The system-message part of Qwen3's template: no default system prompt.
QWEN3_TEMPLATE_HEAD = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}<tool_call>{%- endfor %}"""

# DeepSeek-R1-Distill-Qwen: a qwen2 architecture with DeepSeek's own format.
DEEPSEEK_TEMPLATE = "{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}{% endif %}{% endfor %}<｜Assistant｜>"
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
PLAIN_CHATML = gguf_factory.DEFAULT_CHAT_TEMPLATE
QWEN_DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
)

SYSTEM_AND_USER = TEXT_CHATS["system-and-user"]
MULTI_TURN = TEXT_CHATS["multi-turn"]
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris and in Rome?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 22}'},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 27}'},
    {"role": "user", "content": "Which is warmer?"},
]
metadata, model = CHATML.metadata, CHATML.model


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


@pytest.fixture(scope="module")
def chatml(pm):
    plugin = pm.manager.get_plugin("chatml")
    assert plugin is not None and plugin.__name__ == "ggufd.families.chatml"
    return plugin


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(chatml):
    prompt = chatml.format_chat(model=model(), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text=(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
        stop=("<|im_end|>",),
        add_bos=False,
    )


def test_multi_turn(chatml):
    prompt = chatml.format_chat(model=model(), messages=MULTI_TURN)
    assert prompt.text == (
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tool_calls_tool_results_and_follow_up(chatml):
    prompt = chatml.format_chat(model=model(), messages=TOOL_CONVERSATION)
    assert prompt.text == (
        "<|im_start|>user\nWhat's the weather in Paris and in Rome?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n"
        '<tool_response>\n{"temperature": 22}\n</tool_response>\n'
        '<tool_response>\n{"temperature": 27}\n</tool_response><|im_end|>\n'
        "<|im_start|>user\nWhich is warmer?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_text_before_a_tool_call_and_a_lone_tool_result(chatml):
    messages = [
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "now", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "x", "content": "12:00"},
    ]
    prompt = chatml.format_chat(model=model(), messages=messages)
    assert prompt.text == (
        "<|im_start|>user\nTime?<|im_end|>\n"
        '<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_contents_are_not_trimmed(chatml):
    prompt = chatml.format_chat(model=model(), messages=[{"role": "user", "content": "  spaced \n"}])
    assert prompt.text == "<|im_start|>user\n  spaced \n<|im_end|>\n<|im_start|>assistant\n"


def test_qwen25_default_system_prompt_comes_from_the_template(chatml):
    meta = metadata(QWEN25_TEMPLATE, name="Qwen2.5 7B Instruct", architecture="qwen2")
    prompt = chatml.format_chat(model=model(meta=meta), messages=MULTI_TURN)
    assert prompt.text == (
        QWEN_DEFAULT_SYSTEM
        + "<|im_start|>user\nHi<|im_end|>\n"
        + "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        + "<|im_start|>user\nName a colour.<|im_end|>\n"
        + "<|im_start|>assistant\n"
    )
    # an explicit system message replaces it
    assert chatml.format_chat(model=model(meta=meta), messages=SYSTEM_AND_USER).text.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user"
    )
    # Qwen3's template has no default system prompt, and neither has a model without a template
    for meta in (metadata(QWEN3_TEMPLATE_HEAD), metadata(None)):
        assert chatml.format_chat(model=model(meta=meta), messages=MULTI_TURN).text.startswith("<|im_start|>user\nHi")


def test_add_bos_follows_the_gguf(chatml):
    assert chatml.format_chat(model=model(meta=metadata(add_bos=True)), messages=MULTI_TURN).add_bos is True
    # without the key: a Qwen vocabulary has no BOS to add, others follow llama.cpp's default
    assert chatml.format_chat(model=model(meta=metadata(add_bos=None)), messages=MULTI_TURN).add_bos is False
    assert (
        chatml.format_chat(model=model(meta=metadata(add_bos=None, architecture="llama")), messages=MULTI_TURN).add_bos
        is True
    )


# --------------------------------------------------------------------------- Qwen's template


# the plain chats are checked for every family in test_family_contract.py
TOOL_CROSS_CHECK = [
    TOOL_CONVERSATION,
    [{"role": "system", "content": "Be brief."}]
    + TOOL_CONVERSATION
    + [
        {"role": "assistant", "content": "Rome."},
        {"role": "system", "content": "Late system note."},
        {"role": "user", "content": "Thanks"},
    ],
]


@pytest.mark.parametrize("messages", TOOL_CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_qwens_template(chatml, messages):
    assert chatml.format_chat(model=QWEN25.model(), messages=messages).text == QWEN25.reference(messages).text


# --------------------------------------------------------------------------- family and stops


def test_detect_family_positive(chatml):
    for arch in ("qwen2", "qwen2moe"):
        assert chatml.detect_family(metadata=metadata(name=None, architecture=arch), spec=model_spec()) == "chatml", (
            arch
        )
        assert (
            chatml.detect_family(metadata=metadata(QWEN25_TEMPLATE, name=None, architecture=arch), spec=model_spec())
            == "chatml"
        ), arch
    # a Qwen name on another architecture, with ChatML or without a template
    assert (
        chatml.detect_family(metadata=metadata(name="Qwen 1.5 7B Chat", architecture="llama"), spec=model_spec())
        == "chatml"
    )
    assert (
        chatml.detect_family(
            metadata=metadata(PLAIN_CHATML, name=None, architecture="llama"), spec=model_spec("qwen-finetune")
        )
        == "chatml"
    )
    # a ChatML template that speaks the <tool_call> dialect (Hermes 2 Pro on Llama 3)
    hermes = metadata(
        QWEN25_TEMPLATE.replace("You are Qwen, created by Alibaba Cloud. ", ""),
        name="Hermes 2 Pro Llama 3 8B",
        architecture="llama",
    )
    assert chatml.detect_family(metadata=hermes, spec=model_spec("Hermes-2-Pro-Llama-3-8B")) == "chatml"


def test_detect_family_negative(chatml, tiny_model):
    # a Llama 3 template is the llama3 family's, whatever the architecture
    for arch in ("llama", "qwen2"):
        assert (
            chatml.detect_family(
                metadata=metadata(LLAMA3_TEMPLATE, name="Llama 3 8B", architecture=arch), spec=model_spec()
            )
            is None
        )
    # a Qwen architecture with another format (DeepSeek-R1-Distill-Qwen)
    assert (
        chatml.detect_family(
            metadata=metadata(DEEPSEEK_TEMPLATE, name="DeepSeek R1 Distill Qwen 7B", architecture="qwen2"),
            spec=model_spec(),
        )
        is None
    )
    # a plain ChatML template on another architecture is left to ggufd's rendering of the template
    assert (
        chatml.detect_family(
            metadata=metadata(PLAIN_CHATML, name="tiny-llama", architecture="llama"), spec=model_spec("chatml")
        )
        is None
    )
    assert chatml.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None
    # Qwen3 and later are the qwen3 and qwen3-coder families' (their architectures, Qwen3's template,
    # Qwen's XML tool calls), whatever the name says
    for arch in ("qwen3", "qwen3moe", "qwen3next", "qwen35", "qwen35moe"):
        for template in (None, QWEN25_TEMPLATE, PLAIN_CHATML):
            assert chatml.detect_family(metadata=metadata(template, architecture=arch), spec=model_spec()) is None
    for template in (QWEN3_TEMPLATE, QWEN3_CODER_TEMPLATE, QWEN35_TEMPLATE):
        assert (
            chatml.detect_family(
                metadata=metadata(template, name="Qwen3 finetune", architecture="llama"), spec=model_spec()
            )
            is None
        )
    # other architectures and names
    for arch, name in (("llama", "Mistral 7B"), ("gemma3", "Gemma 3"), ("llama", None), (None, None)):
        assert chatml.detect_family(metadata=metadata(name=name, architecture=arch), spec=model_spec()) is None
    assert (
        chatml.detect_family(
            metadata=metadata("[INST] {{ messages }} [/INST] <|im_start|>", name="qwen-ish"), spec=model_spec()
        )
        is None
    )
    # Phi-4's <|im_start|>role<|im_sep|> is not ChatML
    phi4 = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + '<|im_end|>' }}{% endfor %}"
    assert chatml.detect_family(metadata=metadata(phi4, name="Phi 4", architecture="phi3"), spec=model_spec()) is None


def test_detection_through_the_plugin_manager(pm, tiny_model):
    llama3_meta = metadata(LLAMA3_TEMPLATE, name="Meta Llama 3 8B Instruct", architecture="llama", add_bos=True)
    assert pm.hook.detect_family(metadata=llama3_meta, spec=model_spec()) == "llama3"
    assert (
        pm.hook.detect_family(metadata=metadata(QWEN25_TEMPLATE, architecture="qwen2"), spec=model_spec()) == "chatml"
    )
    assert (
        pm.hook.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model))
        == "gguf-template"
    )


# --------------------------------------------------------------------------- tool calls


def calls(chatml, text):
    return chatml.parse_tool_calls(model=model(), text=text)


def test_parse_one_tool_call(chatml):
    assert calls(chatml, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>') == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]


def test_parse_several_tool_calls_with_text_around(chatml):
    text = (
        "<think>\nThe user wants two cities.\n</think>\n\nLet me look.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}}</tool_call>'
    )
    assert calls(chatml, text) == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Zürich", "days": [1, 2]}'},
        },
    ]


def test_what_the_plugin_renders_it_parses_back(chatml):
    prompt = chatml.format_chat(model=model(), messages=TOOL_CONVERSATION[:2])
    turn = prompt.text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = calls(chatml, turn)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in parsed] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in TOOL_CONVERSATION[1]["tool_calls"]
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris is the capital of France.",
        '{"name": "f", "arguments": {}}',
        '<tool_call>\n{"name": "f", "arguments": {}}',  # cut off before the end tag
        "<tool_call>\n</tool_call>",
        '<tool_call>\n{"name": "f", "arguments": {"city": "Par\n</tool_call>',
        '<tool_call>\n{"name": "f"}\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": "{}"}\n</tool_call>',
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n["f", {}]\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><tool_call>\nnot json\n</tool_call>',
        "<tool_call>" + "[" * 100_000 + "</tool_call>",
    ],
    ids=lambda text: repr(text[:40]),
)
def test_no_tool_call(chatml, text):
    assert calls(chatml, text) is None


# --------------------------------------------------------------------------- real GGUFs


def test_a_qwen_gguf_end_to_end(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(
        folder / "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        "qwen2",
        **{
            "general.name": "Qwen2.5 7B Instruct",
            "tokenizer.chat_template": QWEN25_TEMPLATE,
            "tokenizer.ggml.add_bos_token": False,
        },
    )
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(folder)})
    pm = make_plugin_manager(config)
    info = build_registry(config, pm).get("Qwen2.5-7B-Instruct-Q4_K_M")
    assert info.family == "chatml"
    for messages in [*TEXT_CHATS.values(), *TOOL_CROSS_CHECK]:
        prompt = pm.format_chat(model=info, messages=messages)
        # the family plugin and ggufd's rendering of the GGUF's own template agree
        assert (
            prompt.text
            == gguf_template.format_chat(model=info, messages=hf_messages(messages), template_kwargs={}).text
        )
        assert prompt.add_bos is False


def test_turn_markers_are_single_tokens_of_a_real_vocabulary(tmp_path, pm):
    llama_cpp = pytest.importorskip("llama_cpp")
    path = gguf_factory.write_tiny_llama(tmp_path / "tiny-qwen.gguf", name="tiny-qwen")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(tmp_path)})
    info = build_registry(config, pm).get("tiny-qwen")
    assert info.family == "chatml"  # by its name; the plain ChatML template alone would not be enough
    prompt = pm.format_chat(model=info, messages=TOOL_CONVERSATION)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        tokens = llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
    finally:
        llm.close()
    assert tokens.count(gguf_factory.IM_START_ID) == prompt.text.count("<|im_start|>") == 5
    assert tokens.count(gguf_factory.IM_END_ID) == prompt.text.count("<|im_end|>") == 4
