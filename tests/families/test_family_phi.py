"""The phi plugin (ggufd/families/phi.py): golden prompts byte for byte for the Phi-3, Phi-4 and Phi-4-mini
styles, a cross-check against Microsoft's published templates, family detection (and staying
out of other families' way), stop strings, and no tool-call syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

import gguf_factory
from ggufd.chat_template import render_chat_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata, read_metadata
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

REPO = Path(__file__).resolve().parents[2]

# microsoft/Phi-3.5-mini-instruct, tokenizer_config.json (as in llama.cpp's models/templates/).
PHI35_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# microsoft/phi-4, tokenizer_config.json.
PHI4_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}"
    "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)
# microsoft/Phi-4-mini-instruct, tokenizer_config.json.
PHI4_MINI_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}"
    "{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
TEMPLATES = {"phi3": PHI35_TEMPLATE, "phi4": PHI4_TEMPLATE, "phi4-mini": PHI4_MINI_TEMPLATE}

# Fingerprints of the other families' templates (the markers their plugins and ours look at).
QWEN_TEMPLATE = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}<tool_call>"
LLAMA3_TEMPLATE = "{% for m in messages %}{{'<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>'}}{% endfor %}"
GEMMA_TEMPLATE = "{% for m in messages %}{{'<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n'}}{% endfor %}"
OTHER_FAMILIES = [
    ("qwen2", "Qwen2.5 7B Instruct", QWEN_TEMPLATE),
    ("llama", "Meta Llama 3.1 8B Instruct", LLAMA3_TEMPLATE),
    ("gemma3", "Gemma 3 4b It", GEMMA_TEMPLATE),
    ("gemma3", "Gemma 3 270m", None),
]

SYSTEM_AND_USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
]


def metadata(architecture: str = "phi3", template: str | None = None, name: str | None = "Phi 3.5 Mini Instruct", add_bos: bool | None = None) -> GGUFMetadata:
    values = {"general.architecture": architecture}
    if name is not None:
        values["general.name"] = name
    if template is not None:
        values["tokenizer.chat_template"] = template
    if add_bos is not None:
        values["tokenizer.ggml.add_bos_token"] = add_bos
    return GGUFMetadata(version=3, tensor_count=0, values=values, array_lengths={}, bos_token="<s>", eos_token="<|endoftext|>")


def model(family: str = "phi", meta: GGUFMetadata | None = None, file_name: str = "model.gguf") -> ModelInfo:
    return ModelInfo(
        spec=ModelSpec(id=file_name[: -len(".gguf")], path=Path("/models") / file_name),
        metadata=meta or metadata(),
        family=family,
    )


def styled(style: str) -> ModelInfo:
    return model(meta=metadata(template=TEMPLATES[style], name=None))


@pytest.fixture(scope="module")
def phi(pm):
    plugin = pm.manager.get_plugin("phi")
    assert plugin is not None, "ggufd/families/phi.py was not loaded"
    assert Path(plugin.__file__) == REPO / "ggufd" / "families" / "phi.py"
    return plugin


# --------------------------------------------------------------------------- golden prompts


def test_phi3_system_and_user(phi):
    prompt = phi.format_chat(model=model(), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text="<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
        stop=("<|end|>",),
        add_bos=True,
    )


def test_phi3_multi_turn(phi):
    prompt = phi.format_chat(model=model(), messages=MULTI_TURN)
    assert prompt.text == (
        "<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nName a colour.<|end|>\n"
        "<|assistant|>\n"
    )


def test_phi3_leaves_out_an_empty_system_message(phi):
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    assert phi.format_chat(model=model(), messages=messages).text == "<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_phi4_system_and_user(phi):
    prompt = phi.format_chat(model=styled("phi4"), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text="<|im_start|>system<|im_sep|>You are terse.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>",
        stop=("<|im_end|>",),
        add_bos=True,
    )


def test_phi4_multi_turn(phi):
    prompt = phi.format_chat(model=styled("phi4"), messages=MULTI_TURN)
    assert prompt.text == (
        "<|im_start|>user<|im_sep|>Hi<|im_end|>"
        "<|im_start|>assistant<|im_sep|>Hello!<|im_end|>"
        "<|im_start|>user<|im_sep|>Name a colour.<|im_end|>"
        "<|im_start|>assistant<|im_sep|>"
    )


def test_phi4_mini_system_and_user(phi):
    prompt = phi.format_chat(model=styled("phi4-mini"), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(text="<|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>", stop=("<|end|>",), add_bos=True)


def test_phi4_mini_multi_turn(phi):
    prompt = phi.format_chat(model=styled("phi4-mini"), messages=MULTI_TURN)
    assert prompt.text == "<|user|>Hi<|end|><|assistant|>Hello!<|end|><|user|>Name a colour.<|end|><|assistant|>"


def test_contents_are_not_trimmed(phi):
    messages = [{"role": "user", "content": "  padded \n"}]
    assert phi.format_chat(model=model(), messages=messages).text == "<|user|>\n  padded \n<|end|>\n<|assistant|>\n"


def test_add_bos_follows_the_vocabulary(phi):
    assert phi.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False
    assert phi.format_chat(model=model(meta=metadata(add_bos=True)), messages=MULTI_TURN).add_bos is True


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "c1"}],
], ids=["tool_calls", "tool_result"])
def test_tool_messages_are_refused(phi, messages):
    with pytest.raises(InvalidRequest) as info:
        phi.format_chat(model=model(), messages=messages)
    assert info.value.status == 400 and info.value.param == "messages.1"


def test_only_a_system_message_is_rejected(phi):
    with pytest.raises(InvalidRequest) as info:
        phi.format_chat(model=model(), messages=[{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


def test_other_families_are_left_to_other_plugins(phi):
    assert phi.format_chat(model=model(family="gguf-template"), messages=MULTI_TURN) is None
    assert phi.stop_sequences(model=model(family="chatml")) is None


# --------------------------------------------------------------------------- Microsoft's templates


CROSS_CHECK = [
    [{"role": "user", "content": "Hi"}],
    SYSTEM_AND_USER,
    MULTI_TURN,
    [
        {"role": "system", "content": "Sys line 1\nSys line 2"},
        {"role": "user", "content": "  padded user text \n"},
        {"role": "assistant", "content": "\n answer with spaces  "},
        {"role": "user", "content": "multi\nline\n\ncontent"},
        {"role": "assistant", "content": "日本語 😀 café"},
        {"role": "user", "content": "<b>tags</b> & {{ braces }} {% not jinja %}"},
    ],
]


@pytest.mark.parametrize("style", sorted(TEMPLATES))
@pytest.mark.parametrize("messages", CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_microsofts_templates(phi, style, messages):
    meta = metadata(template=TEMPLATES[style], name=None)
    reference = render_chat_template(TEMPLATES[style], messages, meta)
    prompt = phi.format_chat(model=model(meta=meta), messages=messages)
    assert (prompt.text, prompt.add_bos) == (reference.text, reference.add_bos)


def test_phi35_template_drops_an_empty_system_message_like_the_plugin(phi):
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    meta = metadata(template=PHI35_TEMPLATE)
    assert phi.format_chat(model=model(meta=meta), messages=messages).text == render_chat_template(PHI35_TEMPLATE, messages, meta).text


def test_style_follows_the_template_fingerprint(phi):
    assert phi.prompt_style(metadata()) == "phi3"  # no template: Phi-3
    assert phi.prompt_style(metadata(template=PHI35_TEMPLATE)) == "phi3"
    assert phi.prompt_style(metadata(template=PHI35_TEMPLATE.replace("\\n", "\n"))) == "phi3"  # a real newline in the literal
    assert phi.prompt_style(metadata(template=PHI4_TEMPLATE)) == "phi4"
    assert phi.prompt_style(metadata(template=PHI4_MINI_TEMPLATE)) == "phi4-mini"
    # Phi-3-medium's template, with the newline as its own string
    medium = "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    assert phi.prompt_style(metadata(template=medium)) == "phi3"


# --------------------------------------------------------------------------- detection


def test_detect_family(phi):
    spec = model().spec
    assert phi.detect_family(metadata=metadata(), spec=spec) == "phi"  # phi3 without template
    for style, template in TEMPLATES.items():
        assert phi.detect_family(metadata=metadata(template=template), spec=spec) == "phi", style
    assert phi.detect_family(metadata=metadata("phimoe", PHI35_TEMPLATE, name="Phi 3.5 MoE Instruct"), spec=spec) == "phi"
    # Phi-2 is a base model without a chat format
    assert phi.detect_family(metadata=metadata("phi2", None, name="Phi2"), spec=spec) is None
    # a Phi-3 fine-tune in ChatML keeps its own template
    assert phi.detect_family(metadata=metadata("phi3", QWEN_TEMPLATE.replace("<tool_call>", ""), name="dolphin phi3"), spec=spec) is None
    # a "llamafied" Phi-4 is still Phi-4
    assert phi.detect_family(metadata=metadata("llama", PHI4_TEMPLATE, name="phi-4"), spec=spec) == "phi"


@pytest.mark.parametrize("architecture,name,template", OTHER_FAMILIES, ids=lambda v: str(v)[:12])
def test_other_families_are_not_claimed(phi, pm, architecture, name, template):
    meta = metadata(architecture, template, name=name)
    spec = model().spec
    assert phi.detect_family(metadata=meta, spec=spec) is None
    assert pm.hook.detect_family(metadata=meta, spec=spec) != "phi"


def test_through_the_plugin_manager(pm):
    spec = model().spec
    for template in (None, *TEMPLATES.values()):
        assert pm.hook.detect_family(metadata=metadata(template=template), spec=spec) == "phi"
    prompt = pm.hook.format_chat(model=styled("phi4"), messages=SYSTEM_AND_USER)
    assert prompt.text.startswith("<|im_start|>system<|im_sep|>")


def test_tiny_gguf_with_a_phi4_template(pm, tmp_path):
    path = gguf_factory.write_tiny_llama(tmp_path / "phi-4-llamafied.gguf", chat_template=PHI4_TEMPLATE, name="phi-4")
    meta = read_metadata(path)
    spec = ModelSpec(id="phi-4-llamafied", path=path)
    assert meta.architecture == "llama" and meta.chat_template == PHI4_TEMPLATE
    assert pm.hook.detect_family(metadata=meta, spec=spec) == "phi"
    info = ModelInfo(spec=spec, metadata=meta, family="phi")
    prompt = pm.hook.format_chat(model=info, messages=MULTI_TURN)
    assert prompt.text == render_chat_template(PHI4_TEMPLATE, MULTI_TURN, meta).text


# --------------------------------------------------------------------------- stops and tool calls


def test_stop_sequences(pm):
    def stops(info):
        return [s for answer in pm.hook.stop_sequences(model=info) for s in answer]

    assert {"<|end|>", "<|user|>", "<|endoftext|>"} <= set(stops(model()))
    assert {"<|end|>", "<|user|>", "<|endoftext|>"} <= set(stops(styled("phi4-mini")))
    assert "<|im_end|>" in stops(styled("phi4")) and "<|end|>" not in stops(styled("phi4"))
    for family in ("gguf-template", "generic", "gemma", "chatml"):
        assert "<|end|>" not in stops(model(family))


def test_no_tool_call_syntax(phi, pm):
    assert not hasattr(phi, "parse_tool_calls")
    text = '<|tool_call|>{"name": "f", "arguments": {}}<|/tool_call|>'
    assert pm.hook.parse_tool_calls(model=model(), text=text) is None
