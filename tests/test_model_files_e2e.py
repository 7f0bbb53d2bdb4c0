"""Model files that change under the running daemon (issue 23): the daemon lives, finishes what it
can and serves the new file next, without a SIGHUP.

"Served from the new file" is observable without knowing the model's numerics: the daemon also
serves the new file's content under a second id (``ref``), and after the change the changed model
answers exactly as ``ref`` does, and ``/v1/models`` shows the new file's context length. Every wait
is on a condition (a log line, ``/health``) with a generous deadline."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from pathlib import Path

import gguf_factory
import pytest
from http_helpers import chat, request

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello"}]
DEADLINE = 120  # seconds; the conditions below hold long before


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[Path, Path]:
    """Two different tiny models: the file before and after an update (different weights and
    training context). Large enough (4 layers, 8k context) that a long stream lasts seconds."""
    folder = tmp_path_factory.mktemp("versions")
    shape = {"n_embd": 256, "n_layer": 4, "n_ff": 1024, "n_head": 4, "n_head_kv": 4}
    old = gguf_factory.write_tiny_llama(folder / "old.gguf", seed=1, context_length=8192, **shape)
    new = gguf_factory.write_tiny_llama(folder / "new.gguf", seed=2, context_length=8000, **shape)
    return old, new


def start(make_daemon, tmp_path: Path, versions, **llama) -> tuple:
    old, new = versions
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(old, folder / "m.gguf")
    shutil.copy(new, folder / "ref.gguf")
    settings = {"n_ctx": 2048, "n_threads": 1, "parallel": 1, **llama}
    daemon = make_daemon({"models_dir": str(folder), "llama": settings})
    return daemon, folder / "m.gguf"


def answer(url: str, model: str) -> tuple[int, str]:
    status, _, body = chat(url, {"model": model, "messages": MESSAGES, "max_tokens": 16, "temperature": 0})
    doc = json.loads(body)
    return status, (doc["choices"][0]["message"]["content"] if status == 200 else doc["error"]["message"])


def context_length(url: str, model: str) -> int | None:
    models = {m["id"]: m for m in json.loads(request(url, path="/v1/models")[2])["data"]}
    return models[model]["capabilities"]["training_context_length"] if model in models else None


def health(url: str) -> dict:
    return json.loads(request(url, path="/health")[2])


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def overwrite_in_place(target: Path, source: Path) -> None:
    """What `cp source target` does: truncate the same inode, then write into it."""
    with source.open("rb") as src, target.open("r+b") as dst:
        ino = os.fstat(dst.fileno()).st_ino
        dst.truncate(0)
        shutil.copyfileobj(src, dst)
    assert target.stat().st_ino == ino


def atomic_replace(target: Path, source: Path) -> None:
    """The recommended update: write beside the file, then rename over it."""
    part = target.with_name(target.name + ".part")
    shutil.copy(source, part)
    os.replace(part, target)


#: a stream long enough to outlast the few milliseconds between its first event and the next request
STREAM_TOKENS = 1500


def next_answer(daemon):
    """Send the next request at once, in a thread: it notices the change itself (no wait for the
    poll) and is held until the running stream is done. Returns a function that waits for its answer."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(answer(daemon.url, "m")), daemon=True)
    thread.start()

    def wait():
        thread.join(DEADLINE)
        assert result, "the next request never got an answer"
        return result[0]

    return wait


