"""ggufd.plugins: building the plugin manager, plugin precedence, and the hook contracts."""

from __future__ import annotations

import inspect
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO

from ggufd import hookspecs
from ggufd.config import Config
from ggufd.gguf_metadata import read_metadata
from ggufd.plugins import (
    BUILTIN_ORIGIN,
    DEFAULT_PLUGINS,
    FAMILY_PLUGINS,
    PluginError,
    describe_plugins,
    make_plugin_manager,
)
from ggufd.registry import build_registry
from ggufd.testing import model_info, render
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec


@pytest.fixture(autouse=True)
def no_installed_plugins(monkeypatch):
    """These tests are about the mechanism: installed entry-point plugins (the example package
    that `make test` installs) would change the plugin sets they assert. tests/test_plugin_ecosystem.py
    covers installed plugins."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])


DEFAULT_NAMES = {
    "directory_discovery",
    "config_models",
    "ollama_discovery",
    "hf_cache_discovery",
    "template_override",
    "gguf_template",
}
FAMILY_NAMES = {
    "gemma",
    "llama3",
    "chatml",
    "mistral",
    "phi",
    "deepseek",
    "gpt_oss",
    "glm",
    "kimi_k2",
    "qwen3",
    "qwen3_coder",
}
BUILTIN_NAMES = DEFAULT_NAMES | FAMILY_NAMES
MESSAGES = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})


def config(tmp_path: Path, **fields) -> Config:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    return Config(models_dir=models, **fields)


def plugin_dir(tmp_path: Path, files: dict[str, str], name: str = "plugins") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file_name, source in files.items():
        (folder / file_name).write_text(textwrap.dedent(source), "utf-8")
    return folder


def names(pm) -> set[str]:
    return {name for name, plugin in pm.manager.list_name_plugin() if plugin is not None}


def entry_point_names(pm) -> set[str]:
    return {pm.manager.get_name(plugin) for plugin, _ in pm.manager.list_plugin_distinfo()}


# --- registration


def test_default_plugins_are_registered(tmp_path):
    pm = make_plugin_manager(config(tmp_path))
    assert names(pm) - entry_point_names(pm) == BUILTIN_NAMES
    assert {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS} == DEFAULT_NAMES
    for name in DEFAULT_NAMES:
        assert pm.manager.get_plugin(name).__name__ == f"ggufd.default_plugins.{name}"


def test_the_families_are_built_in_plugins_without_any_plugins_dir(tmp_path):
    cfg = config(tmp_path)
    assert cfg.plugins_dir is None
    pm = make_plugin_manager(cfg)
    assert {m.rsplit(".", 1)[-1] for m in FAMILY_PLUGINS} == FAMILY_NAMES
    for name in FAMILY_NAMES:
        plugin = pm.manager.get_plugin(name)
        assert plugin.__name__ == f"ggufd.families.{name}"
        assert Path(plugin.__file__) == REPO / "ggufd" / "families" / f"{name}.py"
        assert pm.origins[name] == BUILTIN_ORIGIN
    assert pm.failures == []


def test_every_subpackage_is_in_the_wheel():
    """pyproject.toml lists the packages by hand: a missing one (ggufd.families once) is left out of
    the wheel, and the checkout would never notice (tests/test_wheel.py builds one)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "ggufd").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
    assert "ggufd.families" in listed


def test_the_checkouts_plugins_folder_holds_no_plugins():
    # it is a drop-in folder for local plugins (plugins/README.md); the families live in the package
    assert sorted(path.name for path in (REPO / "plugins").glob("*.py")) == []
    assert (REPO / "plugins" / "README.md").is_file() and (REPO / "plugins" / "examples").is_dir()


