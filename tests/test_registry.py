"""Model discovery and the registry: ids, split files, bad files, symlinks, config tables,
lookups (aliases, default, hostile names) and family detection."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gguf_factory
import pytest

from ggufd.config import load_config
from ggufd.errors import ConfigError, ModelNotFound
from ggufd.plugins import FAMILY_PLUGINS, make_plugin_manager
from ggufd.registry import build_registry

REPO = Path(__file__).resolve().parent.parent
#: the built-in model families, by plugin name (disable_plugins switches them off)
FAMILIES = [name.rsplit(".", 1)[-1] for name in FAMILY_PLUGINS]


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory) -> Path:
    return gguf_factory.write_tiny_llama(tmp_path_factory.mktemp("plain") / "plain.gguf", chat_template=None)


@pytest.fixture(scope="module")
def broken_template_model(tmp_path_factory) -> Path:
    return gguf_factory.write_tiny_llama(
        tmp_path_factory.mktemp("broken") / "broken.gguf", chat_template="{% for message in %}"
    )


def toml_str(value) -> str:
    return json.dumps(str(value))


def registry_for(
    tmp_path: Path,
    models_dir: Path,
    extra: str = "",
    *,
    families: bool = True,
):
    """Write a TOML config and build the registry with the real plugin manager; without
    ``families`` the built-in family plugins are disabled (only the defaults answer)."""
    lines = [f"models_dir = {toml_str(models_dir)}"]
    if not families:
        lines.append(f"disable_plugins = {json.dumps(FAMILIES)}")
    config_path = tmp_path / "ggufd.toml"
    # top-level keys first, tables (extra) after
    config_path.write_text("\n".join(lines) + "\n" + extra)
    config = load_config(config_path, environ={})
    return build_registry(config, make_plugin_manager(config))


def copy_model(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


@pytest.fixture
def models_dir(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- ids


def test_id_is_the_file_name_without_gguf(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf")
    copy_model(tiny_model, models_dir / "with space & ünïcode.gguf")
    (models_dir / "notes.txt").write_text("not a model")
    (models_dir / "model.gguf.part").write_bytes(b"partial download")
    registry = registry_for(tmp_path, models_dir)
    assert sorted(registry.models) == ["Meta-Llama-3-8B-Instruct.Q4_K_M", "with space & ünïcode"]
    info = registry.get("Meta-Llama-3-8B-Instruct.Q4_K_M")
    assert info.id == "Meta-Llama-3-8B-Instruct.Q4_K_M"
    assert info.path == models_dir / "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf"
    assert info.metadata.architecture == "llama"
    assert registry.skipped == ()
    assert len(registry) == 2 and {m.id for m in registry} == set(registry.models)


def test_environment_config_without_file(tiny_model, models_dir):
    copy_model(tiny_model, models_dir / "tiny.gguf")
    config = load_config(None, environ={"GGUF_MODELS_DIR": str(models_dir)})
    assert config.models_dir == models_dir.resolve()
    registry = build_registry(config, make_plugin_manager(config))
    assert list(registry.models) == ["tiny"]
    assert registry.default_id == "tiny"


# --------------------------------------------------------------------------- split models


def test_split_model_appears_once_as_its_base_name(tiny_model, tmp_path, models_dir):
    first = copy_model(tiny_model, models_dir / "big-model-00001-of-00003.gguf")
    # Only the first shard's metadata is read; the others are just present.
    (models_dir / "big-model-00002-of-00003.gguf").write_bytes(b"\x00" * 64)
    (models_dir / "big-model-00003-of-00003.gguf").write_bytes(b"shard three")
    registry = registry_for(tmp_path, models_dir)
    assert list(registry.models) == ["big-model"]
    assert registry.get("big-model").path == first
    assert registry.skipped == ()
    for shard in ("big-model-00001-of-00003", "big-model-00002-of-00003"):
        with pytest.raises(ModelNotFound):
            registry.get(shard)


def test_incomplete_split_set_is_skipped(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "half-00001-of-00003.gguf")
    (models_dir / "half-00003-of-00003.gguf").write_bytes(b"x")
    copy_model(tiny_model, models_dir / "whole.gguf")
    registry = registry_for(tmp_path, models_dir)
    assert list(registry.models) == ["whole"]
    for name in ("half", "half-00001-of-00003"):
        with pytest.raises(ModelNotFound):
            registry.get(name)


def test_split_set_without_its_first_shard_is_skipped(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "nofirst-00002-of-00002.gguf")
    registry = registry_for(tmp_path, models_dir)
    assert len(registry) == 0


# --------------------------------------------------------------------------- bad files


def test_bad_files_are_reported_and_the_rest_served(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "good.gguf")
    gguf_factory.write_not_gguf(models_dir / "random.gguf")
    gguf_factory.write_truncated_gguf(tiny_model, models_dir / "cut.gguf", 200)
    (models_dir / "empty.gguf").write_bytes(b"")
    registry = registry_for(tmp_path, models_dir)
    assert list(registry.models) == ["good"]
    skipped = {s.id: s for s in registry.skipped}
    assert set(skipped) == {"cut", "empty", "random"}
    for item in skipped.values():
        assert item.reason and isinstance(item.reason, str)
        assert Path(item.path).parent == models_dir
    # reasons say something about the file, not a traceback
    assert "Traceback" not in " ".join(s.reason for s in registry.skipped)
    assert registry.default_id == "good"
    with pytest.raises(ModelNotFound):
        registry.get("random")


# --------------------------------------------------------------------------- symlinks


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks(tiny_model, tmp_path, models_dir):
    outside = copy_model(tiny_model, tmp_path / "elsewhere" / "secret.gguf")
    inside = copy_model(tiny_model, models_dir / "real.gguf")
    (models_dir / "escape.gguf").symlink_to(outside)
    (models_dir / "alias-link.gguf").symlink_to(inside)
    (models_dir / "dangling.gguf").symlink_to(models_dir / "missing.gguf")
    (models_dir / "dir.gguf").mkdir()
    registry = registry_for(tmp_path, models_dir)
    assert sorted(registry.models) == ["alias-link", "real"]
    assert registry.get("alias-link").path == models_dir / "alias-link.gguf"
    for name in ("escape", "dangling", "dir", "secret"):
        with pytest.raises(ModelNotFound):
            registry.get(name)
    assert registry.skipped == ()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_subfolder_pointing_outside_is_not_followed(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, tmp_path / "outside" / "leak.gguf")
    (models_dir / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    registry = registry_for(tmp_path, models_dir, "recursive = true\n")
    assert "leak" not in registry.models


# --------------------------------------------------------------------------- recursion


def test_non_recursive_by_default(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "top.gguf")
    copy_model(tiny_model, models_dir / "sub" / "nested.gguf")
    copy_model(tiny_model, models_dir / "sub" / "deeper" / "deep.gguf")
    registry = registry_for(tmp_path, models_dir)
    assert list(registry.models) == ["top"]

    registry = registry_for(tmp_path, models_dir, "recursive = true\n")
    assert sorted(registry.models) == ["sub/deeper/deep", "sub/nested", "top"]  # sub-folder ids keep their folders
    assert registry.get("sub/nested").path == models_dir / "sub" / "nested.gguf"
    assert registry.get("sub/deeper/deep").path == models_dir / "sub" / "deeper" / "deep.gguf"


# --------------------------------------------------------------------------- config tables


def test_explicit_model_outside_models_dir_is_served(tiny_model, tmp_path, models_dir):
    outside = copy_model(tiny_model, tmp_path / "other" / "file-name.gguf")
    copy_model(tiny_model, models_dir / "local.gguf")
    extra = f'[models."custom id"]\npath = {toml_str(outside)}\naliases = ["cid"]\nn_ctx = 128\n'
    registry = registry_for(tmp_path, models_dir, extra)
    assert sorted(registry.models) == ["custom id", "local"]
    info = registry.get("custom id")
    assert info.path == outside
    assert info.spec.source == "config"
    assert info.options["n_ctx"] == 128
    assert registry.get("cid") is info
    # the file's own name is not an id
    with pytest.raises(ModelNotFound):
        registry.get("file-name")


def test_explicit_table_with_path_wins_over_the_discovered_model(tiny_model, no_template_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "same.gguf")
    extra = f'[models."same"]\npath = {toml_str(no_template_model)}\n'
    registry = registry_for(tmp_path, models_dir, extra)
    assert registry.get("same").path == no_template_model
    assert registry.get("same").spec.source == "config"


def test_table_without_path_adds_settings_to_the_discovered_model(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "tiny.gguf")
    extra = '[models."tiny"]\naliases = ["t", "small"]\nn_ctx = 256\n[models."tiny".sampling]\ntemperature = 0.5\n'
    registry = registry_for(tmp_path, models_dir, extra)
    info = registry.get("tiny")
    assert info.path == models_dir / "tiny.gguf"
    assert info.spec.source == "directory"
    assert info.spec.aliases == ("t", "small")
    assert info.options["n_ctx"] == 256
    assert info.options["sampling"]["temperature"] == 0.5
    assert registry.get("t") is info and registry.get("small") is info


def test_table_for_a_missing_model_is_ignored(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "tiny.gguf")
    registry = registry_for(tmp_path, models_dir, '[models."ghost"]\naliases = ["boo"]\n')
    assert list(registry.models) == ["tiny"]
    for name in ("ghost", "boo"):
        with pytest.raises(ModelNotFound):
            registry.get(name)


def test_alias_that_names_another_model_is_ignored(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "a.gguf")
    copy_model(tiny_model, models_dir / "b.gguf")
    registry = registry_for(tmp_path, models_dir, '[models."a"]\naliases = ["b", "x"]\n[models."b"]\naliases = ["x"]\n')
    assert registry.get("b").id == "b"
    assert registry.get("x").id == "a"  # first come (sorted ids), first served
    assert dict(registry.aliases) == {"x": "a"}


# --------------------------------------------------------------------------- lookups


@pytest.fixture
def two_models(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "alpha.gguf")
    copy_model(tiny_model, models_dir / "beta.gguf")
    return registry_for(tmp_path, models_dir, '[models."beta"]\naliases = ["b"]\n')


def test_get_resolves_ids_aliases_and_default(two_models):
    registry = two_models
    assert registry.get("alpha").id == "alpha"
    assert registry.get("b").id == "beta"
    # no default_model: the first id in sort order
    assert registry.default_id == "alpha"
    assert registry.get(None).id == "alpha"
    assert registry.get("").id == "alpha"


@pytest.mark.parametrize("name", ["gamma", "ALPHA", "alpha.gguf", "alpha ", "b2"])
def test_unknown_model_is_404_model_not_found(two_models, name):
    with pytest.raises(ModelNotFound) as info:
        two_models.get(name)
    error = info.value
    assert error.status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.to_dict()["error"]["code"] == "model_not_found"


def test_hostile_names_never_reach_files(two_models, models_dir, tiny_model):
    copy_model(tiny_model, models_dir / "sub" / "hidden.gguf")  # exists, but not served (non-recursive)
    registry = two_models
    names = [
        "../alpha",
        "../models/alpha",
        "./alpha",
        "sub/hidden",
        "sub/../alpha",
        str(models_dir / "alpha"),
        str(models_dir / "alpha.gguf"),
        "/etc/passwd",
        "alpha\x00",
        "alpha\x00.gguf",
        "\x00",
        "~/alpha",
        "alpha/",
        "%2e%2e/alpha",
    ]
    for name in names:
        with pytest.raises(ModelNotFound) as info:
            registry.get(name)
        assert info.value.status == 404
        # the message names the request, never a filesystem path of the server
        assert str(models_dir) not in info.value.message or str(models_dir) in name


def test_default_model_by_id_or_alias(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "alpha.gguf")
    copy_model(tiny_model, models_dir / "beta.gguf")
    registry = registry_for(tmp_path, models_dir, 'default_model = "beta"\n')
    assert registry.default_id == "beta" and registry.get(None).id == "beta"

    registry = registry_for(tmp_path, models_dir, 'default_model = "bb"\n[models."beta"]\naliases = ["bb"]\n')
    assert registry.default_id == "beta" and registry.get("").id == "beta"


def test_default_model_not_served_is_a_config_error(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "alpha.gguf")
    with pytest.raises(ConfigError, match="default_model"):
        registry_for(tmp_path, models_dir, 'default_model = "nope"\n')


def test_no_models(tmp_path, models_dir):
    registry = registry_for(tmp_path, models_dir)
    assert len(registry) == 0
    assert registry.default_id is None
    for name in (None, "", "anything"):
        with pytest.raises(ModelNotFound) as info:
            registry.get(name)
        assert info.value.code == "model_not_found"


# --------------------------------------------------------------------------- family


def test_detect_family(tiny_model, no_template_model, broken_template_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "chatml.gguf")
    copy_model(no_template_model, models_dir / "plain.gguf")
    copy_model(broken_template_model, models_dir / "broken.gguf")
    copy_model(tiny_model, models_dir / "my-Gemma-3-test.gguf")
    copy_model(tiny_model, models_dir / "forced.gguf")
    copy_model(tiny_model, models_dir / "gemma-but-not.gguf")
    extra = '[models."forced"]\nfamily = "gemma"\n[models."gemma-but-not"]\nfamily = "chatml-custom"\n'
    registry = registry_for(tmp_path, models_dir, extra)
    families = {info.id: info.family for info in registry}
    assert families == {
        "chatml": "gguf-template",
        "plain": "generic",
        "broken": "generic",
        "my-Gemma-3-test": "gemma",
        "forced": "gemma",
        "gemma-but-not": "chatml-custom",
    }


def test_without_the_family_plugins_a_gemma_name_is_just_a_template_model(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "gemma-lookalike.gguf")
    registry = registry_for(tmp_path, models_dir, families=False)
    assert registry.get("gemma-lookalike").family == "gguf-template"


def test_disabled_gemma_plugin(tiny_model, tmp_path, models_dir):
    copy_model(tiny_model, models_dir / "gemma-lookalike.gguf")
    registry = registry_for(tmp_path, models_dir, 'disable_plugins = ["gemma"]\n')
    assert registry.get("gemma-lookalike").family == "gguf-template"


# --------------------------------------------------------------------------- files that change


def test_refresh_follows_a_changed_file_and_a_file_that_broke(tiny_model, tmp_path, models_dir):
    from ggufd.registry import refresh

    copy_model(tiny_model, models_dir / "a.gguf")
    copy_model(tiny_model, models_dir / "b.gguf")
    config_path = tmp_path / "ggufd.toml"
    config_path.write_text(f"models_dir = {toml_str(models_dir)}\n")
    config = load_config(config_path, environ={})
    plugins = make_plugin_manager(config)
    registry = build_registry(config, plugins)
    assert registry.changed() == {} and set(registry.stamps) == {"a", "b"}

    gguf_factory.write_tiny_llama(models_dir / "a.gguf.part", context_length=777)
    os.replace(models_dir / "a.gguf.part", models_dir / "a.gguf")
    (models_dir / "b.gguf").write_bytes(b"")
    assert set(registry.changed()) == {"a", "b"}
    updated = refresh(registry, ["a", "b"], plugins)
    assert list(updated.models) == ["a"] and updated.models["a"].metadata.context_length == 777
    assert [s.id for s in updated.skipped] == ["b"] and updated.changed() == {}
    assert updated.default_id == "a"

    shutil.copy(tiny_model, models_dir / "b.gguf")  # fixed: served again
    again = refresh(updated, list(updated.changed()), plugins)
    assert list(again.models) == ["a", "b"] and again.skipped == () and again.default_id == "a"
