"""Chat templates: rendering in the sandbox, BOS handling, template errors, and the
precedence of the formatting plugins (config template > family plugin > GGUF template >
generic transcript)."""

from __future__ import annotations

from pathlib import Path

import gguf_factory
import jinja2
import pytest

from ggufd.chat_template import adds_bos, compile_template, render_chat_template
from ggufd.default_plugins import gguf_template
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata, read_metadata
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

REPO = Path(__file__).resolve().parent.parent
CHATML = gguf_factory.DEFAULT_CHAT_TEMPLATE

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Café? 日本"},
]

CHATML_EXPECTED = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\nHello.<|im_end|>\n"
    "<|im_start|>user\nCafé? 日本<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def metadata(add_bos: bool | None = True, bos: str | None = "<s>", eos: str | None = "</s>", **values) -> GGUFMetadata:
    vals = {"general.architecture": "llama", **values}
    if add_bos is not None:
        vals["tokenizer.ggml.add_bos_token"] = add_bos
    return GGUFMetadata(version=3, tensor_count=0, values=vals, array_lengths={}, bos_token=bos, eos_token=eos)


@pytest.fixture(scope="module")
def tiny_metadata(tiny_model) -> GGUFMetadata:
    return read_metadata(tiny_model)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    return gguf_factory.write_tiny_llama(tmp_path_factory.mktemp("plain") / "plain.gguf", chat_template=None)


def model_info(path: Path, family: str, model_id: str = "m", **options) -> ModelInfo:
    return ModelInfo(
        spec=ModelSpec(id=model_id, path=path, options=options), metadata=read_metadata(path), family=family
    )


# --------------------------------------------------------------------------- rendering


def test_chatml_template_renders_the_conversation(tiny_metadata):
    prompt = render_chat_template(CHATML, CONVERSATION, tiny_metadata)
    assert isinstance(prompt, ChatPrompt)
    assert prompt.text == CHATML_EXPECTED
    assert prompt.add_bos is True
    assert prompt.stop == ()


def test_without_generation_prompt(tiny_metadata):
    prompt = render_chat_template(CHATML, CONVERSATION, tiny_metadata, add_generation_prompt=False)
    assert prompt.text == CHATML_EXPECTED[: -len("<|im_start|>assistant\n")]


def test_trim_blocks_and_lstrip_blocks_like_transformers(tiny_metadata):
    source = (
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n"
    )
    text = render_chat_template(source, CONVERSATION, tiny_metadata).text
    assert text == "[Hi!]\n[Café? 日本]\n"


def test_bos_rendered_by_the_template_is_stripped_when_the_tokenizer_adds_one():
    source = "{{ bos_token }}" + CHATML
    prompt = render_chat_template(source, CONVERSATION[1:2], metadata(add_bos=True))
    assert prompt.text == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.add_bos is True


def test_bos_is_kept_when_the_tokenizer_does_not_add_one():
    source = "{{ bos_token }}" + CHATML
    prompt = render_chat_template(source, CONVERSATION[1:2], metadata(add_bos=False))
    assert prompt.text == "<s><|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.add_bos is False


def test_add_bos_defaults_to_true_like_llama_cpp():
    assert adds_bos(metadata(add_bos=None)) is True
    prompt = render_chat_template("{{ bos_token }}x", [], metadata(add_bos=None))
    assert prompt.text == "x" and prompt.add_bos is True


def test_only_a_leading_bos_is_stripped():
    prompt = render_chat_template("a{{ bos_token }}b{{ bos_token }}", [], metadata(add_bos=True))
    assert prompt.text == "a<s>b<s>"
    prompt = render_chat_template("{{ bos_token }}{{ bos_token }}x", [], metadata(add_bos=True))
    assert prompt.text == "<s>x"


def test_bos_and_eos_tokens_are_available(tiny_metadata):
    text = render_chat_template("[{{ bos_token }}|{{ eos_token }}]", [], metadata(add_bos=False)).text
    assert text == "[<s>|</s>]"
    # the tiny model's own BOS/EOS come from its vocabulary
    assert tiny_metadata.bos_token == "<s>" and tiny_metadata.eos_token == "</s>"


def test_missing_bos_token_renders_empty():
    prompt = render_chat_template("{{ bos_token }}hi", [], metadata(add_bos=True, bos=None))
    assert prompt.text == "hi"


def test_raise_exception_is_a_400_on_messages(tiny_metadata):
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}"
    )
    with pytest.raises(InvalidRequest) as info:
        render_chat_template(source, CONVERSATION, tiny_metadata)
    error = info.value
    assert error.status == 400
    assert error.param == "messages"
    assert "System role not supported" in error.message
    # the same template accepts a conversation it can express
    assert render_chat_template(source, CONVERSATION[1:], tiny_metadata).text == "Hi!Hello.Café? 日本"


def test_strftime_now_is_available(tiny_metadata):
    text = render_chat_template("{{ strftime_now('%Y') }}", [], tiny_metadata).text
    assert text.isdigit() and len(text) == 4


