"""Model lifecycle end to end (the daemon as a subprocess): eviction under load, overload,
admin load/unload and memory, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import gguf_factory
import pytest
from http_helpers import chat, error_of, request

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello"}]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def model_variants(tmp_path_factory) -> list[Path]:
    """Three different tiny models (different seeds give different answers)."""
    folder = tmp_path_factory.mktemp("variants")
    return [gguf_factory.write_tiny_llama(folder / f"m{i}.gguf", seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slowlc")
    return gguf_factory.write_tiny_llama(
        folder / "slow.gguf", n_embd=256, n_layer=4, n_ff=1024, n_head=4, n_head_kv=4, context_length=8192
    )


def models_folder(tmp_path: Path, *paths: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


def answer(url: str, model: str, max_tokens: int = 24) -> str:
    status, _, body = chat(url, {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0})
    assert status == 200, body
    return json.loads(body)["choices"][0]["message"]["content"]


def test_twenty_concurrent_requests_across_three_models_with_two_slots(model_variants, tmp_path, make_daemon):
    folder = models_folder(tmp_path, *model_variants)
    daemon = make_daemon({"models_dir": str(folder), "max_loaded_models": 2, "llama": {"n_ctx": 256, "n_threads": 1}})
    expected = {f"m{i}": answer(daemon.url, f"m{i}") for i in range(3)}
    assert len(set(expected.values())) == 3  # the models really differ

    results: dict[int, tuple[str, str]] = {}

    def run(i: int) -> None:
        model = f"m{i % 3}"
        results[i] = (model, answer(daemon.url, model))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 20
    assert all(text == expected[model] for model, text in results.values())
    assert len(daemon.logs("evicting idle model")) >= 2
    health = json.loads(request(daemon.url, path="/health")[2])
    assert len(health["loaded_models"]) <= 2
    assert health["gpu_offload"] is False and health["gpus"] == [] and health["gpu_problems"] == []
    for state in health["model_states"].values():
        assert state["device"] == "cpu"


def test_full_queue_answers_503_with_retry_after(slow_model, tmp_path, make_daemon):
    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon(
        {"models_dir": str(folder), "max_queue": 1, "llama": {"n_ctx": 4096, "n_threads": 1, "parallel": 1}}
    )
    answer(daemon.url, "slow", 2)  # loaded
    responses = []

    def run() -> None:
        responses.append(chat(daemon.url, {"messages": MESSAGES, "max_tokens": 1500}))

    threads = [threading.Thread(target=run) for _ in range(2)]  # one running, one queued
    for t in threads:
        t.start()
    time.sleep(0.3)
    status, headers, _ = rejected = chat(daemon.url, {"messages": MESSAGES, "max_tokens": 5})
    health = json.loads(request(daemon.url, path="/health")[2])
    for t in threads:
        t.join(60)
    assert status == 503 and int(headers["retry-after"]) >= 1
    error = error_of(rejected)
    assert error["code"] == "server_is_overloaded" and error["type"] == "server_error"
    assert health["model_states"]["slow"]["pending"] == 2
    assert [r[0] for r in responses] == [200, 200]


def open_running_stream(daemon, max_tokens: int = 4000) -> http.client.HTTPConnection:
    """A long streamed request whose first event has arrived (it certainly runs); close it when done."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    body = json.dumps({"messages": MESSAGES, "max_tokens": max_tokens, "stream": True})
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.read1(64).startswith(b"data: ")
    return conn


def wait_until_running(url: str, timeout: float = 120) -> None:
    """Until the daemon counts a request as queued or running (instead of sleeping and hoping it arrived)."""
    deadline = time.monotonic() + timeout
    while not json.loads(request(url, path="/health")[2])["pending_requests"]:
        assert time.monotonic() < deadline, "the request never reached the daemon"
        time.sleep(0.02)


