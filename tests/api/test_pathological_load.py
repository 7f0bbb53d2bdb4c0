"""A bounded load test: pathological request bodies (huge arrays, well under ``max_body_bytes``)
must not stall the event loop.

For each body a thread sends it (twice) while this thread polls ``GET /health`` and notes
each answer's latency. The issue asks for a /health p95 under 50 ms; so that the test does not
depend on the machine's speed, the bound is ``max(50 ms, 5 x the p95 of the same polling with no
load)`` measured here first. Each body must be refused with a 400 naming its limit. The figures
(p95 idle, p95 under load, the process's RSS growth) are printed (``pytest -s``).

A timed test, so it is marked ``load`` and left out of ``make test`` (CONTRIBUTING: speed targets
are checked by the benchmark, never by a timed unit test); ``make bench`` runs it, and
``pytest -m load`` runs it alone. That every such body is refused, cheaply and before any other
work, is asserted without timing in ``test_request_limits.py``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest
from http_helpers import request
from inprocess import InProcessServer

from ggufd.engine.fake import FakeEngine

pytestmark = pytest.mark.load

SAMPLES_MIN = 30  # /health answers measured at least, per body


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def health_latencies(url: str, until, minimum: int = SAMPLES_MIN) -> tuple[list[float], int]:
    """Poll /health until ``until()`` is true (and at least ``minimum`` times) -> (latencies, peak RSS)."""
    latencies, peak = [], rss_bytes()
    while len(latencies) < minimum or not until():
        started = time.perf_counter()
        status, _, _ = request(url, "GET", "/health", timeout=60)
        latencies.append(time.perf_counter() - started)
        assert status == 200
        peak = max(peak, rss_bytes())
    return latencies, peak


MSG = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f"}}

#: name -> (path, body, the param the 400 names)
BODIES = {
    "embedding inputs (200,000 strings)": ("/v1/embeddings", {"model": "embedder", "input": ["a"] * 200_000}, "input"),
    "messages (100,000)": ("/v1/chat/completions", {"model": "fake", "messages": [MSG] * 100_000}, "messages"),
    "logit_bias (200,000 entries)": (
        "/v1/chat/completions",
        {"model": "fake", "messages": [MSG], "logit_bias": {str(i): 1 for i in range(200_000)}},
        "logit_bias",
    ),
    "tools (100,000)": (
        "/v1/chat/completions",
        {"model": "fake", "messages": [MSG], "tools": [TOOL] * 100_000},
        "tools",
    ),
    "stop (200,000 strings)": ("/v1/completions", {"model": "fake", "prompt": "x", "stop": ["a"] * 200_000}, "stop"),
    "content parts (200,000)": (
        "/v1/chat/completions",
        {"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 200_000}]},
        "messages.0.content",
    ),
}


@pytest.fixture(scope="module")
def server():
    with InProcessServer(FakeEngine(embedding_models=frozenset({"embedder"}))) as server:
        yield server


@pytest.fixture(scope="module")
def idle_p95(server) -> float:
    request(server.url, "GET", "/health")  # warm the connection path
    latencies, _ = health_latencies(server.url, lambda: True, minimum=100)
    return p95(latencies)


@pytest.mark.parametrize("name", list(BODIES))
def test_a_pathological_body_does_not_stall_health(server, idle_p95, name):
    path, body, param = BODIES[name]
    raw = json.dumps(body).encode()
    answers: list = []

    def send() -> None:
        for _ in range(2):
            answers.append(request(server.url, "POST", path, raw, timeout=120))

    sender = threading.Thread(target=send)
    before = rss_bytes()
    sender.start()
    latencies, peak = health_latencies(server.url, lambda: not sender.is_alive())
    sender.join()
    bound = max(0.050, 5 * idle_p95)
    print(
        f"\n{name}: {len(raw) / 1024:.0f} KiB, /health p95 idle {idle_p95 * 1000:.1f} ms, "
        f"under load {p95(latencies) * 1000:.1f} ms (max {max(latencies) * 1000:.1f} ms, "
        f"{len(latencies)} samples), RSS +{(peak - before) / 2**20:.0f} MiB"
    )
    for status, _, answer in answers:
        assert status == 400, answer[:300]
        error = json.loads(answer)["error"]
        assert error["param"] == param, error
        assert error["code"] == "limit_exceeded", error
    assert p95(latencies) < bound, f"/health p95 {p95(latencies) * 1000:.1f} ms >= {bound * 1000:.1f} ms"
