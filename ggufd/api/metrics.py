"""Prometheus metrics (prometheus-client), one registry per application.

Counters and histograms are fed by the handlers (one observation per request) and by
the engine (model loads); queue depth and loaded models are read from the engine at
scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from ggufd.engine.contract import EngineClient

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineCollector:
    """Scrape-time gauges from the engine's model states (none until an engine is attached)."""

    def __init__(self) -> None:
        self.engine: EngineClient | None = None

    def collect(self):
        engine = self.engine
        status = engine.status() if engine is not None else {}
        queue = GaugeMetricFamily("ggufd_queue_depth", "Requests queued or running per model", labels=["model"])
        loaded = GaugeMetricFamily("ggufd_model_loaded", "1 if the model is loaded", labels=["model"])
        for model_id, state in sorted(status.items()):
            queue.add_metric([model_id], state["pending"])
            loaded.add_metric([model_id], 1 if state["state"] == "loaded" else 0)
        yield queue
        yield loaded
        yield GaugeMetricFamily(
            "ggufd_loaded_models", "Models loaded now", value=sum(1 for s in status.values() if s["state"] == "loaded")
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ggufd_requests", "HTTP requests", ["endpoint", "model", "status"], registry=r)
        self.prompt_tokens = Counter("ggufd_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter(
            "ggufd_completion_tokens", "Completion tokens generated", ["model"], registry=r
        )
        self.cancellations = Counter(
            "ggufd_cancellations", "Generations stopped before they finished", ["model"], registry=r
        )
        self.ttft = Histogram(
            "ggufd_time_to_first_token_seconds",
            "Time from request to first token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.decode_rate = Histogram(
            "ggufd_decode_tokens_per_second",
            "Per-request decode rate after the first token",
            ["model"],
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self.model_load = Histogram(
            "ggufd_model_load_seconds", "Model load duration", ["model"], buckets=LOAD_BUCKETS, registry=r
        )
        self._engine_gauges = EngineCollector()
        r.register(self._engine_gauges)

    def watch(self, engine: EngineClient) -> None:
        """Read queue depth and loaded models from ``engine`` at scrape time."""
        self._engine_gauges.engine = engine

    def observe_request(self, endpoint: str, status: int, fields: dict, duration_s: float) -> None:
        model = fields.get("model", "")
        self.requests.labels(endpoint, model, str(status)).inc()
        if not model:
            return
        prompt, completion = fields.get("prompt_tokens"), fields.get("completion_tokens")
        if prompt:
            self.prompt_tokens.labels(model).inc(prompt)
        if completion:
            self.completion_tokens.labels(model).inc(completion)
        if fields.get("finish_reason") == "cancelled":
            self.cancellations.labels(model).inc()
        ttft_ms = fields.get("ttft_ms")
        if ttft_ms is not None:
            self.ttft.labels(model).observe(ttft_ms / 1000)
            decode_s = duration_s - ttft_ms / 1000
            if completion and completion > 1 and decode_s > 0:
                self.decode_rate.labels(model).observe((completion - 1) / decode_s)

    def observe_load(self, model: str, seconds: float) -> None:
        self.model_load.labels(model).observe(seconds)
