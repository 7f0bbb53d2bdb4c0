"""Starting the daemon: bad files are skipped, the environment overrides the file, bad configs refuse to start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import gguf_factory
import pytest
from conftest import REPO, write_config
from http_helpers import chat, error_of, request

pytestmark = pytest.mark.e2e


def test_daemon_starts_with_corrupt_truncated_and_split_files(tiny_model, tmp_path, make_daemon):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "good.gguf")
    gguf_factory.write_not_gguf(models / "junk.gguf")
    gguf_factory.write_truncated_gguf(tiny_model, models / "truncated.gguf", 5000)
    (models / "empty.gguf").write_bytes(b"")
    (models / "notes.txt").write_text("not a model")
    shutil.copy(tiny_model, models / "big-00001-of-00002.gguf")
    (models / "big-00002-of-00002.gguf").write_bytes(b"second shard")
    shutil.copy(tiny_model, models / "half-00001-of-00003.gguf")  # shards 2 and 3 missing

    daemon = make_daemon({"models_dir": str(models), "llama": {"n_ctx": 256, "n_threads": 1}})
    health = json.loads(request(daemon.url, path="/health")[2])
    assert health["models"] == ["big", "good"]
    assert {s["id"] for s in health["skipped_files"]} == {"junk", "truncated", "empty"}
    assert all(s["reason"] for s in health["skipped_files"])
    assert daemon.logs("skipping incomplete split model", model="half")
    status, _, body = chat(
        daemon.url, {"model": "good", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    )
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 3
    assert (
        error_of(chat(daemon.url, {"model": "junk", "messages": [{"role": "user", "content": "hi"}]}))["code"]
        == "model_not_found"
    )


def test_environment_overrides_the_file(tiny_model, tmp_path, make_daemon):
    models = tmp_path / "env-models"
    models.mkdir()
    shutil.copy(tiny_model, models / "from-env.gguf")
    other = tmp_path / "file-models"
    other.mkdir()
    daemon = make_daemon(
        {"models_dir": str(other), "llama": {"n_ctx": 512, "n_threads": 1}},
        env={"GGUF_MODELS_DIR": str(models), "LLAMA_N_CTX": "300"},
    )
    assert json.loads(request(daemon.url, path="/health")[2])["models"] == ["from-env"]
    error = error_of(chat(daemon.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}))
    assert error["code"] == "context_length_exceeded" and "maximum context length is 300 tokens" in error["message"]


def test_command_line_overrides_environment(tiny_model, tmp_path, make_daemon):
    models = tmp_path / "cli-models"
    models.mkdir()
    shutil.copy(tiny_model, models / "from-cli.gguf")
    daemon = make_daemon(
        {"models_dir": str(tmp_path)}, env={"GGUF_MODELS_DIR": str(tmp_path)}, args=("--models-dir", str(models))
    )
    assert json.loads(request(daemon.url, path="/health")[2])["models"] == ["from-cli"]


def run_ggufd(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ggufd", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"bogus_key": 1}, "bogus_key"),
        ({"port": "eighty"}, "port"),
        ({"llama": {"n_ctx": -5}}, "llama.n_ctx"),
        ({"models": {"x": {"path": "missing.gguf"}}}, "models.x.path"),
        ({"models_dir": "no/such/folder"}, "models_dir"),
    ],
)
def test_bad_config_refuses_to_start(tmp_path, settings, needle):
    config = write_config(tmp_path / "bad.toml", {"models_dir": str(tmp_path), **settings})
    result = run_ggufd("--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert needle in result.stderr and str(config) in result.stderr


def test_console_script_is_installed():
    script = shutil.which("ggufd", path=str(REPO / ".venv" / "bin")) or shutil.which("ggufd")
    assert script, "the ggufd console script is not on PATH"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ggufd ")


def test_sigterm_exits_zero(tiny_model, tmp_path, make_daemon):
    shutil.copy(tiny_model, tmp_path / "m.gguf")
    daemon = make_daemon({"models_dir": str(tmp_path), "llama": {"n_ctx": 128, "n_threads": 1}})
    assert chat(daemon.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})[0] == 200
    assert daemon.stop() == 0
    assert daemon.logs("stopped")


def test_model_sampling_defaults_apply_and_requests_win(tiny_model, tmp_path, make_daemon):
    shutil.copy(tiny_model, tmp_path / "m.gguf")
    daemon = make_daemon(
        {
            "models_dir": str(tmp_path),
            "llama": {"n_ctx": 256, "n_threads": 1},
            "models": {"m": {"sampling": {"max_tokens": 7, "temperature": 0}}},
        }
    )
    body = {"messages": [{"role": "user", "content": "hi"}]}
    first = json.loads(chat(daemon.url, body)[2])
    assert first["usage"]["completion_tokens"] == 7
    assert (
        json.loads(chat(daemon.url, body)[2])["choices"][0]["message"]["content"]
        == first["choices"][0]["message"]["content"]
    )
    assert json.loads(chat(daemon.url, {**body, "max_tokens": 3})[2])["usage"]["completion_tokens"] == 3
    assert json.loads(chat(daemon.url, {**body, "max_tokens": -1})[2])["choices"][0]["finish_reason"] == "length"
    assert json.loads(chat(daemon.url, {**body, "max_tokens": -1})[2])["usage"]["total_tokens"] == 256
