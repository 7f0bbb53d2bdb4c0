"""systemd integration: sd_notify (through ``sdnotify``), the watchdog interval, socket activation.

Everything here is a no-op when ggufd does not run under systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("ggufd.systemd")

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1`` to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._notifier = None
        if self.enabled:
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()
        self._last_status: str | None = None

    def notify(self, *lines: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes latin-1; keep the text ASCII so nothing is silently dropped
            self._notifier.notify("\n".join(lines).encode("ascii", "replace").decode("ascii"))

    def ready(self) -> None:
        self.notify("READY=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this to its own reload request
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def watchdog_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within (``WatchdogSec=``), or None."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


def inherited_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """Listening sockets passed by systemd socket activation (``LISTEN_FDS``), else []."""
    environ = os.environ if environ is None else environ
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for child processes
    return sockets
