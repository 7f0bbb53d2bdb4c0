"""The phi plugin (ggufd/families/phi.py): golden prompts byte for byte for the Phi-3, Phi-4 and
Phi-4-mini styles (the plain chats against Microsoft's published templates are in
test_family_contract.py), the style fingerprints, family detection, and stop strings per style."""

from __future__ import annotations

import gguf_factory
import pytest
from family_kit import PHI, PHI4_MINI_TEMPLATE, PHI4_TEMPLATE, PHI35_TEMPLATE, TEXT_CHATS, published

from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.testing import render_template
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

TEMPLATES = {"phi3": PHI35_TEMPLATE, "phi4": PHI4_TEMPLATE, "phi4-mini": PHI4_MINI_TEMPLATE}
# A ChatML template (the marker the chatml plugin looks at, and ours must not).
QWEN_TEMPLATE = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}<tool_call>"

SYSTEM_AND_USER = TEXT_CHATS["terse-system"]
MULTI_TURN = TEXT_CHATS["short-multi-turn"]
metadata, model = PHI.metadata, PHI.model


def styled(style: str) -> ModelInfo:
    return published("phi", style).model()


@pytest.fixture(scope="module")
def phi(pm):
    plugin = pm.manager.get_plugin("phi")
    assert plugin is not None and plugin.__name__ == "ggufd.families.phi"
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
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nName a colour.<|end|>\n<|assistant|>\n"
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
    assert prompt == ChatPrompt(
        text="<|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>", stop=("<|end|>",), add_bos=True
    )


def test_phi4_mini_multi_turn(phi):
    prompt = phi.format_chat(model=styled("phi4-mini"), messages=MULTI_TURN)
    assert prompt.text == "<|user|>Hi<|end|><|assistant|>Hello!<|end|><|user|>Name a colour.<|end|><|assistant|>"


def test_contents_are_not_trimmed(phi):
    messages = [{"role": "user", "content": "  padded \n"}]
    assert phi.format_chat(model=model(), messages=messages).text == "<|user|>\n  padded \n<|end|>\n<|assistant|>\n"


def test_add_bos_follows_the_vocabulary(phi):
    assert phi.format_chat(model=model(meta=metadata(add_bos=False)), messages=MULTI_TURN).add_bos is False
    assert phi.format_chat(model=model(meta=metadata(add_bos=True)), messages=MULTI_TURN).add_bos is True


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
        ],
        [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "c1"}],
    ],
    ids=["tool_calls", "tool_result"],
)
def test_tool_messages_are_refused(phi, messages):
    with pytest.raises(InvalidRequest) as info:
        phi.format_chat(model=model(), messages=messages)
    assert info.value.status == 400 and info.value.param == "messages.1"


def test_only_a_system_message_is_rejected(phi):
    with pytest.raises(InvalidRequest) as info:
        phi.format_chat(model=model(), messages=[{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


# --------------------------------------------------------------------------- Microsoft's templates


# the plain chats are checked against each template for every family in test_family_contract.py


def test_phi35_template_drops_an_empty_system_message_like_the_plugin(phi):
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    meta = metadata(template=PHI35_TEMPLATE)
    assert (
        phi.format_chat(model=model(meta=meta), messages=messages).text
        == render_template(PHI35_TEMPLATE, messages, meta).text
    )


def test_style_follows_the_template_fingerprint(phi):
    assert phi.prompt_style(metadata()) == "phi3"  # no template: Phi-3
    assert phi.prompt_style(metadata(template=PHI35_TEMPLATE)) == "phi3"
    assert (
        phi.prompt_style(metadata(template=PHI35_TEMPLATE.replace("\\n", "\n"))) == "phi3"
    )  # a real newline in the literal
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
    assert (
        phi.detect_family(
            metadata=metadata(PHI35_TEMPLATE, architecture="phimoe", name="Phi 3.5 MoE Instruct"), spec=spec
        )
        == "phi"
    )
    # Phi-2 is a base model without a chat format
    assert phi.detect_family(metadata=metadata(None, architecture="phi2", name="Phi2"), spec=spec) is None
    # a Phi-3 fine-tune in ChatML keeps its own template
    assert (
        phi.detect_family(
            metadata=metadata(QWEN_TEMPLATE.replace("<tool_call>", ""), architecture="phi3", name="dolphin phi3"),
            spec=spec,
        )
        is None
    )
    # a "llamafied" Phi-4 is still Phi-4
    assert phi.detect_family(metadata=metadata(PHI4_TEMPLATE, architecture="llama", name="phi-4"), spec=spec) == "phi"


def test_through_the_plugin_manager(pm):
    spec = model().spec
    for template in (None, *TEMPLATES.values()):
        assert pm.hook.detect_family(metadata=metadata(template=template), spec=spec) == "phi"
    prompt = pm.format_chat(model=styled("phi4"), messages=SYSTEM_AND_USER)
    assert prompt.text.startswith("<|im_start|>system<|im_sep|>")


def test_tiny_gguf_with_a_phi4_template(pm, tmp_path):
    path = gguf_factory.write_tiny_llama(tmp_path / "phi-4-llamafied.gguf", chat_template=PHI4_TEMPLATE, name="phi-4")
    meta = read_metadata(path)
    spec = ModelSpec(id="phi-4-llamafied", path=path)
    assert meta.architecture == "llama" and meta.chat_template == PHI4_TEMPLATE
    assert pm.hook.detect_family(metadata=meta, spec=spec) == "phi"
    info = ModelInfo(spec=spec, metadata=meta, family="phi")
    prompt = pm.format_chat(model=info, messages=MULTI_TURN)
    assert prompt.text == render_template(PHI4_TEMPLATE, MULTI_TURN, meta).text


# --------------------------------------------------------------------------- stops and tool calls


def test_stop_sequences_follow_the_style(pm):
    # the Phi-3 style (model()) and the other families: test_family_contract.py
    def stops(info):
        return [s for answer in pm.hook.stop_sequences(model=info) for s in answer]

    assert {"<|end|>", "<|user|>", "<|endoftext|>"} <= set(stops(styled("phi4-mini")))
    assert "<|im_end|>" in stops(styled("phi4")) and "<|end|>" not in stops(styled("phi4"))


def test_phi4_minis_tool_call_syntax_is_not_parsed(phi, pm):
    assert not hasattr(phi, "parse_tool_calls")
    text = '<|tool_call|>{"name": "f", "arguments": {}}<|/tool_call|>'
    assert pm.hook.parse_tool_calls(model=model(), text=text) is None
