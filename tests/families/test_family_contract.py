"""What every built-in model family (ggufd/families/) must satisfy, one parametrised test per rule:
it is a built-in plugin that imports only the public ggufd API; its hooks answer for its own models
and return None for every other family's; stop strings, tool-call parsing and answer filters follow
the hook contracts; its models are detected as its family and no family claims another's; and its
prompts equal the model makers' published templates byte for byte for every plain chat.

The family-specific behaviour (hand-written golden prompts, tool conversations, detection corner
cases, real GGUFs) is in the test_family_<name>.py modules beside this one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from family_kit import FAMILIES, PUBLISHED, TEXT_CHATS, Family, call_hook

import ggufd
import ggufd.families
from ggufd.plugins import BUILTIN_ORIGIN, FAMILY_PLUGINS
from ggufd.testing import gguf_metadata, model_spec, plugin_manager, render
from ggufd.types import ChatPrompt, PassThrough

#: model families as the registry names them: every built-in one, plus the built-in fallbacks
LABELS = sorted({family.name for family in FAMILIES.values()} | {"gguf-template", "generic"})
MULTI_TURN = TEXT_CHATS["short-multi-turn"]
NO_TOOL_CALL = ["", "Paris is the capital of France.", "I would call get_weather, but I know it is sunny."]

#: known departures from a published template, each a strict xfail: it fails today, and says so when fixed
KNOWN_DEPARTURES = {
    ("gemma-gemma3", "odd-content-spaces-after-system"): (
        "the gemma plugin strips the system text; Google's template keeps its trailing spaces "
        "(first_user_prefix = content + '\\n\\n'), so the plugin's prompt lacks them"
    ),
}

#: models of other families (the markers their plugins look at), and of no built-in family at all;
#: with every published template's model they make the set no family may claim unless it is its own
LOOKALIKES = [
    (
        "chatml",
        gguf_metadata(
            "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}<tool_call>",
            "qwen2",
            name="Qwen2.5 7B Instruct",
        ),
    ),
    (
        "llama3",
        gguf_metadata(
            "{% for m in messages %}{{'<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>'}}{% endfor %}",
            "llama",
            name="Meta Llama 3.1 8B Instruct",
        ),
    ),
    (
        "gemma",
        gguf_metadata(
            "{% for m in messages %}{{'<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n'}}{% endfor %}",
            "gemma3",
            name="Gemma 3 4b It",
        ),
    ),
    ("gemma", gguf_metadata(None, "gemma3", name="Gemma 3 270m")),
    (
        "phi",
        gguf_metadata(
            "{% for m in messages %}{{'<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n'}}{% endfor %}{{ '<|assistant|>\\n' }}",
            "phi3",
            name="Phi 3.5 Mini Instruct",
        ),
    ),
    (
        "gguf-template",
        gguf_metadata(
            "{% for m in messages %}<|im_user|>{{ m['content'] }}<|im_end|>{% endfor %}<|im_assistant|>",
            "deepseek2",
            name="Kimi K2 Instruct",
        ),
    ),
] + [(p.family.name, p.meta) for p in PUBLISHED]
LOOKALIKE_IDS = [
    f"{owner}-{meta.architecture}-{(meta.name or 'unnamed').replace(' ', '_')}" for owner, meta in LOOKALIKES
]

family_params = pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))


def others(family: Family) -> list[str]:
    return [label for label in LABELS if label != family.name]


def call(hook, **arguments):
    """A plugin's hook implementation called as pluggy calls it, with the arguments it names
    (``tools`` and ``template_kwargs`` empty unless given)."""
    return call_hook(hook, **{"tools": [], "template_kwargs": {}, **arguments})


@pytest.fixture(scope="module")
def plugins():
    """ggufd's built-in plugins alone, registered as the daemon registers them."""
    return plugin_manager()


@pytest.fixture
def plugin(family, plugins, monkeypatch):
    return family.pin(plugins.manager.get_plugin(family.plugin), monkeypatch)


# --------------------------------------------------------------------------- a built-in plugin


def test_every_family_is_covered():
    assert [name.rsplit(".", 1)[-1] for name in FAMILY_PLUGINS] == list(FAMILIES)


@family_params
def test_it_is_a_built_in_plugin_shipped_in_the_package(family, plugins):
    module = plugins.manager.get_plugin(family.plugin)
    assert module.__name__ == f"ggufd.families.{family.plugin}"
    assert Path(module.__file__) == Path(ggufd.families.__file__).parent / f"{family.plugin}.py"
    assert plugins.origins[family.plugin] == BUILTIN_ORIGIN
    assert module.__doc__ and "third-party plugin" in module.__doc__


@family_params
def test_it_imports_only_the_public_api(family):
    """Written exactly like a third-party plugin: ``import ggufd`` and the names in ``ggufd.__all__``."""
    path = Path(ggufd.families.__file__).parent / f"{family.plugin}.py"
    tree = ast.parse(path.read_text("utf-8"))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "ggufd" or not alias.name.startswith("ggufd"), f"{path.name}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            if (node.module or "").startswith("ggufd"):
                assert node.module == "ggufd", f"{path.name}: from {node.module} import ..."
                used |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ggufd":
            used.add(node.attr)
    assert "hookimpl" in used
    assert used <= set(ggufd.__all__), f"{path.name} uses {sorted(used - set(ggufd.__all__))}, not in ggufd.__all__"


