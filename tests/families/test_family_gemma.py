"""The gemma plugin (ggufd/families/gemma.py): golden prompts byte for byte, Google's own Gemma 3 chat
template (the plain chats are compared with it in test_family_contract.py), family detection, and
the real gemma vocabulary (turn markers are single special tokens, end of turn ends generation)."""

from __future__ import annotations

import pytest
from family_kit import GEMMA, GEMMA3_TEMPLATE, TEXT_CHATS

from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.testing import render_template
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

START_OF_TURN_ID = 105
END_OF_TURN_ID = 106
metadata, model = GEMMA.metadata, GEMMA.model


@pytest.fixture(scope="module")
def gemma(pm):
    plugin = pm.manager.get_plugin("gemma")
    assert plugin is not None and plugin.__name__ == "ggufd.families.gemma"
    return plugin


# --------------------------------------------------------------------------- golden prompts


def test_one_user_message(gemma):
    prompt = gemma.format_chat(model=model(), messages=[{"role": "user", "content": "Why is the sky blue?"}])
    assert prompt == ChatPrompt(
        text="<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n",
        stop=("<end_of_turn>",),
        add_bos=True,
    )


def test_system_and_user(gemma):
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}]
    prompt = gemma.format_chat(model=model(), messages=messages)
    assert prompt.text == "<start_of_turn>user\nAnswer in French.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    assert prompt.add_bos is True
    assert not prompt.text.startswith("<bos>")


def test_multi_turn(gemma):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    prompt = gemma.format_chat(model=model(), messages=messages)
    assert prompt.text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_multi_turn_without_system(gemma):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    prompt = gemma.format_chat(model=model(), messages=messages)
    assert prompt.text == (
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_only_a_system_message_is_rejected(gemma):
    with pytest.raises(InvalidRequest) as info:
        gemma.format_chat(model=model(), messages=[{"role": "system", "content": "x"}])
    assert info.value.status == 400 and info.value.param == "messages"


# --------------------------------------------------------------------------- Google's template


# the plain chats are compared with it for every family in test_family_contract.py


def test_googles_template_keeps_bos_when_the_tokenizer_does_not_add_one():
    text = render_template(GEMMA3_TEMPLATE, TEXT_CHATS["one-user-message"], metadata(add_bos=False)).text
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_googles_template_rejects_non_alternating_roles_as_a_400():
    with pytest.raises(InvalidRequest) as info:
        GEMMA.reference(GEMMA3_TEMPLATE, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert "alternate" in info.value.message and info.value.param == "messages"


def test_googles_template_as_a_configured_chat_template(pm, tiny_model):
    # The same template set as a model's chat_template in the config beats every plugin.
    info = ModelInfo(
        spec=ModelSpec(id="t", path=tiny_model, options={"chat_template": GEMMA3_TEMPLATE}),
        metadata=read_metadata(tiny_model),
        family="gguf-template",
    )
    prompt = pm.format_chat(model=info, messages=TEXT_CHATS["pirate-system"])
    # the tiny model's BOS is "<s>", so the template's "<s>" is stripped as well
    assert prompt.text == "<start_of_turn>user\nYou are a pirate.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


# --------------------------------------------------------------------------- family and stops


def test_detect_family(gemma, tiny_model):
    for arch in ("gemma", "gemma2", "gemma3"):
        assert gemma.detect_family(metadata=metadata(architecture=arch, name=None), spec=model().spec) == "gemma"
    llama = metadata(architecture="llama", name="tiny-llama")
    assert gemma.detect_family(metadata=llama, spec=model().spec) is None
    assert gemma.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None
    # a hint in the name or the file name is enough
    assert (
        gemma.detect_family(metadata=metadata(architecture="llama", name="My Gemma finetune"), spec=model().spec)
        == "gemma"
    )
    assert gemma.detect_family(metadata=llama, spec=model(model_id="gemma-2b-it.Q4_0").spec) == "gemma"


def test_hooks_through_the_plugin_manager(pm):
    messages = [{"role": "user", "content": "Hi"}]
    assert pm.hook.detect_family(metadata=metadata(), spec=model().spec) == "gemma"
    prompt = pm.format_chat(model=model(), messages=messages)
    assert prompt.text == GEMMA.reference(GEMMA3_TEMPLATE, messages).text
    assert prompt.stop == ("<end_of_turn>",)


# --------------------------------------------------------------------------- the real vocabulary


@pytest.fixture(scope="module")
def gemma_llm(gemma_model):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(gemma_model), n_ctx=512, verbose=False)
    yield llm
    llm.close()


def test_real_gemma_model_is_detected(pm, gemma_model):
    metadata = read_metadata(gemma_model)
    assert metadata.architecture == "gemma3"
    spec = ModelSpec(id="gemma-3-270m-q4_k_m", path=gemma_model)
    assert pm.hook.detect_family(metadata=metadata, spec=spec) == "gemma"
    assert metadata.get("tokenizer.ggml.add_bos_token", True) is True


def test_turn_markers_are_single_special_tokens(gemma, gemma_llm):
    import llama_cpp

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    prompt = gemma.format_chat(model=model(), messages=messages)
    tokens = gemma_llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
    assert tokens[0] == gemma_llm.token_bos()
    assert tokens.count(gemma_llm.token_bos()) == 1
    assert tokens.count(START_OF_TURN_ID) == prompt.text.count("<start_of_turn>") == 4
    assert tokens.count(END_OF_TURN_ID) == prompt.text.count("<end_of_turn>") == 3
    assert tokens[1] == START_OF_TURN_ID
    assert gemma_llm.detokenize([START_OF_TURN_ID, END_OF_TURN_ID], special=True) == b"<start_of_turn><end_of_turn>"
    # without special parsing the markers would be plain text, not the control tokens
    plain = gemma_llm.tokenize(b"<start_of_turn>user", add_bos=False, special=False)
    assert START_OF_TURN_ID not in plain and len(plain) > 1

    vocab = gemma_llm._model.vocab
    assert llama_cpp.llama_vocab_is_eog(vocab, END_OF_TURN_ID)
    assert not llama_cpp.llama_vocab_is_eog(vocab, START_OF_TURN_ID)