def test_queue_timeout_answers_503(slow_model, tmp_path, make_daemon):
    """A request that waits longer than queue_timeout for a busy model gets a 503 while the busy
    request is still running (it is not held until the model is free). The model is preloaded and
    the busy stream has sent its first event before the second request: nothing here depends on how
    fast the machine loads or generates."""

    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon(
        {
            "models_dir": str(folder),
            "queue_timeout": 0.3,
            "preload": ["slow"],
            "llama": {"n_ctx": 4096, "n_threads": 1, "parallel": 1},
        }
    )
    deadline = time.monotonic() + 120
    while (
        "slow" not in json.loads(request(daemon.url, path="/health")[2])["loaded_models"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    conn = open_running_stream(daemon)
    status, headers, _ = response = chat(daemon.url, {"messages": MESSAGES, "max_tokens": 5})
    still_running = json.loads(request(daemon.url, path="/health")[2])["pending_requests"]
    conn.close()
    assert status == 503 and "retry-after" in headers and error_of(response)["code"] == "server_is_overloaded"
    assert still_running >= 1  # answered while the busy request ran, not after it


def test_admin_load_unload_and_memory_returns(slow_model, tmp_path, make_daemon):
    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 8192, "n_threads": 1}})
    pid = daemon.proc.pid

    def admin(action: str):
        status, _, body = request(daemon.url, "POST", f"/admin/models/slow/{action}", body=b"")
        assert status == 200, body
        return json.loads(body)["state"]

    assert admin("load") == "loaded"
    models = json.loads(request(daemon.url, path="/v1/models")[2])["data"]
    assert models[0]["loaded"] is True
    assert admin("unload") == "unloaded"
    assert json.loads(request(daemon.url, path="/v1/models")[2])["data"][0]["loaded"] is False
    for _ in range(5):  # warm-up: allocator pools settle
        admin("load"), answer(daemon.url, "slow", 4), admin("unload")
    baseline = rss_kib(pid)
    admin("load")
    loaded = rss_kib(pid)
    admin("unload")
    for _ in range(50):
        admin("load")
        admin("unload")
    after = rss_kib(pid)
    percents = [line["percent"] for line in daemon.logs("loading model progress", model="slow")]
    assert (
        percents
        and percents[-1] == 100
        and percents == sorted(percents[: percents.index(100) + 1]) + percents[percents.index(100) + 1 :]
    )
    assert loaded - baseline > 20_000  # a loaded model (9 MB weights + 8k KV cache) is visible in RSS
    assert after - baseline < 15_000, (baseline, loaded, after)  # 50 cycles gave it back
    assert error_of(request(daemon.url, "POST", "/admin/models/nope/load", body=b""))["code"] == "model_not_found"


def test_admin_unload_refuses_a_busy_model(slow_model, tmp_path, make_daemon):
    """The unload is asked for while a stream is open and has sent its first event (so the request
    is certainly running, whatever the machine's speed); the stream is closed afterwards."""
    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 4096, "n_threads": 1}})
    conn = open_running_stream(daemon)
    status, _, _ = response = request(daemon.url, "POST", "/admin/models/slow/unload", body=b"")
    conn.close()
    assert status == 409 and error_of(response)["code"] == "model_busy"


