"""The installed package, outside any checkout: build a wheel, install it into a fresh venv in a temp
folder, and serve the gemma demo model from there. The families ship inside the package
(ggufd/families/), so the gemma chat format is used without any plugins folder; before they did,
a ``pip install`` served gemma with a generic transcript.

Dependencies are installed the ordinary way (pip's cache, then the index). llama-cpp-python has no
binary wheel on PyPI: pip builds it from source (minutes) unless the wheel ``make install`` built is
in pip's wheel cache. The test finds that wheel, offers it with ``--find-links`` and forbids a source
build (``--only-binary``), so it never takes minutes; without such a wheel it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, Daemon
from http_helpers import request

from ggufd.plugins import BUILTIN_ORIGIN

pytestmark = [pytest.mark.e2e, pytest.mark.gemma]

FAMILIES = ("chatml", "deepseek", "gemma", "glm", "gpt_oss", "kimi_k2", "llama3", "mistral", "phi")
GEMMA_ID = "gemma-3-270m-q4_k_m"
START_OF_TURN_ID, END_OF_TURN_ID = 105, 106
#: what a build or an install never needs; the rest of the checkout is copied as it is
NOT_SOURCES = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.gguf",
    ".pytest_cache",
    ".hypothesis",
    ".device",
    "bench",
    "tests",
)


def outside_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at this checkout, no ggufd settings."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("GGUFD_", "GGUF_", "LLAMA_"))}


def run(cmd: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=outside_env(), **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def cached_llama_wheel() -> Path | None:
    """The llama-cpp-python wheel pip built (and cached) for the version installed here."""
    import llama_cpp

    listing = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "--format=abspath", "llama_cpp_python"],
        capture_output=True,
        text=True,
        env=outside_env(),
    )
    wheels = [
        Path(line)
        for line in listing.stdout.split()
        if Path(line).name.startswith(f"llama_cpp_python-{llama_cpp.__version__}-")
    ]
    return wheels[0] if wheels else None


class InstalledDaemon(Daemon):
    """The venv's own ``ggufd`` command, started from a folder that is not the checkout."""

    def __init__(self, command: Path, cwd: Path, args: tuple) -> None:
        super().__init__(config=None, args=args)
        self.command, self.cwd = command, cwd
        self.env = {**outside_env(), "GGUFD_LOG_LEVEL": "debug"}

    def start(self, timeout: float = 120) -> InstalledDaemon:
        import threading

        self.proc = subprocess.Popen(
            [str(self.command), "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"ggufd did not start (rc={self.proc.poll()}):\n" + "\n".join(map(str, self.lines)))
        return self


@pytest.fixture(scope="module")
def installed(tmp_path_factory, gemma_model):
    """(wheel, venv folder, models folder, a folder that is not the checkout), with timings printed."""
    llama_wheel = cached_llama_wheel()
    if llama_wheel is None:
        pytest.skip(
            "no llama-cpp-python wheel in pip's cache (`make install` builds one); building it would take minutes"
        )
    root = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()

    source = root / "source"  # a copy: building writes build/ and *.egg-info into the source folder
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"), str(source)],
        timeout=600,
    )
    (wheel,) = (root / "dist").glob("ggufd-*.whl")
    built = time.monotonic()

    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--find-links",
            str(llama_wheel.parent),
            "--only-binary",
            "llama-cpp-python",
            str(wheel),
        ],
        timeout=600,
        cwd=root,
    )
    installed_at = time.monotonic()

    models = root / "models"
    models.mkdir()
    try:
        os.link(gemma_model, models / f"{GEMMA_ID}.gguf")  # a symlink out of the folder would be refused
    except OSError:
        shutil.copy(gemma_model, models / f"{GEMMA_ID}.gguf")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    print(f"wheel built in {built - started:.1f} s, installed in {installed_at - built:.1f} s")
    return wheel, venv, models, elsewhere


@pytest.fixture(scope="module")
def daemon(installed):
    _, venv, models, elsewhere = installed
    started = InstalledDaemon(venv / "bin" / "ggufd", cwd=elsewhere, args=("--models-dir", str(models))).start()
    yield started
    started.stop()


def test_the_wheel_ships_the_families(installed):
    wheel = installed[0]
    names = zipfile.ZipFile(wheel).namelist()
    for family in FAMILIES:
        assert f"ggufd/families/{family}.py" in names, family
    assert "ggufd/families/__init__.py" in names and "ggufd/testing.py" in names
    assert not [name for name in names if name.startswith("plugins/")]


def test_the_venv_runs_its_own_ggufd_and_lists_the_families_as_built_in(installed):
    _, venv, models, elsewhere = installed
    where = run(
        [str(venv / "bin" / "python"), "-c", "import ggufd.families; print(ggufd.families.__file__)"],
        timeout=60,
        cwd=elsewhere,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO)
    listing = json.loads(
        run(
            [str(venv / "bin" / "ggufd"), "--json", "plugins", "--models-dir", str(models)], timeout=120, cwd=elsewhere
        ).stdout
    )
    plugins = {entry["name"]: entry for entry in listing["plugins"]}
    assert listing["failed"] == []
    for family in FAMILIES:
        assert plugins[family]["origin"] == BUILTIN_ORIGIN, family
    assert plugins["gemma"]["hooks"] == ["detect_family", "format_chat", "stop_sequences"]


def test_the_gemma_model_is_served_with_the_gemma_chat_format(daemon):
    models = json.loads(request(daemon.url, path="/v1/models")[2])["data"]
    assert {m["id"]: m["family"] for m in models} == {GEMMA_ID: "gemma"}

    def tokenize(body: dict) -> list[int]:
        status, _, raw = request(daemon.url, "POST", "/extras/tokenize", body={"model": GEMMA_ID, **body})
        assert status == 200, raw
        return json.loads(raw)["tokens"]

    chat = tokenize({"messages": [{"role": "user", "content": "Hi"}]})
    # the prompt the gemma family renders, tokenized as text (BOS added, special tokens parsed)
    assert chat == tokenize({"input": "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"})
    assert chat.count(START_OF_TURN_ID) == 2 and chat.count(END_OF_TURN_ID) == 1
    # not the generic transcript a model without a family or template gets
    assert chat != tokenize({"input": "User: Hi\nAssistant:"})
    assert not daemon.logs(
        "no chat template for model; using a generic transcript — set family or chat_template in its config"
    )