def test_plugins_dir_modules_register_under_their_file_stem(tmp_path):
    folder = plugin_dir(
        tmp_path,
        {
            "my_family.py": "import ggufd\n@ggufd.hookimpl\ndef stop_sequences(model):\n    return ['<|mine|>']\n",
            "other.py": "import ggufd\n@ggufd.hookimpl\ndef startup(config):\n    pass\n",
            "_private.py": "raise RuntimeError('underscore files are not plugins')\n",
            "notes.txt": "not python",
        },
    )
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder))
    assert {"my_family", "other"} <= names(pm)
    assert "_private" not in names(pm)
    assert Path(pm.manager.get_plugin("my_family").__file__) == folder / "my_family.py"
    # registered after the families: called before them (pluggy calls the last registration first)
    families = [name.rsplit(".", 1)[-1] for name in FAMILY_PLUGINS]
    with_stops = [name for name in families if hasattr(pm.manager.get_plugin(name), "stop_sequences")]
    assert [impl.plugin_name for impl in pm.hook.stop_sequences.get_hookimpls()] == with_stops + ["my_family"]


@pytest.mark.parametrize("blocked", ["gemma", "gpt_oss", "gguf_template", "directory_discovery"])
def test_disable_plugins_blocks_a_plugin_by_name(tmp_path, blocked):
    pm = make_plugin_manager(config(tmp_path, disable_plugins=(blocked,)))
    assert blocked not in names(pm)
    assert pm.manager.is_blocked(blocked)
    assert names(pm) - entry_point_names(pm) == BUILTIN_NAMES - {blocked}


def test_disable_plugins_also_accepts_the_full_module_name(tmp_path):
    pm = make_plugin_manager(
        config(tmp_path, disable_plugins=("ggufd.default_plugins.config_models", "ggufd.families.phi"))
    )
    assert "config_models" not in names(pm)
    assert "phi" not in names(pm)
    assert names(pm) - entry_point_names(pm) == BUILTIN_NAMES - {"config_models", "phi"}


def test_a_disabled_gemma_family_leaves_gemma_models_to_the_gguf_template(tmp_path):
    gemma = model_info(family="gemma", architecture="gemma3")
    messages = [{"role": "user", "content": "Hi"}]
    assert render(make_plugin_manager(config(tmp_path)), gemma, messages).text.startswith("<start_of_turn>user")
    pm = make_plugin_manager(config(tmp_path, disable_plugins=("gemma",)))
    assert pm.detect_family(gemma.metadata, gemma.spec) == "generic"
    assert render(pm, gemma, messages).text == "User: Hi\nAssistant:"  # the generic transcript


def test_a_blocked_plugins_dir_file_is_not_even_imported(tmp_path):
    folder = plugin_dir(tmp_path, {"broken.py": "raise RuntimeError('must not be imported')\n"})
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder, disable_plugins=("broken",)))
    assert "broken" not in names(pm)


def test_a_broken_plugin_is_reported_and_left_out_unless_plugins_are_required(tmp_path):
    folder = plugin_dir(
        tmp_path,
        {
            "broken.py": "import ggufd\nraise RuntimeError('boom at import')\n",
            "misspelt.py": "import ggufd\n@ggufd.hookimpl\ndef formatt_chat(model, messages):\n    return None\n",
            "fine.py": "import ggufd\n@ggufd.hookimpl\ndef stop_sequences(model):\n    return ['FINE']\n",
        },
    )
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder))
    assert {"fine", "gguf_template"} <= names(pm) and not {"broken", "misspelt"} & names(pm)
    failures = {f["name"]: f for f in pm.failures}
    assert set(failures) == {"broken", "misspelt"}
    assert "boom at import" in failures["broken"]["error"] and str(folder / "broken.py") == failures["broken"]["source"]
    assert "formatt_chat" in failures["misspelt"]["error"]
    assert pm.hook.stop_sequences(model=model_info(family="generic")) == [["FINE"]]


def test_a_plugin_file_that_fails_to_import_is_a_plugin_error_naming_the_file(tmp_path):
    folder = plugin_dir(tmp_path, {"broken.py": "import ggufd\nraise RuntimeError('boom at import')\n"})
    with pytest.raises(PluginError) as info:
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))
    message = str(info.value)
    assert str(folder / "broken.py") in message
    assert "boom at import" in message
    assert "ggufd_plugins.broken" not in __import__("sys").modules


