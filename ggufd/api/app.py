"""The Tornado application and the daemon's life: listen, preload, reload on SIGHUP, drain on SIGTERM.

``make_app`` wires routes to handlers with one shared :class:`AppState`; ``serve`` watches the
model files (:func:`watch_model_files`) and runs until SIGTERM/SIGINT, then drains: new requests
(and ``/health``) get 503 while running requests finish, up to ``shutdown_timeout``; the rest are
cancelled, models freed, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal

import structlog
import tornado.httpserver
import tornado.netutil
import tornado.web

from ggufd import __version__
from ggufd.api.base import NotFoundHandler
from ggufd.api.embeddings import EmbeddingsHandler
from ggufd.api.generation import ChatCompletionsHandler, CompletionsHandler
from ggufd.api.llama_server import ApplyTemplateHandler, LlamaDetokenizeHandler, LlamaTokenizeHandler
from ggufd.api.metrics import Metrics
from ggufd.api.models import AdminModelHandler, ModelsHandler
from ggufd.api.operations import HealthHandler, MetricsHandler, OpenAPIHandler, PluginsHandler
from ggufd.api.state import AppState
from ggufd.api.tokenize import TokenizeHandler
from ggufd.config import Config
from ggufd.engine.lifecycle import Engine, Limits
from ggufd.errors import ApiError, ConfigError
from ggufd.registry import build_registry, refresh
from ggufd.systemd import inherited_sockets, watchdog_seconds

log = structlog.get_logger("ggufd.app")

#: seconds between two looks at the model files (one ``stat`` per model)
FILE_POLL_SECONDS = 1.0


def limits_of(config: Config) -> Limits:
    return Limits(
        max_loaded_models=config.max_loaded_models,
        memory_budget=config.memory_budget,
        max_queue=config.max_queue,
        keep_alive=config.keep_alive,
    )


def make_engine(config: Config, metrics: Metrics | None = None, **kwargs) -> Engine:
    return Engine(
        settings_for=lambda info: config.model_settings(info.options),
        limits=limits_of(config),
        llama_log_level=config.llama_log_level,
        on_load=metrics.observe_load if metrics is not None else None,
        **kwargs,
    )


def make_app(state: AppState) -> tornado.web.Application:
    kwargs = {"state": state}
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, kwargs),
            # the OpenAI routes, also without /v1 (as llama.cpp's server serves them: a client whose
            # base_url lacks /v1 works)
            (r"(?:/v1)?/models", ModelsHandler, kwargs),
            (r"(?:/v1)?/models/(.+)", ModelsHandler, kwargs),
            (r"(?:/v1)?/chat/completions", ChatCompletionsHandler, kwargs),
            (r"(?:/v1)?/completions", CompletionsHandler, kwargs),
            (r"(?:/v1)?/embeddings", EmbeddingsHandler, kwargs),
            (r"/admin/models/(.+)/(load|unload)", AdminModelHandler, kwargs),
            (r"/metrics", MetricsHandler, kwargs),
            (r"/extras/(tokenize|tokenize/count|detokenize)", TokenizeHandler, kwargs),
            # llama.cpp server's utility routes
            (r"/tokenize", LlamaTokenizeHandler, kwargs),
            (r"/detokenize", LlamaDetokenizeHandler, kwargs),
            (r"/apply-template", ApplyTemplateHandler, kwargs),
            (r"/-/plugins", PluginsHandler, kwargs),
            (r"/openapi.json", OpenAPIHandler, kwargs),
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
    state.notifier.reloading()
    if state.reload_config is None:
        log.warning("reload asked for, but this server has no config file to re-read")
        state.notifier.ready()
        return False
    try:
        config = await asyncio.to_thread(state.reload_config)
        registry = await asyncio.to_thread(build_registry, config, state.plugins)
    except ConfigError as exc:
        log.error("reload rejected; keeping the running configuration", error=str(exc))
        state.notifier.ready()
        return False
    for key in ("host", "port", "plugins_dir", "disable_plugins"):
        if getattr(config, key) != getattr(state.config, key):
            log.warning("this setting changes only on restart", key=key)
    added = sorted(set(registry.models) - set(state.registry.models))
    removed = sorted(set(state.registry.models) - set(registry.models))
    state.config, state.registry = config, registry
    state.engine.update_models(registry.models, lambda info: config.model_settings(info.options), limits_of(config))
    log.info("reloaded", models=len(registry), added=added, removed=removed)
    state.notifier.ready()
    return True


async def check_model_files(state: AppState, seen: dict) -> list[str]:
    """One look at the model files. The engine protects loaded models whose file changed at once;
    the registry re-reads a changed file once its stamp is the same in two looks in a row (a copy
    or download has stopped writing), so a half-written file is not read. ``seen`` carries the
    stamps of the changes still settling from one look to the next. Returns the ids read again."""
    state.engine.check_files()
    registry = state.registry
    changed = await asyncio.to_thread(registry.changed)
    settled = [model_id for model_id, stamp in changed.items() if model_id in seen and seen[model_id] == stamp]
    for model_id in [m for m in changed if m not in seen]:
        log.info("model file changed; reading it again once it is still", model=model_id)
    seen.clear()
    seen.update({model_id: stamp for model_id, stamp in changed.items() if model_id not in settled})
    if not settled:
        return []
    updated = await asyncio.to_thread(refresh, registry, settled, state.plugins)
    if state.registry is not registry:  # a SIGHUP reload replaced it meanwhile; it read every file
        return []
    state.registry = updated
    config = state.config
    state.engine.update_models(updated.models, lambda info: config.model_settings(info.options), limits_of(config))
    return settled


async def watch_model_files(state: AppState, interval: float = FILE_POLL_SECONDS) -> None:
    """Poll the model files for changes (a ``stat`` each; see :func:`check_model_files`)."""
    seen: dict = {}
    while True:
        await asyncio.sleep(interval)
        try:
            await check_model_files(state, seen)
        except Exception:  # never let the watcher die; the next look tries again
            log.exception("checking the model files failed")


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


def status_line(state: AppState) -> str:
    engine = state.engine
    loaded = engine.loaded_models()
    text = f"{len(state.registry)} models, {len(loaded)} loaded ({', '.join(loaded) or 'none'}), {engine.pending()} requests queued or running"
    return ("draining: " + text) if state.draining else text


async def report_to_systemd(state: AppState, watchdog: float | None) -> None:
    """STATUS= lines as things change, and WATCHDOG=1 while the loop and the device threads live.

    A device thread whose job has not moved (no token, no prompt batch, no load progress)
    for a whole watchdog period is wedged: the pings stop and systemd restarts the service.
    """
    interval = min(watchdog / 2, 2.0) if watchdog else 2.0
    complained = False
    while True:
        state.notifier.status(status_line(state))
        if watchdog:
            stalled = state.engine.devices.stalled(watchdog)
            if not stalled:
                state.notifier.watchdog()
                complained = False
            elif not complained:
                log.error("device thread stalled; withholding watchdog pings", devices=stalled)
                complained = True
        await asyncio.sleep(interval)


def listening_sockets(config: Config) -> list:
    inherited = inherited_sockets()
    if inherited:
        log.info("using sockets from systemd socket activation", count=len(inherited))
        return inherited
    return tornado.netutil.bind_sockets(config.port, config.host)


async def serve(state: AppState) -> None:
    config = state.config
    server = tornado.httpserver.HTTPServer(
        make_app(state),
        max_body_size=2**40,  # the handlers enforce max_body_bytes with a JSON 413
        idle_connection_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
    )
    sockets = listening_sockets(config)
    server.add_sockets(sockets)
    address = sockets[0].getsockname()
    log.info(
        "listening",
        host=address[0],
        port=address[1],
        models=len(state.registry),
        default_model=state.registry.default_id,
        version=__version__,
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutting down: draining", signal=signal.Signals(signum).name, timeout=state.config.shutdown_timeout)
        state.notifier.stopping()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    if state.reload_config is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(state)))

    await asyncio.gather(*(preload(state, model_id) for model_id in config.preload))
    state.notifier.ready()
    reporter = loop.create_task(report_to_systemd(state, watchdog_seconds()))
    watcher = loop.create_task(watch_model_files(state))

    await stop.wait()
    await drain(state, state.config.shutdown_timeout)
    reporter.cancel()
    watcher.cancel()
    server.stop()
    await server.close_all_connections()
    state.plugins.shutdown()
    await state.engine.close()
    log.info("stopped")
