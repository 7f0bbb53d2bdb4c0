"""Log output: native journald entries (against a fake journal socket), format auto-detection, fallbacks."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import structlog
from conftest import REPO, write_config

from ggufd.logs import configure_logging


def parse_entry(data: bytes) -> dict:
    """One native-protocol datagram -> {FIELD: value} (values as str; repeated fields would clash, none expected)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = nl + 1
        else:  # binary form: NAME\n<u64 le length><bytes>\n
            name = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            i = nl + 10 + size
        assert name not in fields, f"duplicate field {name!r}"
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture(autouse=True)
def restore_structlog():
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def journal(tmp_path):
    """A fake journald: a bound datagram socket; ``journal.entries(n)`` receives n parsed entries."""
    path = str(tmp_path / "journal.sock")
    if len(path) > 100:  # AF_UNIX path limit
        pytest.skip("tmp path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)

    class Journal:
        env = {"GGUFD_JOURNAL_SOCKET": path}
        raw: list = []

        def entries(self, n: int = 1) -> list[dict]:
            out = []
            for _ in range(n):
                data = sock.recv(1 << 20)
                self.raw.append(data)
                out.append(parse_entry(data))
            return out

        def empty(self) -> bool:
            sock.setblocking(False)
            try:
                sock.recv(1 << 20)
                return False
            except BlockingIOError:
                return True
            finally:
                sock.settimeout(10)

    yield Journal()
    sock.close()


def test_request_line_becomes_journal_fields(journal):
    stream = io.StringIO()
    configure_logging("info", "journald", stream=stream, environ=journal.env)
    structlog.get_logger("ggufd.http").info(
        "request",
        request_id="req_1",
        model="m",
        status=200,
        duration_ms=12.5,
        prompt_tokens=3,
        completion_tokens=4,
        ttft_ms=1.5,
        finish_reason=None,
    )
    (entry,) = journal.entries()
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "ggufd"
    assert entry["LOGGER"] == "ggufd.http"
    assert entry["EVENT"] == "request"
    assert entry["MESSAGE"].startswith("request ")
    assert "request_id=req_1" in entry["MESSAGE"] and "status=200" in entry["MESSAGE"]
    assert entry["REQUEST_ID"] == "req_1"
    assert entry["MODEL"] == "m"
    assert entry["STATUS"] == "200"
    assert entry["DURATION_MS"] == "12.5"
    assert entry["PROMPT_TOKENS"] == "3"
    assert entry["COMPLETION_TOKENS"] == "4"
    assert entry["TTFT_MS"] == "1.5"
    assert "FINISH_REASON" not in entry  # None values are left out
    assert "TIMESTAMP" not in entry and "LEVEL" not in entry  # the journal has its own
    assert stream.getvalue() == ""  # nothing fell back to the stream


def test_field_names_are_sanitised(journal):
    configure_logging("info", "journald", stream=io.StringIO(), environ=journal.env)
    structlog.get_logger("x").info("odd keys", **{"_private": 1, "2fast": 2, "a-b.c": 3, "message": "m", "priority": 9})
    (entry,) = journal.entries()
    assert all(
        name.replace("_", "A").isalnum() and name.isupper() and not name[0].isdigit() and name[0] != "_"
        for name in entry
    )
    assert entry["PRIVATE"] == "1" and entry["FAST"] == "2" and entry["A_B_C"] == "3"
    assert entry["MESSAGE_"] == "m" and entry["PRIORITY_"] == "9" and entry["PRIORITY"] == "6"


def test_multiline_value_uses_binary_form(journal):
    configure_logging("info", "journald", stream=io.StringIO(), environ=journal.env)
    text = "line one\nline two\n  indented = x\n"
    structlog.get_logger("ggufd.chat").info("template", prompt=text)
    (entry,) = journal.entries()
    assert entry["PROMPT"] == text
    assert b"PROMPT\n" + struct.pack("<Q", len(text.encode())) in journal.raw[-1]
    assert entry["MESSAGE"] == 'template prompt="line one\\nline two\\n  indented = x\\n"'  # one line, JSON-quoted


def test_priorities_and_traceback(journal):
    configure_logging("debug", "journald", stream=io.StringIO(), environ=journal.env)
    log = structlog.get_logger("ggufd.app")
    log.debug("d")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.exception("boom", request_id="req_x")
    entries = journal.entries(5)
    assert [e["PRIORITY"] for e in entries] == ["7", "4", "3", "2", "3"]
    boom = entries[-1]
    assert "ZeroDivisionError" in boom["TRACEBACK"] and "Traceback" in boom["TRACEBACK"]
    assert boom["MESSAGE"].startswith("boom request_id=req_x\n") and "ZeroDivisionError" in boom["MESSAGE"]


def test_level_filter_applies(journal):
    configure_logging("warning", "journald", stream=io.StringIO(), environ=journal.env)
    structlog.get_logger("x").info("hidden")
    structlog.get_logger("x").warning("shown")
    (entry,) = journal.entries()
    assert entry["EVENT"] == "shown"
    assert journal.empty()


def test_contextvars_reach_every_line(journal):
    configure_logging("info", "journald", stream=io.StringIO(), environ=journal.env)
    with structlog.contextvars.bound_contextvars(request_id="req_ctx"):
        structlog.get_logger("ggufd.engine").info("generating", n=1)
    (entry,) = journal.entries()
    assert entry["REQUEST_ID"] == "req_ctx" and entry["N"] == "1"


def test_huge_value_is_truncated(journal):
    configure_logging("info", "journald", stream=io.StringIO(), environ=journal.env)
    structlog.get_logger("x").info("big", blob="y" * 200_000)
    (entry,) = journal.entries()
    assert entry["BLOB"].startswith("y" * 65536) and entry["BLOB"].endswith("[truncated 134464 bytes]")
    assert len(entry["BLOB"]) < 66_000


def test_oversized_entry_falls_back_to_json_lines(journal):
    stream = io.StringIO()
    configure_logging("info", "journald", stream=stream, environ=journal.env)
    fields = {f"part{i}": "z" * 60_000 for i in range(40)}  # 2.4 MB: over any datagram limit (EMSGSIZE)
    structlog.get_logger("x").info("huge", **fields)
    entry = json.loads(stream.getvalue())
    assert entry["event"] == "huge" and entry["part39"] == "z" * 60_000
    assert journal.empty()


def test_missing_socket_falls_back_to_json_lines(tmp_path):
    stream = io.StringIO()
    configure_logging(
        "info", "journald", stream=stream, environ={"GGUFD_JOURNAL_SOCKET": str(tmp_path / "absent.sock")}
    )
    with structlog.contextvars.bound_contextvars(request_id="req_2"):
        structlog.get_logger("ggufd.http").info("request", status=500, body="a\nb")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "request" and entry["status"] == 500 and entry["request_id"] == "req_2"
    assert entry["body"] == "a\nb" and entry["level"] == "info" and "timestamp" in entry


def test_threads_each_send_one_intact_entry(journal):
    configure_logging("info", "journald", stream=io.StringIO(), environ=journal.env)
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        structlog.get_logger("llama.cpp").info("thread line", thread=i, text=f"from\nthread {i}\n" * 50)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = journal.entries(8)
    assert sorted(int(e["THREAD"]) for e in entries) == list(range(8))
    for e in entries:
        assert e["TEXT"] == f"from\nthread {e['THREAD']}\n" * 50
    assert journal.empty()


# --- auto-detection


def test_auto_picks_journald_when_journal_stream_matches(journal, tmp_path):
    with open(tmp_path / "stream.log", "w") as stream:
        st = os.fstat(stream.fileno())
        configure_logging(
            "info", "auto", stream=stream, environ={**journal.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        )
        structlog.get_logger("x").info("hello", a=1)
    (entry,) = journal.entries()
    assert entry["EVENT"] == "hello" and entry["A"] == "1"
    assert (tmp_path / "stream.log").read_text() == ""


@pytest.mark.parametrize("value", ["1:2", "garbage", ""])
def test_auto_picks_json_when_journal_stream_does_not_match(journal, value):
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "w") as stream:
        configure_logging("info", "auto", stream=stream, environ={**journal.env, "JOURNAL_STREAM": value})
        structlog.get_logger("x").info("hello", a=1)
        stream.flush()
        line = reader.readline()
    entry = json.loads(line)
    assert entry["event"] == "hello" and entry["a"] == 1
    assert journal.empty()


def test_auto_without_journal_stream_and_stream_without_fd_is_json():
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream, environ={"JOURNAL_STREAM": "1:2"})
    structlog.get_logger("x").info("hello")
    assert json.loads(stream.getvalue())["event"] == "hello"


