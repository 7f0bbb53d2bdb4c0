"""Operations end to end: sd_notify and the watchdog, socket activation, metrics, API keys,
CORS, body/header limits, server caps."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from conftest import REPO, write_config
from http_helpers import chat, error_of, request
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def models(tiny_model, tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.gguf")
    return folder


def base_settings(models: Path, **extra) -> dict:
    return {"models_dir": str(models), "llama": {"n_ctx": 512, "n_threads": 1}, **extra}


# --- systemd


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait_for(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.drain()):
            assert time.monotonic() < deadline, (text, self.messages)


def test_sd_notify_ready_status_watchdog_reloading_stopping_in_order(models, tmp_path, make_daemon):
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = make_daemon(
        base_settings(models, preload=["tiny"]), env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    )
    notify.wait_for("READY=1")
    notify.wait_for("WATCHDOG=1")
    notify.wait_for("STATUS=")
    assert chat(daemon.url, {"messages": MESSAGES, "max_tokens": 2})[0] == 200
    daemon.proc.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    notify.wait_for("STOPPING=1")
    messages = notify.drain()
    kinds = [m.split("=", 1)[0] for m in messages]
    first = {kind: kinds.index(kind) for kind in ("READY", "STATUS", "WATCHDOG", "RELOADING", "STOPPING")}
    assert first["READY"] < first["WATCHDOG"] < first["RELOADING"] < first["STOPPING"]
    assert sum(1 for k in kinds if k == "WATCHDOG") >= 2
    reload_at = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in messages[reload_at]
    assert any(m == "READY=1" for m in messages[reload_at + 1 :])  # ready again after the reload
    status = [m for m in messages if m.startswith("STATUS=")]
    assert any("1 loaded (tiny)" in m for m in status), status


def test_a_stalled_device_thread_withholds_watchdog_pings():
    from ggufd.api.app import report_to_systemd
    from ggufd.engine.devices import DeviceExecutors, heartbeat

    executors = DeviceExecutors()
    sent: list[str] = []

    class FakeNotifier:
        def status(self, text):
            sent.append("STATUS")

        def watchdog(self):
            sent.append("WATCHDOG")

    class FakeEngine:
        devices = executors

        def loaded_models(self):
            return []

        def pending(self):
            return 0

    class FakeState:
        notifier, engine, registry, draining = FakeNotifier(), FakeEngine(), {}, False

    def busy_with_beats():
        for _ in range(30):
            heartbeat()
            time.sleep(0.01)

    async def main():
        reporter = asyncio.get_running_loop().create_task(report_to_systemd(FakeState(), watchdog=0.1))
        await executors.run("cpu", busy_with_beats)  # busy, but moving: pings continue
        moving = sent.count("WATCHDOG")
        sent.clear()
        await executors.run("cpu", time.sleep, 0.5)  # busy and silent: wedged
        wedged = sent.count("WATCHDOG")
        reporter.cancel()
        return moving, wedged

    moving, wedged = asyncio.run(main())
    executors.shutdown()
    assert moving >= 3
    assert wedged <= 2  # only before the silence passed the watchdog period


def test_socket_activation_serves_on_the_inherited_socket(models, tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = write_config(tmp_path / "c.toml", base_settings(models, port=1))  # port 1 would fail if used
    fd = listener.fileno()
    # what systemd does: the socket as fd 3, LISTEN_PID = the pid that execs ggufd
    launcher = (
        f"import os, sys; os.dup2({fd}, 3); os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
        f"os.execv(sys.executable, [sys.executable, '-m', 'ggufd', '--config', {str(config)!r}])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], pass_fds=(fd,), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    listener.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = request(f"http://127.0.0.1:{port}", path="/health", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert status == 200 and json.loads(body)["models"] == ["tiny"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0
    assert "socket activation" in out


# --- metrics


def scrape(url: str, headers: dict | None = None) -> dict:
    status, response_headers, body = request(url, path="/metrics", headers=headers)
    assert status == 200 and response_headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_exposition(models, make_daemon):
    daemon = make_daemon(base_settings(models, metrics_public=True))
    for max_tokens in (3, 5):
        assert chat(daemon.url, {"messages": MESSAGES, "max_tokens": max_tokens})[0] == 200
    assert chat(daemon.url, {"messages": MESSAGES, "model": "nope"})[0] == 404
    samples = scrape(daemon.url)
    ok = (("endpoint", "chat.completions"), ("model", "tiny"), ("status", "200"))
    assert samples[("ggufd_requests_total", ok)] == 2
    assert samples[("ggufd_requests_total", (("endpoint", "chat.completions"), ("model", ""), ("status", "404")))] == 1
    assert samples[("ggufd_completion_tokens_total", (("model", "tiny"),))] == 8
    assert samples[("ggufd_prompt_tokens_total", (("model", "tiny"),))] > 0
    assert samples[("ggufd_time_to_first_token_seconds_count", (("model", "tiny"),))] == 2
    assert samples[("ggufd_decode_tokens_per_second_count", (("model", "tiny"),))] == 2
    assert samples[("ggufd_model_load_seconds_count", (("model", "tiny"),))] == 1
    assert samples[("ggufd_loaded_models", ())] == 1
    assert samples[("ggufd_model_loaded", (("model", "tiny"),))] == 1
    assert samples[("ggufd_queue_depth", (("model", "tiny"),))] == 0


# --- API keys


def test_api_keys_from_config_env_and_file(models, tmp_path, make_daemon):
    key_file = tmp_path / "keys"
    key_file.write_text("# one per line\nkey-three-789\n")
    daemon = make_daemon(
        base_settings(models, api_keys=["key-one-123"], api_key_file=str(key_file)),
        env={"GGUFD_API_KEYS": "key-two-456"},
    )
    for key in ("key-one-123", "key-two-456", "key-three-789"):
        client = openai.OpenAI(base_url=daemon.url + "/v1", api_key=key, max_retries=0)
        assert (
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).usage.completion_tokens == 2
        )
    wrong = openai.OpenAI(base_url=daemon.url + "/v1", api_key="key-one-124", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.code == "invalid_api_key"
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer key-one-124"}):
        status, response_headers, body = response = chat(daemon.url, {"messages": MESSAGES}, headers=headers)
        assert status == 401 and response_headers["www-authenticate"].startswith("Bearer")
        assert error_of(response)["code"] == "invalid_api_key"
        assert b"key-one" not in body and b"abc" not in body
    assert request(daemon.url, path="/health")[0] == 200  # public by default
    assert request(daemon.url, path="/metrics")[0] == 401
    assert request(daemon.url, path="/metrics", headers={"Authorization": "Bearer key-two-456"})[0] == 200
    assert not any("key-one-123" in json.dumps(line) for line in daemon.lines)


def test_remote_bind_without_keys_warns_or_refuses(models, tmp_path, make_daemon):
    daemon = make_daemon(base_settings(models, host="0.0.0.0"))
    assert daemon.logs(
        "SECURITY: listening on 0.0.0.0 (beyond this machine) without any API key: anyone who can reach "
        "the port can use the models; set api_keys, api_key_file or GGUFD_API_KEYS"
    )
    config = write_config(
        tmp_path / "refuse.toml", base_settings(models, host="0.0.0.0", unauthenticated_remote="refuse")
    )
    result = subprocess.run(
        [sys.executable, "-m", "ggufd", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2 and "without any API key" in result.stderr


# --- CORS and limits


def test_cors_allow_list(models, make_daemon):
    daemon = make_daemon(base_settings(models, cors_origins=["https://ui.example"], api_keys=["secret-key-1"]))
    status, headers, _ = request(
        daemon.url,
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert status == 204 and headers["access-control-allow-origin"] == "https://ui.example"
    assert (
        "Authorization" in headers["access-control-allow-headers"] and "POST" in headers["access-control-allow-methods"]
    )
    status, headers, _ = request(
        daemon.url, "OPTIONS", "/v1/chat/completions", headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in headers
    status, headers, _ = chat(
        daemon.url,
        {"messages": MESSAGES, "max_tokens": 1},
        headers={"Origin": "https://ui.example", "Authorization": "Bearer secret-key-1"},
    )
    assert status == 200 and headers["access-control-allow-origin"] == "https://ui.example"


def test_cors_is_off_by_default(models, make_daemon):
    daemon = make_daemon(base_settings(models))
    _, headers, _ = chat(daemon.url, {"messages": MESSAGES, "max_tokens": 1}, headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in headers


def test_body_limit_is_a_json_413(models, make_daemon):
    daemon = make_daemon(base_settings(models, max_body_bytes=2048))
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, _ = response = chat(daemon.url, big)
    assert status == 413 and "2048" in error_of(response)["message"]

    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    payload = json.dumps(big).encode()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=iter([payload[i : i + 1000] for i in range(0, len(payload), 1000)]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["type"] == "invalid_request_error"
    assert chat(daemon.url, {"messages": MESSAGES, "max_tokens": 1})[0] == 200


def test_header_timeout_closes_slow_clients(models, make_daemon):
    daemon = make_daemon(base_settings(models, header_timeout=0.5))
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    started = time.monotonic()
    assert sock.recv(100) == b""  # the server hung up
    assert time.monotonic() - started < 3
    sock.close()


def test_server_caps_on_max_tokens_and_messages(models, make_daemon):
    daemon = make_daemon(base_settings(models, max_tokens_cap=5, max_messages=2))
    assert json.loads(chat(daemon.url, {"messages": MESSAGES})[2])["usage"]["completion_tokens"] == 5
    assert json.loads(chat(daemon.url, {"messages": MESSAGES, "max_tokens": -1})[2])["usage"]["completion_tokens"] == 5
    status, _, _ = response = chat(daemon.url, {"messages": MESSAGES, "max_tokens": 6})
    assert status == 400 and error_of(response)["param"] == "max_tokens"
    status, _, _ = response = chat(daemon.url, {"messages": MESSAGES * 3})
    assert status == 400 and error_of(response)["param"] == "messages"


def test_no_error_body_leaks_tracebacks_paths_or_keys(models, tmp_path, make_daemon):
    daemon = make_daemon(base_settings(models, api_keys=["super-secret-key"], max_body_bytes=4096))
    auth = {"Authorization": "Bearer super-secret-key"}
    bodies = [
        chat(daemon.url, b"{", headers=auth),
        chat(daemon.url, {"messages": MESSAGES, "model": str(models / "tiny.gguf")}, headers=auth),
        chat(daemon.url, {"messages": [{"role": "user", "content": "x" * 9000}]}, headers=auth),
        chat(daemon.url, {"messages": MESSAGES}, headers={"Authorization": "Bearer super-secret-kez"}),
        request(daemon.url, path="/v1/models/../../etc/passwd", headers=auth),
        chat(daemon.url, {"messages": [{"role": "user", "content": "hi " * 600}]}, headers=auth),
    ]
    for status, _, body in bodies:
        assert status >= 400
        text = body.decode()
        assert (
            "Traceback" not in text
            and str(tmp_path) not in text
            and "super-secret" not in text
            and "/work/" not in text
        )


def test_prompts_and_completions_are_logged_only_when_enabled(models, make_daemon):
    secret = "my secret question"
    quiet = make_daemon(base_settings(models))
    status, _, body = chat(
        quiet.url,
        {"messages": [{"role": "user", "content": secret}], "max_tokens": 4, "temperature": 0},
        headers={"X-Request-ID": "q1"},
    )
    answer = json.loads(body)["choices"][0]["message"]["content"]
    line = quiet.wait_for_log("request", request_id="q1")
    assert secret not in json.dumps(quiet.lines) and "messages" not in line and "completion" not in line
    loud = make_daemon(base_settings(models, log_content=True))
    chat(
        loud.url,
        {"messages": [{"role": "user", "content": secret}], "max_tokens": 4, "temperature": 0, "stream": True},
        headers={"X-Request-ID": "l1"},
    )
    line = loud.wait_for_log("request", request_id="l1")
    assert line["messages"][0]["content"] == secret and line["completion"] == answer


def test_body_timeout_closes_stalled_uploads(models, make_daemon):
    daemon = make_daemon(base_settings(models, body_timeout=0.5))
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    sock.sendall(
        b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mess'
    )
    started = time.monotonic()
    data = sock.recv(1000)
    assert data == b"" or data.startswith(b"HTTP/1.1 4")
    assert time.monotonic() - started < 3
    sock.close()


def test_cancellations_are_counted(models, make_daemon):
    daemon = make_daemon({"models_dir": str(models), "metrics_public": True, "llama": {"n_ctx": 2048, "n_threads": 1}})
    payload = json.dumps({"messages": MESSAGES, "stream": True, "max_tokens": 2000}).encode()
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-Request-ID: gone\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    sock.recv(100)
    sock.close()
    daemon.wait_for_log("request", request_id="gone")
    assert scrape(daemon.url)[("ggufd_cancellations_total", (("model", "tiny"),))] == 1