def test_a_plugin_file_with_a_syntax_error_is_a_plugin_error(tmp_path):
    folder = plugin_dir(tmp_path, {"typo.py": "def detect_family(:\n"})
    with pytest.raises(PluginError, match="typo.py"):
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))


def test_an_unknown_hook_name_is_a_plugin_error(tmp_path):
    folder = plugin_dir(
        tmp_path,
        {"misspelt.py": "import ggufd\n@ggufd.hookimpl\ndef formatt_chat(model, messages):\n    return None\n"},
    )
    with pytest.raises(PluginError) as info:
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))
    message = str(info.value)
    assert "formatt_chat" in message
    assert "misspelt" in message


def test_a_hook_with_an_unknown_argument_is_a_plugin_error_naming_the_file(tmp_path):
    folder = plugin_dir(
        tmp_path,
        {
            "badsig.py": "import ggufd\n@ggufd.hookimpl\ndef format_chat(model, messages, temperature):\n    return None\n"
        },
    )
    with pytest.raises(PluginError) as info:
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))
    message = str(info.value)
    assert str(folder / "badsig.py") in message
    assert "temperature" in message


def test_a_plugins_dir_file_named_like_a_builtin_is_a_plugin_error(tmp_path):
    folder = plugin_dir(tmp_path, {"gguf_template.py": "import ggufd\n"})
    with pytest.raises(PluginError) as info:
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))
    message = str(info.value)
    assert "gguf_template" in message
    assert str(folder / "gguf_template.py") in message


GEMMA_REPLACEMENT = """
import ggufd

@ggufd.hookimpl
def detect_family(metadata, spec):
    return "gemma" if metadata.architecture == "gemma3" else None

@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != "gemma":
        return None
    return ggufd.ChatPrompt(text="my gemma:" + "|".join(m["content"] for m in messages))
"""


def test_a_plugins_dir_file_named_like_a_family_replaces_it(tmp_path):
    folder = plugin_dir(tmp_path, {"gemma.py": GEMMA_REPLACEMENT})
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))
    assert Path(pm.manager.get_plugin("gemma").__file__) == folder / "gemma.py"
    assert pm.origins["gemma"] == str(folder / "gemma.py")
    assert pm.failures == []
    assert names(pm) - entry_point_names(pm) == BUILTIN_NAMES
    gemma = model_info(family="gemma", architecture="gemma3")
    assert render(pm, gemma, MESSAGES).text == "my gemma:Be brief.|Hi"
    assert pm.stop_sequences(gemma) == ()  # the replacement has none: the built-in's are gone too
    # the other families are untouched
    assert pm.manager.get_plugin("llama3").__name__ == "ggufd.families.llama3"


def test_a_replacement_that_fails_to_load_keeps_the_built_in_family(tmp_path):
    folder = plugin_dir(tmp_path, {"gemma.py": "import ggufd\nraise ImportError('no such thing')\n"})
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder))
    assert [(f["name"], f["source"]) for f in pm.failures] == [("gemma", str(folder / "gemma.py"))]
    assert pm.manager.get_plugin("gemma").__name__ == "ggufd.families.gemma"
    assert pm.origins["gemma"] == BUILTIN_ORIGIN
    with pytest.raises(PluginError, match="no such thing"):
        make_plugin_manager(config(tmp_path, plugins_dir=folder, plugins_required=True))


def test_a_disabled_family_is_not_replaced_by_a_file_of_its_name(tmp_path):
    folder = plugin_dir(tmp_path, {"gemma.py": "raise RuntimeError('must not be imported')\n"})
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder, disable_plugins=("gemma",), plugins_required=True))
    assert "gemma" not in names(pm) and pm.failures == []