def test_json_and_console_unchanged():
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, environ={})
    structlog.get_logger("x").info("hello", a=1)
    entry = json.loads(stream.getvalue())
    assert set(entry) == {"event", "a", "level", "timestamp"}
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream, environ={})
    structlog.get_logger("x").info("hello", a=1)
    assert "hello" in stream.getvalue() and "a=1" in stream.getvalue() and "{" not in stream.getvalue()


# --- end to end: the daemon under a (fake) systemd journal


def test_daemon_logs_requests_to_journal(journal, tiny_model, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.gguf")
    config = write_config(
        tmp_path / "ggufd.toml",
        {
            "models_dir": str(folder),
            "log_format": "auto",
            "llama": {"n_ctx": 512, "n_threads": 1},
        },
    )
    stdout_path = tmp_path / "stdout.log"
    with open(stdout_path, "wb") as out:
        st = os.fstat(out.fileno())
        env = {**os.environ, **journal.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "GGUFD_LOG_LEVEL": "info"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ggufd", "--config", str(config), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        seen: list[dict] = []

        def wait_for(pred, timeout: float = 60) -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    entry = journal.entries()[0]
                except TimeoutError:
                    entry = None
                if entry is not None:
                    seen.append(entry)
                    if pred(entry):
                        return entry
                assert proc.poll() is None, f"ggufd exited: {stdout_path.read_text()}\n{seen}"
            raise AssertionError(f"no matching journal entry; got {seen}")

        listening = wait_for(lambda e: e.get("EVENT") == "listening")
        assert listening["PRIORITY"] == "6" and listening["LOGGER"] == "ggufd.app"
        port = int(listening["PORT"])

        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "X-Request-ID": "req-e2e-journal"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            assert response.headers["X-Request-ID"] == "req-e2e-journal"
            json.loads(response.read())

        entry = wait_for(lambda e: e.get("EVENT") == "request" and e.get("PATH") == "/v1/chat/completions")
        assert entry["REQUEST_ID"] == "req-e2e-journal"
        assert entry["MODEL"] == "tiny"
        assert entry["STATUS"] == "200"
        assert entry["METHOD"] == "POST"
        assert int(entry["PROMPT_TOKENS"]) > 0
        assert entry["COMPLETION_TOKENS"] == "3"
        assert float(entry["TTFT_MS"]) >= 0
        assert float(entry["DURATION_MS"]) >= float(entry["TTFT_MS"])
        assert entry["SYSLOG_IDENTIFIER"] == "ggufd" and entry["LOGGER"] == "ggufd.http"
        # nothing structured went to stdout: it all went to the journal
        assert not any(line.startswith("{") for line in stdout_path.read_text().splitlines())
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_config_accepts_journald_format(tmp_path):
    from ggufd.config import load_config
    from ggufd.errors import ConfigError

    assert (
        load_config(
            str(write_config(tmp_path / "a.toml", {"models_dir": str(tmp_path), "log_format": "journald"}))
        ).log_format
        == "journald"
    )
    with pytest.raises(ConfigError):
        load_config(str(write_config(tmp_path / "b.toml", {"models_dir": str(tmp_path), "log_format": "syslog"})))