def test_hundred_cancel_resubmit_cycles_leave_the_daemon_healthy(tiny_model, tmp_path, make_daemon):
    import socket

    folder = models_folder(tmp_path, tiny_model)
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 2048, "n_threads": 1}})
    payload = json.dumps({"messages": MESSAGES, "stream": True, "max_tokens": 1500}).encode()
    for i in range(100):
        sock = socket.create_connection(("127.0.0.1", daemon.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        if i % 2:
            sock.recv(100)  # some leave after the first bytes, some before any
        sock.close()
    assert answer(daemon.url, "tiny", 8)
    deadline = time.monotonic() + 20
    while json.loads(request(daemon.url, path="/health")[2])["pending_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    health = json.loads(request(daemon.url, path="/health")[2])
    assert health["status"] == "ok" and health["pending_requests"] == 0
    assert len(daemon.logs("request", finish_reason="cancelled")) >= 90


#: The drained stream is sized from this machine's measured speed to run about this long: long enough
#: to still run while the test checks that new requests are refused, and 20 times inside DRAIN_TIMEOUT.
DRAIN_STREAM_SECONDS = 3
DRAIN_TIMEOUT = 60
#: Tokens of the measuring request, and the most the stream asks for: a token costs more the later it
#: comes (attention reads every earlier position), so a rate is only extrapolated downwards.
DRAIN_PROBE_TOKENS = 1000


def test_sigterm_drains_running_requests_and_refuses_new_ones(slow_model, tmp_path, make_daemon):
    """Nothing here depends on the machine's speed: the stream's length comes from the time a
    request of DRAIN_PROBE_TOKENS took here, the stream is known to run (its first event has
    arrived) when SIGTERM is sent, and the shutdown deadline is 20 times its expected duration."""
    import http.client

    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon(
        {"models_dir": str(folder), "shutdown_timeout": DRAIN_TIMEOUT, "llama": {"n_ctx": 8192, "n_threads": 1}}
    )
    answer(daemon.url, "slow", 2)  # loaded
    started = time.monotonic()
    status, _, body = chat(daemon.url, {"messages": MESSAGES, "max_tokens": DRAIN_PROBE_TOKENS, "temperature": 0})
    assert status == 200, body
    rate = json.loads(body)["usage"]["completion_tokens"] / (time.monotonic() - started)
    max_tokens = max(50, min(DRAIN_PROBE_TOKENS, int(rate * DRAIN_STREAM_SECONDS)))
    running, result = threading.Event(), {}

    def stream() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DRAIN_TIMEOUT)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps({"messages": MESSAGES, "max_tokens": max_tokens, "stream": True}),
            headers={"Content-Type": "application/json", "X-Request-ID": "drained"},
        )
        response = conn.getresponse()
        first = response.readline()  # the first event: the generation has started
        running.set()
        result["response"] = (response.status, first + response.read())
        conn.close()

    runner = threading.Thread(target=stream)
    runner.start()
    assert running.wait(30), "the stream did not start"
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for_log("shutting down: draining")
    status, headers, _ = refused = chat(daemon.url, {"messages": MESSAGES, "max_tokens": 2})
    health_status, _, health = request(daemon.url, path="/health")
    runner.join(DRAIN_TIMEOUT + 10)
    assert daemon.proc.wait(DRAIN_TIMEOUT + 10) == 0
    assert status == 503 and "retry-after" in headers and error_of(refused)["code"] == "server_is_overloaded"
    assert health_status == 503 and json.loads(health)["status"] == "draining"
    stream_status, raw = result["response"]
    assert stream_status == 200 and raw.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"length"' in raw
    lines = [line for line in daemon.lines if isinstance(line, dict)]
    draining = next(i for i, line in enumerate(lines) if line.get("event") == "shutting down: draining")
    finished = next(
        i for i, line in enumerate(lines) if line.get("event") == "request" and line.get("request_id") == "drained"
    )
    assert draining < finished  # it ran to its end during the drain
    assert not daemon.logs("cancelling requests still running at the shutdown deadline")


def test_shutdown_deadline_cancels_and_second_signal_exits_at_once(slow_model, tmp_path, make_daemon):
    folder = models_folder(tmp_path, slow_model)
    daemon = make_daemon({"models_dir": str(folder), "shutdown_timeout": 0.5, "llama": {"n_ctx": 8192, "n_threads": 1}})
    answer(daemon.url, "slow", 2)
    cut = {}
    runner = threading.Thread(
        target=lambda: cut.update(response=chat(daemon.url, {"messages": MESSAGES, "max_tokens": 8000}))
    )
    runner.start()
    wait_until_running(daemon.url)
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    assert time.monotonic() - started < 5  # cancelled at the deadline, not run to the end
    runner.join(30)
    assert daemon.logs("cancelling requests still running at the shutdown deadline")
    status, headers, _ = cut["response"]  # the waiting client is told, not left with an empty 200
    assert status == 503 and error_of(cut["response"])["code"] == "server_is_overloaded"

    again = make_daemon({"models_dir": str(folder), "shutdown_timeout": 30, "llama": {"n_ctx": 8192, "n_threads": 1}})
    answer(again.url, "slow", 2)
    cut_off = (OSError, http.client.HTTPException)  # the connection is cut when the daemon exits
    runner = threading.Thread(
        target=lambda: pytest.raises(cut_off, chat, again.url, {"messages": MESSAGES, "max_tokens": 8000})
    )
    runner.start()
    wait_until_running(again.url)
    again.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    started = time.monotonic()
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(10) != 0
    assert time.monotonic() - started < 2
    runner.join(30)  # its connection was cut (the thread's error is expected)


def test_sighup_adds_and_removes_models_and_rejects_a_bad_config(model_variants, tmp_path, make_daemon):
    folder = models_folder(tmp_path, model_variants[0], model_variants[1])
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 256, "n_threads": 1}})
    assert answer(daemon.url, "m1")

    def models() -> list[str]:
        return [m["id"] for m in json.loads(request(daemon.url, path="/v1/models")[2])["data"]]

    def hup_and_wait(event: str) -> None:
        before = len(daemon.logs(event))
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(daemon.logs(event)) == before:
            assert time.monotonic() < deadline, "no reload log line"
            time.sleep(0.02)

    assert models() == ["m0", "m1"]
    shutil.copy(model_variants[2], folder / "m2.gguf")
    (folder / "m1.gguf").unlink()
    hup_and_wait("reloaded")
    assert models() == ["m0", "m2"]
    assert answer(daemon.url, "m2")
    assert error_of(chat(daemon.url, {"model": "m1", "messages": MESSAGES}))["code"] == "model_not_found"
    assert "m1" not in json.loads(request(daemon.url, path="/health")[2])["model_states"]  # freed

    config_text = daemon.config.read_text()
    daemon.config.write_text(config_text + "bogus_key = 1\n")
    hup_and_wait("reload rejected; keeping the running configuration")
    assert models() == ["m0", "m2"] and answer(daemon.url, "m0")
    assert daemon.proc.poll() is None