def test_a_plugins_dir_file_beats_a_family_it_does_not_replace(tmp_path):
    folder = plugin_dir(tmp_path, {"another_gemma.py": GEMMA_REPLACEMENT.replace("my gemma:", "another:")})
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder))
    assert pm.manager.get_plugin("gemma").__name__ == "ggufd.families.gemma"
    gemma = model_info(family="gemma", architecture="gemma3")
    assert render(pm, gemma, MESSAGES).text == "another:Be brief.|Hi"
    # stop_sequences is not firstresult: the family's end-of-turn markers still apply
    assert pm.stop_sequences(gemma) == ("<end_of_turn>", "<start_of_turn>")


class FakeEntryPoint:
    """Just enough of importlib.metadata.EntryPoint for make_plugin_manager."""

    def __init__(self, name, plugin):
        self.name, self.value, self.dist, self._plugin = name, f"fake_{name}", None, plugin

    def load(self):
        return self._plugin


def module_from_source(name: str, source: str):
    import types

    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


def test_call_order_local_files_then_families_then_entry_points_then_trylast(tmp_path, monkeypatch):
    import importlib.metadata

    installed = module_from_source("installed_family", FAMILY_PLUGIN.format(marker="", family="installed"))
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda **kwargs: [FakeEntryPoint("installed_family", installed)]
    )
    folder = plugin_dir(
        tmp_path, {name: FAMILY_PLUGIN.format(marker="", family=name[:-3]) for name in ("local_a.py", "local_b.py")}
    )
    pm = make_plugin_manager(config(tmp_path, plugins_dir=folder))
    called = [impl.plugin_name for impl in reversed(pm.hook.detect_family.get_hookimpls())]
    families = [name.rsplit(".", 1)[-1] for name in reversed(FAMILY_PLUGINS)]
    assert called == ["local_b", "local_a", *families, "installed_family", "gguf_template"]
    # as from plugins/, in name order
    assert families == [
        "qwen3_coder",
        "qwen3",
        "phi",
        "mistral",
        "llama3",
        "kimi_k2",
        "gpt_oss",
        "glm",
        "gemma",
        "deepseek",
        "chatml",
    ]
    called = [impl.plugin_name for impl in reversed(pm.hook.format_chat.get_hookimpls())]
    assert called == ["template_override", "local_b", "local_a", *families, "installed_family", "gguf_template"]
    # so an installed plugin answers only for models no family claims (tryfirst changes that)
    gemma = model_info(family="gemma", architecture="gemma3")
    assert pm.detect_family(gemma.metadata, gemma.spec) == "local_b"


def test_an_entry_point_named_like_a_family_replaces_it(tmp_path, monkeypatch):
    import importlib.metadata

    installed = module_from_source("gemma_ep", GEMMA_REPLACEMENT.replace("my gemma:", "installed:"))
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [FakeEntryPoint("gemma", installed)])
    pm = make_plugin_manager(config(tmp_path, plugins_required=True))
    assert pm.manager.get_plugin("gemma") is installed and pm.origins["gemma"] == "fake_gemma"
    assert render(pm, model_info(family="gemma"), MESSAGES).text == "installed:Be brief.|Hi"


def test_a_subset_of_hook_arguments_is_accepted(tmp_path):
    folder = plugin_dir(
        tmp_path, {"lean.py": "import ggufd\n@ggufd.hookimpl\ndef detect_family(metadata):\n    return None\n"}
    )
    assert "lean" in names(make_plugin_manager(config(tmp_path, plugins_dir=folder)))


# --- precedence on a real (tiny) GGUF


@pytest.fixture
def tiny_info(tiny_model, tmp_path) -> ModelInfo:
    models = tmp_path / "tiny-models"
    models.mkdir()
    shutil.copy(tiny_model, models / "tiny.gguf")
    cfg = Config(models_dir=models)
    registry = build_registry(cfg, make_plugin_manager(cfg))
    info = registry.get("tiny")
    assert info.family == "gguf-template"  # ChatML template in the GGUF, not a gemma
    return info


