"""The real Tornado application (``make_app``) over a FakeEngine, served in this process on a
background thread: protocol, error-shape and SSE-framing tests need no llama.cpp and no daemon."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import tornado.httpserver
import tornado.netutil

from ggufd.api.app import make_app
from ggufd.api.metrics import Metrics
from ggufd.api.state import AppState
from ggufd.config import Config
from ggufd.engine.fake import FakeEngine
from ggufd.gguf_metadata import GGUFMetadata
from ggufd.plugins import make_plugin_manager
from ggufd.registry import ModelRegistry
from ggufd.types import ModelInfo, ModelSpec


def fake_model(
    model_id: str, *, context_length: int = 4096, aliases: tuple[str, ...] = (), family: str = "generic"
) -> ModelInfo:
    metadata = GGUFMetadata(
        version=3,
        tensor_count=0,
        values={"general.architecture": "llama", "llama.context_length": context_length},
        array_lengths={},
        bos_token=None,
        eos_token=None,
    )
    return ModelInfo(ModelSpec(model_id, Path(f"/nonexistent/{model_id}.gguf"), aliases=aliases), metadata, family)


def registry_of(*models: ModelInfo) -> ModelRegistry:
    aliases = {alias: m.id for m in models for alias in m.spec.aliases}
    return ModelRegistry(
        MappingProxyType({m.id: m for m in models}), MappingProxyType(aliases), models[0].id if models else None
    )


class InProcessServer:
    """``with InProcessServer(engine) as server: server.url`` — the app on 127.0.0.1, a free port."""

    def __init__(self, engine: FakeEngine, registry: ModelRegistry | None = None, **config) -> None:
        self.engine = engine
        self.config = replace(Config(models_dir=Path("/nonexistent")), **config)
        registry = registry or registry_of(fake_model("fake", aliases=("fake-alias",)), fake_model("embedder"))
        self.state = AppState(
            config=self.config,
            registry=registry,
            plugins=make_plugin_manager(self.config),
            engine=engine,
            metrics=Metrics(),
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(make_app(self.state), max_body_size=2**40)
        server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def call(self, fn) -> None:
        """Run ``fn()`` on the server's loop (e.g. to set ``state.draining``)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