def test_loop_controls_work_like_transformers(tiny_metadata):
    # Hugging Face renders chat templates with jinja2.ext.loopcontrols.
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{{ m.content }};{% if m.role == 'assistant' %}{% break %}{% endif %}{% endfor %}"
    )
    assert render_chat_template(source, CONVERSATION, tiny_metadata).text == "Hi!;Hello.;"


def test_tojson_like_transformers(tiny_metadata):
    # transformers' tojson: no key sorting, no HTML escaping, non-ASCII kept.
    source = "{{ {'name': 'f', 'arguments': {'b': '<x>', 'a': 'é'}} | tojson }}"
    text = render_chat_template(source, [], tiny_metadata).text
    assert text == '{"name": "f", "arguments": {"b": "<x>", "a": "é"}}'


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",
        "{{ messages[0].update({'content': 'pwned'}) }}",
    ],
)
def test_sandbox_blocks_unsafe_access(tiny_metadata, source):
    messages = [dict(m) for m in CONVERSATION]
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat_template(source, messages, tiny_metadata)
    assert messages == CONVERSATION


@pytest.mark.parametrize(
    "source", ["{{ messages.__class__ }}", "{{ raise_exception.__globals__ }}", "{{ ''.__doc__ }}"]
)
def test_sandbox_never_leaks_internals(tiny_metadata, source):
    try:
        text = render_chat_template(source, CONVERSATION, tiny_metadata).text
    except jinja2.exceptions.SecurityError:
        return
    assert text == ""


def test_compile_template_caches():
    source = "cache-test {{ messages | length }}"
    before = compile_template.cache_info()
    first = compile_template(source)
    second = compile_template(source)
    after = compile_template.cache_info()
    assert first is second
    assert after.hits >= before.hits + 1
    assert compile_template("other " + source) is not first


def test_broken_template_raises_template_error():
    with pytest.raises(jinja2.TemplateError):
        compile_template("{% for m in messages %}")


# --------------------------------------------------------------------------- gguf_template plugin


def test_gguf_template_plugin_uses_the_models_template(pm, tiny_model):
    info = model_info(tiny_model, family="gguf-template")
    prompt = pm.format_chat(model=info, messages=CONVERSATION)
    assert prompt.text == CHATML_EXPECTED
    assert prompt.add_bos is True


def test_generic_transcript_when_the_model_has_no_template(pm, plain_model):
    info = model_info(plain_model, family="generic", model_id="plain")
    prompt = pm.format_chat(model=info, messages=CONVERSATION)
    assert prompt.text == "System: You are terse.\nUser: Hi!\nAssistant: Hello.\nUser: Café? 日本\nAssistant:"
    assert set(prompt.stop) == {"\nUser:", "\nSystem:"}
    assert prompt.add_bos is True
    assert pm.hook.stop_sequences(model=info) == []


def test_generic_transcript_for_a_broken_template(pm, tmp_path):
    path = gguf_factory.write_tiny_llama(tmp_path / "broken.gguf", chat_template="{% if %}")
    info = model_info(path, family="generic", model_id="broken")
    prompt = pm.format_chat(model=info, messages=[{"role": "user", "content": "Hi"}])
    assert prompt.text == "User: Hi\nAssistant:"


def test_generic_transcript_unit():
    prompt = gguf_template.generic_transcript(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "tool", "content": None}]
    )
    assert prompt.text == "System: S\nUser: U\nTool: \nAssistant:"


def test_gguf_template_detect_family(tiny_model, plain_model):
    spec = ModelSpec(id="x", path=tiny_model)
    assert gguf_template.detect_family(read_metadata(tiny_model), spec) == "gguf-template"
    assert gguf_template.detect_family(read_metadata(plain_model), spec) == "generic"


def test_config_template_beats_the_family_plugin_and_the_gguf_template(pm, tiny_model):
    override = (
        "{% for m in messages %}<<{{ m.role }}:{{ m.content }}>>{% endfor %}{% if add_generation_prompt %}GO{% endif %}"
    )
    messages = [{"role": "user", "content": "Hi"}]
    for family in ("gemma", "gguf-template", "generic"):
        info = model_info(tiny_model, family=family, chat_template=override)
        prompt = pm.format_chat(model=info, messages=messages)
        assert prompt.text == "<<user:Hi>>GO", family


def test_family_plugin_beats_the_gguf_template(pm, tiny_model):
    # the tiny model carries a ChatML template, but a model of the gemma family is formatted by the gemma plugin
    info = model_info(tiny_model, family="gemma")
    prompt = pm.format_chat(model=info, messages=[{"role": "user", "content": "Hi"}])
    assert prompt.text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_config_template_raise_exception_is_a_400(pm, tiny_model):
    info = model_info(tiny_model, family="gguf-template", chat_template="{{ raise_exception('no') }}")
    with pytest.raises(InvalidRequest):
        pm.format_chat(model=info, messages=[{"role": "user", "content": "Hi"}])