def test_preload_loads_at_start(model_variants, tmp_path, make_daemon):
    folder = models_folder(tmp_path, *model_variants)
    daemon = make_daemon({"models_dir": str(folder), "preload": ["m1"], "llama": {"n_ctx": 256, "n_threads": 1}})
    daemon.wait_for_log("model loaded", model="m1")
    health = json.loads(request(daemon.url, path="/health")[2])
    assert health["loaded_models"] == ["m1"]
    assert health["model_states"]["m1"]["offloaded_layers"] == 0 and health["model_states"]["m1"]["total_layers"] == 3


def test_preload_of_an_unknown_model_is_a_config_error(tmp_path):
    import subprocess
    import sys

    from conftest import REPO, write_config

    config = write_config(tmp_path / "c.toml", {"models_dir": str(tmp_path), "preload": ["ghost"]})
    result = subprocess.run(
        [sys.executable, "-m", "ggufd", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2 and "preload" in result.stderr and "ghost" in result.stderr


def test_changed_settings_apply_on_the_next_load(model_variants, tmp_path, make_daemon):
    folder = models_folder(tmp_path, model_variants[0])
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 256, "n_threads": 1}})
    too_long = {"messages": MESSAGES, "max_tokens": 300}
    assert "256 tokens" in error_of(chat(daemon.url, too_long))["message"]
    daemon.config.write_text(
        daemon.config.read_text().replace('"n_ctx" = 256', '"n_ctx" = 512').replace("n_ctx = 256", "n_ctx = 512")
    )
    before = len(daemon.logs("reloaded"))
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while len(daemon.logs("reloaded")) == before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "256 tokens" in error_of(chat(daemon.url, too_long))["message"]  # still the loaded model
    assert request(daemon.url, "POST", "/admin/models/m0/unload", body=b"")[0] == 200
    status, _, body = chat(daemon.url, too_long)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 300
