"""The systemd units in etc/: `systemd-analyze verify` accepts them, and the settings that ggufd's
signal handling and sd_notify support depend on are in place. Also: etc/ggufd.env.example names
every environment variable ggufd reads.

`systemd-analyze verify` works without a running systemd (a container, CI) as root or not; it only
needs the executables named in Exec*= to exist, so the units are verified from a copy whose
ExecStart/ExecReload point at binaries of this machine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ggufd.config import ENV_CONFIG, ENV_OVERRIDES, Config

REPO = Path(__file__).resolve().parent.parent
ETC = REPO / "etc"
SERVICE = ETC / "ggufd.service"
SOCKET = ETC / "ggufd.socket"
ENV_EXAMPLE = ETC / "ggufd.env.example"

PRODUCTION_EXEC_START = "/opt/ggufd/.venv/bin/ggufd --config /etc/ggufd/ggufd.toml"
#: read by ggufd besides ENV_OVERRIDES (GGUFD_API_KEYS: the API-key support)
EXTRA_ENV = (ENV_CONFIG, "GGUFD_API_KEYS")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned (in order); comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text("utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):  # continuation line
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(span: str) -> float:
    """A systemd time span ("45", "45s", "1min 30s", "500ms") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), f"unexpected time span {span!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def one(unit: dict, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is not set"
    return values[-1]  # the last assignment wins in systemd


@pytest.fixture(scope="module")
def service():
    return parse_unit(SERVICE)


@pytest.fixture(scope="module")
def socket_unit():
    return parse_unit(SOCKET)


def default_shutdown_timeout() -> float:
    return next(f.default for f in dataclasses.fields(Config) if f.name == "shutdown_timeout")


# --- systemd-analyze verify


def _systemd_version(tool: str) -> int:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


def _unit_quote(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)")

    # The production paths (/opt/ggufd/...) do not exist here, and verify insists on existing executables:
    # point ExecStart at this interpreter (`python -m ggufd` is the same program) and ExecReload at this
    # machine's kill. Everything else is verified as shipped.
    kill = shutil.which("kill") or "/bin/kill"
    replacements = {
        "ExecStart": f"{_unit_quote(sys.executable)} -m ggufd --config /etc/ggufd/ggufd.toml",
        "ExecReload": f"{_unit_quote(kill)} -HUP $MAINPID",
    }
    text = SERVICE.read_text("utf-8")
    for key, value in replacements.items():
        text, count = re.subn(rf"^{key}=.*$", lambda _m, k=key, v=value: f"{k}={v}", text, flags=re.M)
        assert count == 1, f"expected exactly one {key}= line in {SERVICE.name}"
    (tmp_path / SERVICE.name).write_text(text, "utf-8")
    shutil.copy(SOCKET, tmp_path / SOCKET.name)  # verified together: the socket needs its service

    args = [tool, "verify", "--man=no"]
    if _systemd_version(tool) >= 250:
        # exit non-zero on warnings in our units too (unknown keys, unparsable values), but not on
        # problems of unrelated units of this machine that get loaded as dependencies
        args.append("--recursive-errors=no")
    args += [str(tmp_path / SERVICE.name), str(tmp_path / SOCKET.name)]
    env = dict(
        os.environ,
        SYSTEMD_LOG_LEVEL="info",  # every warning, whatever the caller's environment says
        SYSTEMD_LOG_TARGET="console",  # stderr, even when the tests themselves run under systemd/journald
        SYSTEMD_LOG_COLOR="0",
        SYSTEMD_PAGER="",
    )
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if "ggufd" in line or str(tmp_path) in line]
    assert result.returncode == 0, f"systemd-analyze verify failed (exit {result.returncode}):\n{output}"
    assert not ours, "systemd-analyze verify complains about the units:\n" + "\n".join(ours)


# --- the settings ggufd depends on


def test_service_is_a_notify_service_with_watchdog(service):
    assert one(service, "Service", "Type") == "notify"
    assert one(service, "Service", "NotifyAccess") == "main"
    assert seconds(one(service, "Service", "WatchdogSec")) > 0
    assert seconds(one(service, "Service", "TimeoutStartSec")) >= 120  # model preload


def test_service_runs_the_production_install(service):
    assert one(service, "Service", "ExecStart") == PRODUCTION_EXEC_START
    assert one(service, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "Service", "EnvironmentFile") == "-/etc/default/ggufd"
    assert one(service, "Service", "User") == "ggufd"
    assert "multi-user.target" in one(service, "Install", "WantedBy").split()


def test_stop_leaves_room_for_the_drain(service):
    # SIGTERM drains for up to shutdown_timeout; systemd must not SIGKILL before that is over.
    stop = seconds(one(service, "Service", "TimeoutStopSec"))
    assert stop > default_shutdown_timeout()
    shipped = tomllib.loads((ETC / "ggufd.toml").read_text("utf-8")).get("shutdown_timeout", 0)
    assert stop > shipped, f"TimeoutStopSec={stop} must exceed shutdown_timeout={shipped} of etc/ggufd.toml"
    assert one(service, "Service", "KillMode") == "mixed"  # SIGTERM to ggufd only, SIGKILL to the rest at the end
    assert one(service, "Service", "KillSignal") == "SIGTERM"
    assert one(service, "Service", "Restart") == "on-failure"


def test_service_is_hardened_but_keeps_cuda_working(service):
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
        "ReadOnlyPaths": "/srv/ggufd/models",
    }
    for key, value in expected.items():
        assert one(service, "Service", key) == value, key
    assert set(one(service, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    devices = service["Service"].get("DeviceAllow", [])
    for device in ("/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "char-nvidia-frontend rw", "char-nvidia-uvm rw"):
        assert device in devices
    # CUDA's JIT and ctypes callbacks need writable+executable memory
    assert "MemoryDenyWriteExecute" not in service["Service"]
    assert "PrivateDevices" not in service["Service"]


def test_socket_listens_where_the_default_config_does(socket_unit):
    assert one(socket_unit, "Socket", "ListenStream") == f"{Config.host}:{Config.port}"
    assert "sockets.target" in one(socket_unit, "Install", "WantedBy").split()


# --- environment file


def test_env_example_names_every_variable_ggufd_reads():
    text = ENV_EXAMPLE.read_text("utf-8")
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    missing = [name for name in (*ENV_OVERRIDES, *EXTRA_ENV) if name not in named]
    assert not missing, f"{ENV_EXAMPLE.name} lacks: {', '.join(missing)}"


def test_env_example_is_a_valid_environment_file():
    for number, line in enumerate(ENV_EXAMPLE.read_text("utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", stripped), f"{ENV_EXAMPLE.name}:{number}: {line!r}"
        assert not stripped.startswith("export "), f"{ENV_EXAMPLE.name}:{number}: no 'export' in EnvironmentFile="