# --------------------------------------------------------------------------- per-model hooks


@family_params
def test_format_chat_answers_only_for_its_family(family, plugin, plugins):
    prompt = call(plugin.format_chat, model=family.model(), messages=MULTI_TURN)
    assert isinstance(prompt, ChatPrompt) and prompt.text
    assert render(plugins, family.model(), MULTI_TURN) == prompt  # no other plugin answers first
    for label in others(family):
        assert call(plugin.format_chat, model=family.model(family=label), messages=MULTI_TURN) is None, label


@family_params
def test_stop_sequences_are_there_for_its_family_and_none_for_others(family, plugin, plugins):
    assert plugin.stop_sequences(model=family.model()) == list(family.stops)
    assert plugins.stop_sequences(family.model()) == family.stops  # no other family adds any
    for label in others(family):
        assert plugin.stop_sequences(model=family.model(family=label)) is None, label


@family_params
def test_parse_tool_calls_reads_only_its_own_syntax(family, plugin, plugins):
    model = family.model()
    syntaxes = [
        other.tool_call
        for other in FAMILIES.values()
        if other.tool_call
        and other is not family
        and (other.tool_syntax is None or other.tool_syntax != family.tool_syntax)
    ]
    if family.tool_call is None:
        assert not hasattr(plugin, "parse_tool_calls")
    else:
        calls = plugin.parse_tool_calls(model=model, text=family.tool_call)
        assert calls and all(call["type"] == "function" and call["function"]["name"] for call in calls)
        for text in NO_TOOL_CALL:
            assert plugin.parse_tool_calls(model=model, text=text) is None, text
        for label in others(family):
            assert plugin.parse_tool_calls(model=family.model(family=label), text=family.tool_call) is None, label
    for text in NO_TOOL_CALL + syntaxes:  # through the manager: no family reads another's syntax
        assert plugins.parse_tool_calls(model, text) is None, text


@family_params
def test_answer_filter_only_for_its_family(family, plugin, plugins):
    if not hasattr(plugin, "answer_filter"):
        assert isinstance(plugins.answer_filter(family.model()), PassThrough)
        return
    prompt = call(plugin.format_chat, model=family.model(), messages=MULTI_TURN)  # the filter for its own prompt
    first, second = (call(plugin.answer_filter, model=family.model(), prompt=prompt) for _ in range(2))
    if first is None:  # none is needed for a prompt the model does not reason in
        assert prompt.reasoning is None and second is None
    else:
        assert callable(first.feed) and callable(first.finish) and first is not second  # a fresh one per request
    for label in others(family):
        assert call(plugin.answer_filter, model=family.model(family=label), prompt=prompt) is None, label


# --------------------------------------------------------------------------- detection


@family_params
def test_its_models_are_detected_as_its_family(family, plugin, plugins):
    spec = model_spec()
    for meta in [family.model().metadata] + [p.meta for p in PUBLISHED if p.family is family]:
        assert plugin.detect_family(metadata=meta, spec=spec) == family.name, (
            meta.chat_template and meta.chat_template[:60]
        )
        assert plugins.detect_family(meta, spec) == family.name


@pytest.mark.parametrize(
    "family,owner,meta",
    [(family, owner, meta) for family in FAMILIES.values() for owner, meta in LOOKALIKES if owner != family.name],
    ids=[
        f"{family.plugin}-vs-{lid}"
        for family in FAMILIES.values()
        for (owner, _), lid in zip(LOOKALIKES, LOOKALIKE_IDS, strict=True)
        if owner != family.name
    ],
)
def test_no_family_claims_another_familys_model(family, owner, meta, plugin, plugins):
    spec = model_spec()
    assert plugin.detect_family(metadata=meta, spec=spec) is None
    assert plugins.detect_family(meta, spec) == owner


# --------------------------------------------------------------------------- the published templates


def _golden_cases():
    for published in PUBLISHED:
        for chat_id, messages in TEXT_CHATS.items():
            reason = KNOWN_DEPARTURES.get((published.id, chat_id))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            yield pytest.param(published, messages, id=f"{published.id}-{chat_id}", marks=marks)


@pytest.mark.parametrize("published,messages", list(_golden_cases()))
def test_prompts_equal_the_published_template_byte_for_byte(published, messages, plugins, monkeypatch):
    plugin = published.family.pin(plugins.manager.get_plugin(published.family.plugin), monkeypatch)
    prompt = call(plugin.format_chat, model=published.model(), messages=messages)
    reference = published.reference(messages)
    assert prompt.text == reference.text
    assert prompt.add_bos == reference.add_bos
    if reference.add_bos:  # a BOS the template writes itself is left to the tokenizer
        assert not reference.text.startswith(published.meta.bos_token)
    assert render(plugins, published.model(), messages) == prompt  # the same through the plugin manager


@family_params
def test_markup_tokens_only_for_its_family(family, plugin, plugins):
    if not hasattr(plugin, "markup_tokens"):
        return
    markup = plugin.markup_tokens(model=family.model())
    assert markup and all(isinstance(m, str) and m for m in markup)
    assert set(markup) <= set(plugins.markup_tokens(family.model()))
    for label in others(family):
        assert plugin.markup_tokens(model=family.model(family=label)) is None, label
