"""Cancellation: a client that leaves stops its generation; one that leaves while queued never runs.

Uses a slower generated model (a few MB, ~3,000 tok/s here) with an 8k context so an
uncancelled generation would run for seconds.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import gguf_factory
import pytest
from http_helpers import chat, request

pytestmark = pytest.mark.e2e

N_CTX = 8192
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def slow_daemon(tmp_path_factory):
    from conftest import Daemon, write_config

    folder = tmp_path_factory.mktemp("slow")
    gguf_factory.write_tiny_llama(
        folder / "slow.gguf", n_embd=256, n_layer=4, n_ff=1024, n_head=4, n_head_kv=4, context_length=N_CTX
    )
    config = write_config(
        folder / "ggufd.toml", {"models_dir": str(folder), "llama": {"n_ctx": N_CTX, "n_threads": 1, "parallel": 1}}
    )
    daemon = Daemon(config).start()
    yield daemon
    daemon.stop()


def open_request(url: str, body: dict, request_id: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    payload = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-Request-ID: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def wait_for_pending(url: str, n: int, timeout: float = 120) -> None:
    """Until /health counts ``n`` requests queued or running (instead of sleeping and hoping)."""
    deadline = time.monotonic() + timeout
    while json.loads(request(url, path="/health")[2])["pending_requests"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} requests reached the daemon"
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_stops_generation(slow_daemon, stream):
    rid = f"leave-{stream}"
    sock = open_request(slow_daemon.url, {"messages": MESSAGES, "stream": stream, "temperature": 0}, rid)
    if stream:
        read_until(sock, b'"delta":{"content":"')  # the first content chunk arrived
    else:
        wait_for_pending(slow_daemon.url, 1)  # the daemon has it (a plain answer shows nothing before its end)
    sock.close()
    line = slow_daemon.wait_for_log("request", timeout=20, request_id=rid)
    assert line["finish_reason"] == "cancelled"
    assert line["client_disconnected"] is True
    # Uncancelled it would generate until the 8k context is full. (A plain request may be cancelled before
    # its first token on a slow machine: how far it got is the machine's business, that it stopped is ggufd's.)
    assert (0 if not stream else 1) <= line["completion_tokens"] < 2000, line
    # The model is free again at once: a short request completes normally.
    status, _, body = chat(slow_daemon.url, {"messages": MESSAGES, "max_tokens": 5})
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 5


def test_request_whose_client_left_while_queued_never_runs(slow_daemon):
    results = {}

    def first():
        results["first"] = chat(
            slow_daemon.url,
            {"messages": MESSAGES, "max_tokens": 3000, "temperature": 0},
            headers={"X-Request-ID": "busy"},
        )

    runner = threading.Thread(target=first)
    runner.start()
    wait_for_pending(slow_daemon.url, 1)  # "busy" holds the model; the next request queues behind it
    sock = open_request(slow_daemon.url, {"messages": MESSAGES, "stream": True}, "queued-and-gone")
    wait_for_pending(slow_daemon.url, 2)  # queued
    sock.close()
    runner.join(60)
    line = slow_daemon.wait_for_log("request", timeout=20, request_id="queued-and-gone")
    assert line["finish_reason"] == "cancelled" and line["completion_tokens"] == 0
    assert "prompt_tokens" not in line  # never tokenized, never ran
    # Cancelling the queued request did not disturb the running one.
    status, _, body = results["first"]
    doc = json.loads(body)
    assert (
        status == 200 and doc["usage"]["completion_tokens"] == 3000 and doc["choices"][0]["finish_reason"] == "length"
    )
