"""ggufd.testing: the helpers for plugin authors (and ggufd's own family tests) build what the hooks
receive, register plugins exactly as the daemon does, and render chats as requests are rendered."""

from __future__ import annotations

import doctest
import importlib.metadata
import textwrap
import types
from pathlib import Path

import pytest

import ggufd
import ggufd.testing
from ggufd import hookspecs
from ggufd.config import Config
from ggufd.plugins import BUILTIN_ORIGIN, PluginError, make_plugin_manager
from ggufd.testing import gguf_metadata, model_info, model_spec, plugin_manager, render, render_template

HOOKS = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "ggufd_spec")]
MY_FAMILY = """
import ggufd

@ggufd.hookimpl
def detect_family(metadata, spec):
    return "mine" if metadata.architecture == "myarch" else None

@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != "mine":
        return None
    return ggufd.ChatPrompt(text="|".join(f"{m['role']}:{m['content']}" for m in messages), stop=("<end>",))

@ggufd.hookimpl
def stop_sequences(model):
    return ["<end>"] if model.family == "mine" else None
"""


def module(name: str, source: str) -> types.ModuleType:
    plugin = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), plugin.__dict__)
    return plugin


def call_order(plugins) -> dict[str, list[str]]:
    return {
        hook: [impl.plugin_name for impl in reversed(getattr(plugins.hook, hook).get_hookimpls())] for hook in HOOKS
    }


@pytest.fixture
def no_installed_plugins(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])


def test_the_docstring_examples_run():
    assert doctest.testmod(ggufd.testing).failed == 0


def test_gguf_metadata_holds_what_it_is_given():
    meta = gguf_metadata(
        "{{ x }}",
        "qwen2",
        {"tokenizer.ggml.pre": "qwen2"},
        name="Qwen",
        add_bos=False,
        bos_token="<s>",
        eos_token="</s>",
    )
    assert (meta.chat_template, meta.architecture, meta.name, meta.bos_token, meta.eos_token) == (
        "{{ x }}",
        "qwen2",
        "Qwen",
        "<s>",
        "</s>",
    )
    assert meta.get("tokenizer.ggml.add_bos_token") is False and meta.get("tokenizer.ggml.pre") == "qwen2"
    empty = gguf_metadata(architecture=None)
    assert dict(empty.values) == {} and empty.architecture is None and empty.chat_template is None


def test_model_info_and_model_spec():
    info = model_info(family="gemma", architecture="gemma3", model_id="g", options={"chat_template": "t"}, name="Gemma")
    assert (info.family, info.id, info.path, dict(info.options)) == (
        "gemma",
        "g",
        Path("/models/g.gguf"),
        {"chat_template": "t"},
    )
    assert info.metadata.architecture == "gemma3" and info.metadata.name == "Gemma"
    # metadata: further keys, or a ready GGUFMetadata used as it is
    assert model_info(metadata={"general.name": "X"}).metadata.name == "X"
    ready = gguf_metadata("{{ t }}", "phi3")
    assert model_info(family="phi", metadata=ready).metadata is ready
    with pytest.raises(TypeError, match="template"):
        model_info(metadata=ready, template="other")
    assert model_spec("m", path="/elsewhere/m.gguf", aliases=["a"]).aliases == ("a",)


def test_plugin_manager_registers_the_builtins_as_the_daemon_does(tmp_path, no_installed_plugins):
    daemon = make_plugin_manager(Config(models_dir=tmp_path))
    plugins = plugin_manager()
    assert call_order(plugins) == call_order(daemon)
    assert plugins.origins == daemon.origins and all(origin == BUILTIN_ORIGIN for origin in plugins.origins.values())
    assert plugins.failures == []


def test_a_plugin_is_registered_where_a_plugins_dir_file_would_be(tmp_path, no_installed_plugins):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_family.py").write_text(MY_FAMILY)
    daemon = make_plugin_manager(Config(models_dir=tmp_path, plugins_dir=folder))
    plugins = plugin_manager(module("my_family", MY_FAMILY))
    assert call_order(plugins) == call_order(daemon)
    assert call_order(plugins)["format_chat"][:3] == ["template_override", "my_family", "qwen3_coder"]


def test_rendering_through_the_helpers():
    plugins = plugin_manager(module("my_family", MY_FAMILY))
    mine = model_info(family="mine", architecture="myarch")
    assert plugins.detect_family(mine.metadata, mine.spec) == "mine"
    # messages are normalised as requests are: text parts joined, developer is system, no content is ""
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    assert render(plugins, mine, messages) == ggufd.ChatPrompt(
        text="system:Be brief.|user:Hi|assistant:", stop=("<end>",)
    )
    assert plugins.stop_sequences(mine) == ("<end>",)
    # other models are left to the built-ins
    gemma = model_info(family="gemma")
    assert render(plugins, gemma, messages[1:2]).text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert render(plugins, model_info(), messages[1:2]).text == "User: Hi\nAssistant:"


def test_without_builtins_only_the_given_plugins_answer():
    plugins = plugin_manager(module("my_family", MY_FAMILY), builtins=False)
    assert [entry["name"] for entry in plugins.describe()] == ["my_family"]
    assert render(plugins, model_info(family="gemma"), [{"role": "user", "content": "Hi"}]) is None


def test_a_module_named_like_a_family_replaces_it():
    gemma = module("gemma", MY_FAMILY.replace('"mine"', '"gemma"'))
    plugins = plugin_manager(gemma)
    assert plugins.manager.get_plugin("gemma") is gemma
    assert render(plugins, model_info(family="gemma"), [{"role": "user", "content": "Hi"}]).text == "user:Hi"


def test_an_object_with_hook_methods_is_a_plugin_too():
    class Shouting:
        @ggufd.hookimpl
        def stop_sequences(self, model):
            return ["!!!"]

    assert plugin_manager(Shouting(), builtins=False).stop_sequences(model_info()) == ("!!!",)


def test_a_misspelt_hook_is_an_error():
    with pytest.raises(PluginError, match="formatt_chat"):
        plugin_manager(
            module("typo", "import ggufd\n@ggufd.hookimpl\ndef formatt_chat(model, messages):\n    return None\n")
        )


def test_render_template_renders_as_ggufd_renders_a_ggufs_template():
    source = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    messages = [{"role": "user", "content": "Hi"}]
    meta = gguf_metadata(source, bos_token="<s>")
    assert render_template(source, messages, meta).text == "<user>Hi<assistant>"  # the tokenizer adds <s>
    assert (
        render_template(source, messages, gguf_metadata(source, bos_token="<s>", add_bos=False)).text
        == "<s><user>Hi<assistant>"
    )
    assert render_template(source, messages, meta, add_generation_prompt=False).text == "<user>Hi"
    # the same as the built-in gguf_template plugin renders the model's own template
    assert render(plugin_manager(), model_info(metadata=meta), messages) == render_template(source, messages, meta)