FAMILY_PLUGIN = """
import ggufd

@ggufd.hookimpl{marker}
def detect_family(metadata, spec):
    return "{family}"

@ggufd.hookimpl{marker}
def format_chat(model, messages):
    if model.family != "{family}":
        return None
    return ggufd.ChatPrompt(text="{family}:" + "|".join(m["content"] for m in messages), stop=("<{family}>",))
"""


def family_manager(tmp_path, marker: str = "", family: str = "fam"):
    folder = plugin_dir(
        tmp_path, {f"{family}.py": FAMILY_PLUGIN.format(marker=marker, family=family)}, name=f"p-{family}"
    )
    return make_plugin_manager(Config(models_dir=tmp_path, plugins_dir=folder))


def test_gguf_template_renders_when_no_other_plugin_answers(tiny_info, tmp_path):
    pm = make_plugin_manager(Config(models_dir=tmp_path))
    prompt = pm.format_chat(model=tiny_info, messages=MESSAGES)
    assert isinstance(prompt, ChatPrompt)
    assert (
        prompt.text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("marker", ["", "(tryfirst=True)"])
def test_a_family_plugin_beats_gguf_template(tiny_info, tmp_path, marker):
    pm = family_manager(tmp_path, marker)
    assert pm.hook.detect_family(metadata=tiny_info.metadata, spec=tiny_info.spec) == "fam"
    info = replace(tiny_info, family="fam")
    prompt = pm.format_chat(model=info, messages=MESSAGES)
    assert prompt == ChatPrompt(text="fam:Be brief.|Hi", stop=("<fam>",))
    # a model of another family falls through to the GGUF's own template
    assert pm.format_chat(model=tiny_info, messages=MESSAGES).text.startswith("<|im_start|>system")


def test_a_family_plugin_wins_detection_in_the_registry(tiny_model, tmp_path):
    pm = family_manager(tmp_path)
    models = tmp_path / "served"
    models.mkdir()
    shutil.copy(tiny_model, models / "tiny.gguf")
    registry = build_registry(Config(models_dir=models), pm)
    assert registry.get("tiny").family == "fam"


def test_a_configured_chat_template_beats_a_tryfirst_family_plugin(tiny_info, tmp_path):
    pm = family_manager(tmp_path, "(tryfirst=True)")
    spec = replace(
        tiny_info.spec, options={"chat_template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}>"}
    )
    info = replace(tiny_info, spec=spec, family="fam")
    assert pm.format_chat(model=info, messages=MESSAGES).text == "[system]Be brief.[user]Hi>"


def test_disabling_template_override_lets_the_family_plugin_answer(tiny_info, tmp_path):
    folder = plugin_dir(tmp_path, {"fam.py": FAMILY_PLUGIN.format(marker="", family="fam")})
    pm = make_plugin_manager(Config(models_dir=tmp_path, plugins_dir=folder, disable_plugins=("template_override",)))
    spec = replace(tiny_info.spec, options={"chat_template": "ignored"})
    info = replace(tiny_info, spec=spec, family="fam")
    assert pm.format_chat(model=info, messages=MESSAGES).text == "fam:Be brief.|Hi"


def test_gemma_plugin_detects_by_file_name_and_formats_gemma_turns(tiny_info, tmp_path):
    pm = make_plugin_manager(Config(models_dir=tmp_path))
    spec = replace(tiny_info.spec, id="my-gemma", path=tiny_info.path.with_name("My-Gemma-2b.gguf"))
    assert pm.hook.detect_family(metadata=tiny_info.metadata, spec=spec) == "gemma"
    info = ModelInfo(spec=spec, metadata=tiny_info.metadata, family="gemma")
    prompt = pm.format_chat(model=info, messages=MESSAGES)
    assert prompt.text == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert prompt.stop == ("<end_of_turn>",)
    assert pm.hook.stop_sequences(model=info) == [["<end_of_turn>", "<start_of_turn>"]]
    assert pm.hook.stop_sequences(model=tiny_info) == []


def test_without_gguf_template_a_model_has_no_family_answer(tiny_info, tmp_path):
    pm = make_plugin_manager(Config(models_dir=tmp_path, disable_plugins=("gguf_template",)))
    assert pm.hook.detect_family(metadata=tiny_info.metadata, spec=tiny_info.spec) is None
    assert pm.format_chat(model=tiny_info, messages=MESSAGES) is None


def test_read_metadata_model_info_without_the_registry(tiny_model, tmp_path):
    metadata = read_metadata(tiny_model)
    info = ModelInfo(spec=ModelSpec(id="t", path=tiny_model), metadata=metadata, family="generic")
    pm = make_plugin_manager(Config(models_dir=tmp_path))
    # gguf_template renders the GGUF's template whatever the family name says
    assert (
        pm.format_chat(model=info, messages=MESSAGES[1:]).text
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


# --- describe_plugins


def test_describe_plugins_lists_hooks_per_plugin(tmp_path):
    pm = make_plugin_manager(config(tmp_path))
    described = {entry["name"]: entry for entry in describe_plugins(pm)}
    assert described["gemma"] == {
        "name": "gemma",
        "hooks": ["detect_family", "format_chat", "stop_sequences"],
        "origin": BUILTIN_ORIGIN,
        "version": None,
    }
    assert described["gpt_oss"]["hooks"] == [
        "answer_filter",
        "detect_family",
        "format_chat",
        "parse_tool_calls",
        "stop_sequences",
    ]
    assert described["directory_discovery"]["hooks"] == ["discover_models"]
    assert described["config_models"]["hooks"] == ["discover_models"]
    assert described["template_override"]["hooks"] == ["format_chat"]
    assert described["gguf_template"]["hooks"] == ["detect_family", "format_chat"]
    assert described["gguf_template"]["origin"].startswith("ggufd ") and described["gguf_template"]["origin"].endswith(
        "(built-in)"
    )


def test_describe_plugins_skips_blocked_plugins(tmp_path):
    pm = make_plugin_manager(config(tmp_path, disable_plugins=("gemma",)))
    assert "gemma" not in {entry["name"] for entry in describe_plugins(pm)}


# --- the hook contracts


def hookspec_functions() -> dict:
    return {
        name: func for name, func in vars(hookspecs).items() if inspect.isfunction(func) and hasattr(func, "ggufd_spec")
    }


def test_hookspecs_are_the_documented_set():
    assert set(hookspec_functions()) == {
        "discover_models",
        "detect_family",
        "format_chat",
        "stop_sequences",
        "parse_tool_calls",
        "tool_call_openers",
        "tool_call_stream",
        "markup_tokens",
        "answer_filter",
        "startup",
        "shutdown",
    }


@pytest.mark.parametrize(
    "name",
    [name for name in sorted(hookspec_functions())],
)
def test_every_hookspec_documents_its_parameters_and_result(name):
    func = hookspec_functions()[name]
    doc = inspect.getdoc(func) or ""
    assert len(doc) >= 60, f"{name}: docstring too short"
    parameters = list(inspect.signature(func).parameters)
    for parameter in parameters:
        assert f":param {parameter}:" in doc, f"{name}: parameter {parameter} undocumented"
    returns = inspect.signature(func).return_annotation
    if returns not in ("None", None, inspect.Signature.empty):
        assert ":returns:" in doc, f"{name}: result undocumented"
    lines = [line for line in doc.splitlines() if line.strip()]
    # a summary line plus one line per parameter and one for the result, at least
    needed = 1 + len(parameters) + (returns not in ("None", None, inspect.Signature.empty))
    assert len(lines) >= needed, f"{name}: needs a few lines"
    if func.ggufd_spec.get("firstresult"):
        assert "firstresult" in doc, f"{name}: firstresult semantics undocumented"


def test_every_hook_is_implemented_by_a_builtin_plugin(tmp_path):
    pm = make_plugin_manager(config(tmp_path))
    implemented = {hook for entry in describe_plugins(pm) for hook in entry["hooks"]}
    unimplemented = set(hookspec_functions()) - implemented
    assert unimplemented <= {"startup", "shutdown"}, unimplemented
