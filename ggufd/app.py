"""The Tornado application and the serve loop.

``make_app`` wires routes to handlers with one shared :class:`AppState`; ``serve``
listens, installs signal handlers and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Any

import structlog
import tornado.httpserver
import tornado.netutil
import tornado.web

from . import __version__
from .config import Config
from .engine import Engine
from .handlers import ChatCompletionsHandler, HealthHandler, ModelsHandler, NotFoundHandler
from .registry import ModelRegistry

log = structlog.get_logger("ggufd.app")


@dataclass
class AppState:
    config: Config
    registry: ModelRegistry
    plugins: Any  # pluggy.PluginManager
    engine: Engine


def make_app(state: AppState) -> tornado.web.Application:
    kwargs = {"state": state}
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, kwargs),
            (r"/v1/models", ModelsHandler, kwargs),
            (r"/v1/models/(.+)", ModelsHandler, kwargs),
            (r"/v1/chat/completions", ChatCompletionsHandler, kwargs),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kwargs,
        log_function=lambda handler: None,  # BaseHandler logs one structured line per request
        compress_response=False,
    )


async def serve(state: AppState, *, shutdown_timeout: float = 30.0) -> None:
    """Listen until SIGTERM/SIGINT, then stop accepting, let requests finish, free models."""
    config = state.config
    app = make_app(state)
    server = tornado.httpserver.HTTPServer(
        app,
        max_body_size=config.max_body_bytes,
        idle_connection_timeout=300,
        body_timeout=60,
    )
    sockets = tornado.netutil.bind_sockets(config.port, config.host)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    log.info("listening", host=config.host, port=port, models=len(state.registry), default_model=state.registry.default_id, version=__version__)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    log.info("shutting down")
    server.stop()
    deadline = loop.time() + shutdown_timeout
    while state.engine.pending() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if state.engine.pending():
        log.warning("requests still running at the shutdown deadline", pending=state.engine.pending())
    await asyncio.sleep(0.05)  # let handlers write their last bytes
    state.plugins.hook.shutdown()
    await state.engine.close()
    log.info("stopped")
