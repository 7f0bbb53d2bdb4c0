"""structlog set-up: JSON lines, key=value on a terminal, or native journald entries.

Configured once by the command line; every module just calls ``structlog.get_logger``.
Request ids are bound with ``structlog.contextvars`` so every line of a request carries one.

``fmt="auto"`` picks journald when systemd connected the stream to the journal (``$JOURNAL_STREAM``
names the stream's ``device:inode``), key=value on a terminal, else JSON lines.  In journald mode
every key becomes a journal field (``request_id`` -> ``REQUEST_ID``), so under systemd
``journalctl -u ggufd MODEL=x -o json`` works.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
import threading
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2, "fatal": 2}
MAX_VALUE = 64 * 1024
_OWN_FIELDS = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "TRACEBACK", "EVENT"}
_SKIP_KEYS = {"event", "level", "timestamp", "exception"}


def configure_logging(level: str = "info", fmt: str = "auto", stream=None, environ=None) -> None:
    stream = stream or sys.stdout
    environ = os.environ if environ is None else environ
    if fmt == "auto":
        fmt = "journald" if journal_stream_matches(stream, environ) else "console" if stream.isatty() else "json"
    renderer: Any
    factory: Any
    if fmt == "journald":
        sender = JournalSender(environ.get("GGUFD_JOURNAL_SOCKET") or JOURNAL_SOCKET, stream)
        renderer = _pass_dict  # the logger encodes and sends the event dict itself

        def factory(*args):  # structlog.get_logger("ggufd.http") -> LOGGER=ggufd.http
            return JournalLogger(sender, args[0] if args else None)
    else:
        renderer = (
            structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
        )
        factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _pass_dict(_logger, _name, event_dict: dict):
    return (event_dict,), {}


def journal_stream_matches(stream, environ) -> bool:
    """systemd's documented check: ``$JOURNAL_STREAM`` is ``device:inode`` of the journal stream."""
    try:
        dev, ino = environ.get("JOURNAL_STREAM", "").split(":")
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError, AttributeError):  # unset/malformed, or a stream without a file descriptor
        return False


class JournalLogger:
    """The structlog "logger" of journald mode: hands the event dict and its name to the sender."""

    def __init__(self, sender: JournalSender, name: str | None) -> None:
        self._sender, self._name = sender, name

    def msg(self, event_dict: dict) -> None:
        self._sender.send(event_dict, self._name)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class JournalSender:
    """journald's native protocol, hand-written because it is tiny: one datagram per entry of
    ``FIELD=value\\n`` lines, or ``FIELD\\n<u64 little-endian length><bytes>\\n`` for values with a
    newline.  ``systemd-python`` would need the libsystemd headers to build and cannot target a test
    socket.  If the socket is missing or a send fails, the line is written to ``stream`` as JSON."""

    def __init__(self, path: str, stream) -> None:
        self.path, self.stream = path, stream
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.lock = threading.Lock()

    def send(self, event_dict: dict, logger: str | None = None) -> None:
        try:
            data = self.encode(event_dict, logger)
            with self.lock:
                self.sock.sendto(data, self.path)
        except Exception:  # no journal (or EMSGSIZE): never crash, never lose the line
            line = str(structlog.processors.JSONRenderer()(None, "", dict(event_dict)))
            with self.lock:
                self.stream.write(line + "\n")
                self.stream.flush()

    @staticmethod
    def encode(event_dict: dict, logger: str | None = None) -> bytes:
        event = str(event_dict.get("event", ""))
        fields = {k: v for k, v in event_dict.items() if k not in _SKIP_KEYS and v is not None}
        pairs = " ".join(f"{k}={_quoted(_text(v))}" for k, v in fields.items())
        message = f"{event} {pairs}" if pairs else event
        exc = event_dict.get("exception")
        entries = [
            ("MESSAGE", f"{message}\n{exc}" if exc else message),
            ("EVENT", event),
            ("PRIORITY", str(PRIORITIES.get(str(event_dict.get("level")), 6))),
            ("SYSLOG_IDENTIFIER", "ggufd"),
        ]
        if logger:
            entries.append(("LOGGER", logger))
        if exc:
            entries.append(("TRACEBACK", exc))
        for key, value in fields.items():
            name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_0123456789")[:63]
            if name:
                entries.append((name + "_" if name in _OWN_FIELDS else name, _text(value)))
        return b"".join(_field(name, value) for name, value in entries)


def _text(value) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if isinstance(value, (bool, list, tuple, dict))
        else str(value)
    )


def _quoted(text: str) -> str:
    return text if text and not re.search(r'[\s"=]', text) else json.dumps(text)


def _field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", errors="backslashreplace")
    if len(data) > MAX_VALUE:
        data = data[:MAX_VALUE] + f"... [truncated {len(data) - MAX_VALUE} bytes]".encode()
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