class Stream:
    """A streamed chat request read to its end in a thread; its first event has arrived."""

    def __init__(self, daemon, model: str, max_tokens: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        body = {
            "model": model,
            "messages": MESSAGES,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self.conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.first = self.response.readline()
        assert self.first.startswith(b"data: ")
        self.events: list = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.response:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                self.events.append(json.loads(line[6:]))

    def result(self) -> tuple[str | None, int | None, list]:
        """(finish_reason, completion_tokens, error events) once the stream ended."""
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the stream never ended"
        self.conn.close()
        reasons = [c["finish_reason"] for e in self.events for c in e.get("choices", []) if c.get("finish_reason")]
        usage = [e["usage"]["completion_tokens"] for e in self.events if e.get("usage")]
        errors = [e for e in self.events if "error" in e]
        return (reasons[-1] if reasons else None), (usage[-1] if usage else None), errors


def test_overwrite_in_place_of_a_loaded_idle_mapped_model(versions, tmp_path, make_daemon):
    """The case that killed the daemon with SIGBUS: ``cp`` over a loaded model whose weights are mapped."""
    daemon, target = start(make_daemon, tmp_path, versions, mmap=True)
    before = answer(daemon.url, "m")
    expected = answer(daemon.url, "ref")
    assert before[0] == expected[0] == 200 and before != expected  # the two files really differ
    assert context_length(daemon.url, "m") == 8192

    overwrite_in_place(target, versions[1])
    wait_until(lambda: context_length(daemon.url, "m") == 8000, "/v1/models never showed the new file")
    assert answer(daemon.url, "m") == expected
    assert daemon.proc.poll() is None
    changed = daemon.logs("model file changed", model="m")
    assert changed and changed[0]["change"] == "in place" and changed[0]["mmap"] is True
    assert daemon.logs("model file read again", model="m")


def test_truncate_in_place_of_a_loaded_mapped_model(versions, tmp_path, make_daemon):
    daemon, target = start(make_daemon, tmp_path, versions, mmap=True)
    assert answer(daemon.url, "m")[0] == 200
    with target.open("r+b") as fh:
        fh.truncate(1000)
    wait_until(lambda: any(s["id"] == "m" for s in health(daemon.url)["skipped_files"]), "never reported skipped")
    status, headers, body = chat(daemon.url, {"model": "m", "messages": MESSAGES, "max_tokens": 4})
    assert status in (404, 503) and headers["content-type"].startswith("application/json")
    assert str(target) not in body.decode()
    assert answer(daemon.url, "ref")[0] == 200  # the other model keeps serving
    assert daemon.proc.poll() is None

    atomic_replace(target, versions[1])  # the operator puts a good file in place: served again
    wait_until(lambda: context_length(daemon.url, "m") == 8000, "the repaired file was never served")
    assert health(daemon.url)["skipped_files"] == []
    assert answer(daemon.url, "m") == answer(daemon.url, "ref")


@pytest.mark.parametrize("mmap", [True, False])
def test_atomic_replace_during_a_stream(versions, tmp_path, make_daemon, mmap):
    daemon, target = start(make_daemon, tmp_path, versions, mmap=mmap)
    expected = answer(daemon.url, "ref")
    stream = Stream(daemon, "m", STREAM_TOKENS)
    atomic_replace(target, versions[1])
    late = next_answer(daemon)
    changed = daemon.wait_for_log("model file changed", timeout=DEADLINE, model="m")
    assert changed["change"] == "replaced" and changed["cancelling"] == 0
    reason, tokens, errors = stream.result()
    assert (reason, tokens, errors) == ("length", STREAM_TOKENS, [])  # the stream completed, undisturbed
    assert changed["running"] == 1  # ... and it was running when the change was noticed
    assert late() == expected  # the next request was answered from the new file
    assert context_length(daemon.url, "m") == 8000 and daemon.proc.poll() is None


def test_overwrite_in_place_during_a_stream_with_mmap_off(versions, tmp_path, make_daemon):
    """Weights read into memory: writing the file under a running stream cannot disturb it."""
    daemon, target = start(make_daemon, tmp_path, versions, mmap=False)
    expected = answer(daemon.url, "ref")
    stream = Stream(daemon, "m", STREAM_TOKENS)
    overwrite_in_place(target, versions[1])
    late = next_answer(daemon)
    changed = daemon.wait_for_log("model file changed", timeout=DEADLINE, model="m")
    assert changed["change"] == "in place" and changed["mmap"] is False and changed["cancelling"] == 0
    assert stream.result() == ("length", STREAM_TOKENS, [])
    assert changed["running"] == 1
    assert late() == expected
    assert context_length(daemon.url, "m") == 8000 and daemon.proc.poll() is None


def test_a_model_file_that_became_unreadable_is_skipped_and_the_others_serve(versions, tmp_path, make_daemon):
    daemon, target = start(make_daemon, tmp_path, versions)
    assert answer(daemon.url, "m")[0] == 200
    gguf_factory.write_not_gguf(target.with_name("garbage.part"))
    os.replace(target.with_name("garbage.part"), target)
    wait_until(lambda: any(s["id"] == "m" for s in health(daemon.url)["skipped_files"]), "never reported skipped")
    state = health(daemon.url)
    assert "m" not in state["models"] and "ref" in state["models"]
    assert daemon.logs("skipping model file that is not a readable GGUF", model="m")
    assert answer(daemon.url, "ref")[0] == 200
    assert chat(daemon.url, {"model": "m", "messages": MESSAGES, "max_tokens": 4})[0] == 404
    assert daemon.proc.poll() is None
