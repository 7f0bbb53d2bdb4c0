"""The Tornado application and the daemon's life: listen, preload, reload on SIGHUP, drain on SIGTERM.

``make_app`` wires routes to handlers with one shared :class:`AppState`; ``serve`` runs
until SIGTERM/SIGINT, then drains: new requests (and ``/health``) get 503 while running
requests finish, up to ``shutdown_timeout``; the rest are cancelled, models freed, exit 0.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog
import tornado.httpserver
import tornado.netutil
import tornado.web

from . import __version__
from .config import Config
from .engine import Engine, Limits
from .errors import ApiError, ConfigError
from .handlers import (
    AdminModelHandler,
    ChatCompletionsHandler,
    HealthHandler,
    ModelsHandler,
    NotFoundHandler,
)
from .registry import ModelRegistry, build_registry

log = structlog.get_logger("ggufd.app")


@dataclass
class AppState:
    config: Config
    registry: ModelRegistry
    plugins: Any  # pluggy.PluginManager
    engine: Engine
    draining: bool = False
    #: rebuilds the config (same file, same command-line overrides) for SIGHUP
    reload_config: Callable[[], Config] | None = None
    active: set = field(default_factory=set)  # generation handlers in flight


def limits_of(config: Config) -> Limits:
    return Limits(
        max_loaded_models=config.max_loaded_models,
        memory_budget=config.memory_budget,
        max_queue=config.max_queue,
        keep_alive=config.keep_alive,
    )


def make_engine(config: Config, **kwargs) -> Engine:
    return Engine(
        settings_for=lambda info: config.model_settings(info.options),
        limits=limits_of(config),
        llama_log_level=config.llama_log_level,
        **kwargs,
    )


def make_app(state: AppState) -> tornado.web.Application:
    kwargs = {"state": state}
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, kwargs),
            (r"/v1/models", ModelsHandler, kwargs),
            (r"/v1/models/(.+)", ModelsHandler, kwargs),
            (r"/v1/chat/completions", ChatCompletionsHandler, kwargs),
            (r"/admin/models/(.+)/(load|unload)", AdminModelHandler, kwargs),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kwargs,
        log_function=lambda handler: None,  # BaseHandler logs one structured line per request
        compress_response=False,
    )


async def reload(state: AppState) -> bool:
    """SIGHUP: re-read the config and rescan the models without dropping connections.
    An invalid new config is rejected with a log line; the old one stays in force."""
    log.info("reloading configuration")
    try:
        config = await asyncio.to_thread(state.reload_config)
        registry = await asyncio.to_thread(build_registry, config, state.plugins)
    except ConfigError as exc:
        log.error("reload rejected; keeping the running configuration", error=str(exc))
        return False
    for key in ("host", "port", "plugins_dir", "disable_plugins"):
        if getattr(config, key) != getattr(state.config, key):
            log.warning("this setting changes only on restart", key=key)
    added = sorted(set(registry.models) - set(state.registry.models))
    removed = sorted(set(state.registry.models) - set(registry.models))
    state.config, state.registry = config, registry
    state.engine.update_models(registry.models, lambda info: config.model_settings(info.options), limits_of(config))
    log.info("reloaded", models=len(registry), added=added, removed=removed)
    return True


async def drain(state: AppState, timeout: float) -> None:
    """Let running requests finish up to ``timeout``, then cancel the rest."""
    state.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state.active and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if state.active:
        log.warning("cancelling requests still running at the shutdown deadline", running=len(state.active))
        for handler in list(state.active):
            handler.cancel_generation()
        while state.active and loop.time() < deadline + 5:
            await asyncio.sleep(0.02)


async def preload(state: AppState, model_id: str) -> None:
    try:
        await state.engine.load(state.registry.get(model_id))
    except ApiError as exc:
        log.error("preload failed", model=model_id, error=exc.message)


async def serve(state: AppState) -> None:
    config = state.config
    server = tornado.httpserver.HTTPServer(make_app(state), max_body_size=config.max_body_bytes, idle_connection_timeout=300, body_timeout=60)
    sockets = tornado.netutil.bind_sockets(config.port, config.host)
    server.add_sockets(sockets)
    log.info("listening", host=config.host, port=sockets[0].getsockname()[1], models=len(state.registry),
             default_model=state.registry.default_id, version=__version__)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutting down: draining", signal=signal.Signals(signum).name, timeout=state.config.shutdown_timeout)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    if state.reload_config is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(state)))

    for model_id in config.preload:
        loop.create_task(preload(state, model_id))

    await stop.wait()
    await drain(state, state.config.shutdown_timeout)
    server.stop()
    await server.close_all_connections()
    state.plugins.hook.shutdown()
    await state.engine.close()
    log.info("stopped")
