"""The ``ggufd`` command line, run as ``python -m ggufd`` subprocesses with temporary configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf_factory  # tests/gguf_factory.py
import pytest
from conftest import REPO, write_config

from ggufd import __version__
from ggufd.plugins import BUILTIN_ORIGIN


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every variable ggufd reads, so only the test's settings count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GGUFD_", "GGUF_", "LLAMA_"))}
    env.update(extra)
    return env


def ggufd(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ggufd", *args],
        cwd=REPO,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def served(tiny_model, tmp_path) -> Path:
    """A models folder holding a copy of the tiny model."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.gguf")
    return folder


@pytest.fixture
def good_config(served, tmp_path) -> Path:
    return write_config(tmp_path / "ggufd.toml", {"models_dir": str(served)})


def test_version():
    result = ggufd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ggufd {__version__}"


def test_check_config_lists_each_model_with_family_and_path(good_config, served):
    result = ggufd("--check-config", "--config", str(good_config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"* tiny  family=gguf-template  {served / 'tiny.gguf'}"]
    gpu = next(line for line in result.stderr.splitlines() if line.startswith("GPU offload: "))
    assert (
        gpu.startswith("GPU offload: no - this llama-cpp-python build is CPU-only")
        and 'CMAKE_ARGS="-DGGML_CUDA=on"' in gpu
    )
    assert f"config OK: {good_config}" in result.stderr


def test_check_config_lists_configured_models_and_aliases(served, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(served / "tiny.gguf", elsewhere / "second.gguf")
    config = write_config(
        tmp_path / "ggufd.toml",
        {
            "models_dir": str(served),
            "default_model": "tiny-alias",
            "models": {
                "tiny": {"aliases": ["tiny-alias"]},
                "extra": {"path": "elsewhere/second.gguf", "family": "custom"},
            },
        },
    )
    result = ggufd("--check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"  extra  family=custom  {elsewhere / 'second.gguf'}",
        f"* tiny  family=gguf-template  {served / 'tiny.gguf'} (aliases: tiny-alias)",
    ]


def test_check_config_reports_a_non_gguf_file_and_exits_1(served, good_config):
    gguf_factory.write_not_gguf(served / "junk.gguf")
    result = ggufd("--check-config", "--config", str(good_config))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"* tiny  family=gguf-template  {served / 'tiny.gguf'}" in lines
    skipped = [line for line in lines if line.startswith("! skipped")]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"! skipped {served / 'junk.gguf'}: ")
    assert "not a GGUF file" in skipped[0]
    assert "1 model file(s) cannot be served" in result.stderr
    assert "config OK" not in result.stderr


def test_check_config_json(served, good_config):
    gguf_factory.write_not_gguf(served / "junk.gguf")
    result = ggufd("--check-config", "--json", "--config", str(good_config))
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["default_model"] == "tiny"
    assert doc["models"] == [
        {"id": "tiny", "family": "gguf-template", "path": str(served / "tiny.gguf"), "aliases": []}
    ]
    assert [(s["id"], s["path"]) for s in doc["skipped"]] == [("junk", str(served / "junk.gguf"))]
    assert "not a GGUF file" in doc["skipped"][0]["reason"]
    assert doc["gpu"] == {"offload": False, "backends": [], "devices": [], "problems": []}


def test_check_config_with_an_empty_models_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "ggufd.toml", {"models_dir": "empty"})
    result = ggufd("--check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no models found"


def test_unknown_key_exits_2_naming_the_key_and_the_file(served, tmp_path):
    config = write_config(tmp_path / "bad.toml", {"models_dir": str(served), "model_dir": "x"})
    result = ggufd("--check-config", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ggufd: configuration error: {config}: model_dir: unknown key 'model_dir'"
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [(), ("models",), ("plugins",)])
def test_every_command_refuses_a_bad_config(served, tmp_path, command):
    config = write_config(tmp_path / "bad.toml", {"models_dir": str(served), "port": 70000})
    result = ggufd(*(command or ("--check-config",)), "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: port:" in result.stderr


def test_missing_config_file_exits_2(tmp_path):
    result = ggufd("--check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert f"{tmp_path / 'absent.toml'}: config file not found" in result.stderr


def test_default_model_naming_an_absent_model_exits_2(served, tmp_path):
    config = write_config(tmp_path / "ggufd.toml", {"models_dir": str(served), "default_model": "absent-model"})
    result = ggufd("--check-config", "--config", str(config))
    assert result.returncode == 2
    assert "default_model" in result.stderr
    assert "'absent-model' is not among the served models (tiny)" in result.stderr
    assert str(config) in result.stderr


def test_a_broken_plugin_fails_check_config_and_exits_2_when_plugins_are_required(served, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "badsig.py").write_text(
        "import ggufd\n@ggufd.hookimpl\ndef detect_family(metadata, spec, extra):\n    return None\n"
    )
    config = write_config(tmp_path / "ggufd.toml", {"models_dir": str(served), "plugins_dir": str(plugins)})
    result = ggufd("--check-config", "--config", str(config))
    assert (
        result.returncode == 1
        and "plugin badsig not loaded" in result.stdout
        and str(plugins / "badsig.py") in result.stdout
    )
    assert "tiny" in result.stdout  # the models are still listed
    config = write_config(
        tmp_path / "ggufd.toml", {"models_dir": str(served), "plugins_dir": str(plugins), "plugins_required": True}
    )
    result = ggufd("--check-config", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("ggufd: configuration error: ")
    assert str(plugins / "badsig.py") in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_variables_reach_the_command(served, tmp_path):
    config = write_config(tmp_path / "ggufd.toml", {"models_dir": str(tmp_path)})  # no models there
    result = ggufd("models", env=clean_env(GGUFD_CONFIG=str(config), GGUF_MODELS_DIR=str(served)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"* tiny  family=gguf-template  {served / 'tiny.gguf'}"]
    # --models-dir beats the environment
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ggufd(
        "models", "--models-dir", str(empty), env=clean_env(GGUFD_CONFIG=str(config), GGUF_MODELS_DIR=str(served))
    )
    assert result.stdout.strip() == "no models found"


def test_bad_environment_value_exits_2_naming_the_variable(good_config):
    result = ggufd("--check-config", "--config", str(good_config), env=clean_env(LLAMA_N_CTX="big"))
    assert result.returncode == 2
    assert "environment variable LLAMA_N_CTX='big'" in result.stderr


def test_plugins_lists_gemma_with_its_hooks(good_config):
    result = ggufd("plugins", "--config", str(good_config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    index = lines.index(f"gemma  ({BUILTIN_ORIGIN})")  # a family shipped in the package
    assert lines[index + 1] == "    hooks: detect_family, format_chat, stop_sequences"
    for name in ("directory_discovery", "config_models", "template_override", "gguf_template"):
        assert any(line.startswith(f"{name}  (") for line in lines), name


def test_plugins_json(good_config):
    result = ggufd("--json", "plugins", "--config", str(good_config))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["failed"] == []
    plugins = {entry["name"]: entry for entry in listing["plugins"]}
    assert plugins["gemma"]["hooks"] == ["detect_family", "format_chat", "stop_sequences"]
    assert plugins["gguf_template"]["hooks"] == ["detect_family", "format_chat"]
    for family in ("gemma", "llama3", "chatml", "mistral", "phi", "deepseek", "gpt_oss", "glm", "kimi_k2"):
        assert plugins[family]["origin"] == BUILTIN_ORIGIN, family


def test_plugins_respects_disable_plugins(served, tmp_path):
    config = write_config(tmp_path / "ggufd.toml", {"models_dir": str(served), "disable_plugins": ["gemma"]})
    result = ggufd("plugins", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert not any(line.startswith("gemma") for line in result.stdout.splitlines())


def test_json_models_parses(served, good_config):
    gguf_factory.write_not_gguf(served / "junk.gguf")
    result = ggufd("--json", "models", "--config", str(good_config))
    assert result.returncode == 0, result.stderr  # only --check-config fails on skipped files
    doc = json.loads(result.stdout)
    assert set(doc) == {"default_model", "models", "skipped"}
    assert doc["default_model"] == "tiny"
    assert [(m["id"], m["family"], m["path"]) for m in doc["models"]] == [
        ("tiny", "gguf-template", str(served / "tiny.gguf"))
    ]
    assert [s["id"] for s in doc["skipped"]] == ["junk"]


def test_unknown_command_is_a_usage_error():
    result = ggufd("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
