"""What operators and monitoring ask: ``/health``, ``/metrics``, ``/-/plugins``, ``/openapi.json``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ggufd import __version__
from ggufd.api.base import BaseHandler
from ggufd.api.openapi import openapi_document


class HealthHandler(BaseHandler):
    endpoint = "health"
    serves_while_draining = True

    def is_public(self) -> bool:
        return self.state.config.health_public

    def get(self) -> None:
        state = self.state
        engine = state.engine
        gpu = engine.gpu_report()
        if state.draining:
            self.set_header("Retry-After", "5")
        self.write_json(
            {
                "status": "draining" if state.draining else "ok",
                "version": __version__,
                "default_model": state.registry.default_id,
                "models": sorted(state.registry.models),
                "loaded_models": engine.loaded_models(),
                "model_states": engine.status(),
                "gpu_offload": engine.gpu_available,
                "gpus": [
                    {"name": d.name, "description": d.description, "total_bytes": d.total_bytes} for d in gpu.devices
                ],
                "gpu_problems": list(gpu.problems),
                "pending_requests": engine.pending(),
                "skipped_files": [{"id": s.id, "reason": s.reason} for s in state.registry.skipped],
            },
            status=503 if state.draining else 200,
        )


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus exposition (needs an API key unless ``metrics_public``)."""

    endpoint = "metrics"
    serves_while_draining = True

    def is_public(self) -> bool:
        return self.state.config.metrics_public

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        assert self.state.metrics is not None
        self.finish(generate_latest(self.state.metrics.registry))


class PluginsHandler(BaseHandler):
    """``GET /-/plugins``: the loaded plugins (name, origin and version, hooks) and those that failed."""

    endpoint = "plugins"

    def get(self) -> None:
        plugins = self.state.plugins
        self.write_json({"plugins": plugins.describe(), "failed": plugins.failures})


class OpenAPIHandler(BaseHandler):
    """``GET /openapi.json``: the API described from the committed request schemas."""

    endpoint = "openapi"

    def is_public(self) -> bool:
        return True

    def get(self) -> None:
        self.write_json(openapi_document())
