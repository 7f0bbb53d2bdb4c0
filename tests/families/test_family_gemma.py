"""The gemma plugin (ggufd/families/gemma.py): golden prompts byte for byte, a cross-check against
Google's own Gemma 3 chat template, family detection, stop strings, and the real gemma
vocabulary (turn markers are single special tokens, end of turn ends generation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufd.chat_template import render_chat_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata, read_metadata
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

REPO = Path(__file__).resolve().parents[2]

START_OF_TURN_ID = 105
END_OF_TURN_ID = 106

# The chat_template of Google's Gemma 3 instruction-tuned models (tokenizer_config.json on the
# Hugging Face hub, google/gemma-3-*-it), as published.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


def gemma_metadata(architecture: str = "gemma3", name: str | None = "Gemma 3 270m", add_bos: bool = True) -> GGUFMetadata:
    values = {"general.architecture": architecture, "tokenizer.ggml.add_bos_token": add_bos}
    if name is not None:
        values["general.name"] = name
    return GGUFMetadata(version=3, tensor_count=0, values=values, array_lengths={}, bos_token="<bos>", eos_token="<eos>")


def model(family: str = "gemma", metadata: GGUFMetadata | None = None, file_name: str = "model.gguf") -> ModelInfo:
    return ModelInfo(
        spec=ModelSpec(id=file_name[: -len(".gguf")], path=Path("/models") / file_name),
        metadata=metadata or gemma_metadata(),
        family=family,
    )


@pytest.fixture(scope="module")
def gemma(pm):
    plugin = pm.manager.get_plugin("gemma")
    assert plugin is not None, "ggufd/families/gemma.py was not loaded"
    return plugin


def official(messages, add_generation_prompt: bool = True) -> str:
    return render_chat_template(GEMMA3_TEMPLATE, messages, gemma_metadata(), add_generation_prompt=add_generation_prompt).text


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


def test_other_families_are_left_to_other_plugins(gemma):
    assert gemma.format_chat(model=model(family="gguf-template"), messages=[{"role": "user", "content": "x"}]) is None


# --------------------------------------------------------------------------- Google's template


CROSS_CHECK = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy"},
        {"role": "user", "content": "Where is the treasure?"},
    ],
    [
        {"role": "system", "content": "Sys line 1\nSys line 2"},
        {"role": "user", "content": "  padded user text \n"},
        {"role": "assistant", "content": "\n answer with spaces  "},
        {"role": "user", "content": "multi\nline\n\ncontent"},
        {"role": "assistant", "content": "日本語 😀 café"},
        {"role": "user", "content": "<b>tags</b> & {{ braces }} {% not jinja %}"},
    ],
]


@pytest.mark.parametrize("messages", CROSS_CHECK, ids=lambda m: f"{len(m)}-messages")
def test_plugin_matches_googles_template(gemma, messages):
    reference = official(messages)
    # rendered through ggufd: the template's own <bos> is stripped (the tokenizer adds it)
    assert not reference.startswith("<bos>")
    prompt = gemma.format_chat(model=model(), messages=messages)
    assert prompt.text == reference
    assert prompt.add_bos is True


def test_googles_template_keeps_bos_when_the_tokenizer_does_not_add_one():
    text = render_chat_template(GEMMA3_TEMPLATE, CROSS_CHECK[0], gemma_metadata(add_bos=False)).text
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_googles_template_rejects_non_alternating_roles_as_a_400():
    with pytest.raises(InvalidRequest) as info:
        official([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert "alternate" in info.value.message and info.value.param == "messages"


def test_googles_template_as_a_configured_chat_template(pm, tiny_model):
    # The same template set as a model's chat_template in the config beats every plugin.
    info = ModelInfo(
        spec=ModelSpec(id="t", path=tiny_model, options={"chat_template": GEMMA3_TEMPLATE}),
        metadata=read_metadata(tiny_model),
        family="gguf-template",
    )
    prompt = pm.hook.format_chat(model=info, messages=CROSS_CHECK[1])
    # the tiny model's BOS is "<s>", so the template's "<s>" is stripped as well
    assert prompt.text == "<start_of_turn>user\nYou are a pirate.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


# --------------------------------------------------------------------------- family and stops


def test_detect_family(gemma, tiny_model):
    for arch in ("gemma", "gemma2", "gemma3"):
        assert gemma.detect_family(metadata=gemma_metadata(arch, name=None), spec=model().spec) == "gemma"
    llama = gemma_metadata("llama", name="tiny-llama")
    assert gemma.detect_family(metadata=llama, spec=model().spec) is None
    assert gemma.detect_family(metadata=read_metadata(tiny_model), spec=ModelSpec(id="tiny", path=tiny_model)) is None
    # a hint in the name or the file name is enough
    assert gemma.detect_family(metadata=gemma_metadata("llama", name="My Gemma finetune"), spec=model().spec) == "gemma"
    assert gemma.detect_family(metadata=llama, spec=model(file_name="gemma-2b-it.Q4_0.gguf").spec) == "gemma"


def test_stop_sequences(pm):
    assert "<end_of_turn>" in [s for answer in pm.hook.stop_sequences(model=model("gemma")) for s in answer]
    for family in ("gguf-template", "generic", "llama3"):
        stops = [s for answer in pm.hook.stop_sequences(model=model(family)) for s in answer]
        assert "<end_of_turn>" not in stops


def test_hooks_through_the_plugin_manager(pm):
    messages = [{"role": "user", "content": "Hi"}]
    assert pm.hook.detect_family(metadata=gemma_metadata(), spec=model().spec) == "gemma"
    prompt = pm.hook.format_chat(model=model(), messages=messages)
    assert prompt.text == official(messages)
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
