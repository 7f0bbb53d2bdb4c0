"""Command line: argument parsing and wiring only.

ggufd [--config FILE] [--host H] [--port P] [--models-dir DIR]   serve (the default)
ggufd --check-config [--config FILE]                              validate, list models, exit
ggufd plugins [--config FILE]                                     list plugins and their hooks
ggufd models [--config FILE]                                      list the models that would be served
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ggufd import __version__
from ggufd.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ggufd", description="Serve local GGUF models over an OpenAI-compatible API.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "plugins", "models"])
    parser.add_argument("--config", "-c", help="TOML config file (default: $GGUFD_CONFIG, else built-in defaults)")
    parser.add_argument("--host", help="address to bind (overrides the config file and GGUFD_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (overrides the config file and GGUFD_PORT)")
    parser.add_argument("--models-dir", help="folder with .gguf files (overrides the config file and GGUF_MODELS_DIR)")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config, list the models, exit non-zero on any problem"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output for plugins/models/--check-config")
    parser.add_argument("--version", action="version", version=f"ggufd {__version__}")
    return parser.parse_args(argv)


def _overrides(args) -> dict:
    return {"host": args.host, "port": args.port, "models_dir": args.models_dir}


def _setup(args):
    from ggufd.config import load_config
    from ggufd.logs import configure_logging
    from ggufd.plugins import make_plugin_manager
    from ggufd.registry import build_registry

    config = load_config(args.config, overrides=_overrides(args))
    quiet = args.check_config or args.command != "serve"
    configure_logging("warning" if quiet else config.log_level, config.log_format, stream=sys.stderr if quiet else None)
    pm = make_plugin_manager(config)
    registry = build_registry(config, pm)
    return config, pm, registry


def _print_models(registry, as_json: bool, gpu=None) -> None:
    rows = [{"id": m.id, "family": m.family, "path": str(m.path), "aliases": list(m.spec.aliases)} for m in registry]
    skipped = [{"id": s.id, "path": s.path, "reason": s.reason} for s in registry.skipped]
    if as_json:
        extra = {"gpu": gpu.to_dict()} if gpu is not None else {}
        print(json.dumps({"default_model": registry.default_id, "models": rows, "skipped": skipped, **extra}, indent=2))
        return
    if gpu is not None:
        print(gpu.summary(), file=sys.stderr)  # a status line, like "config OK": stdout lists the models
    for row in rows:
        marker = "*" if row["id"] == registry.default_id else " "
        aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        print(f"{marker} {row['id']}  family={row['family']}  {row['path']}{aliases}")
    if not rows:
        print("no models found")
    for row in skipped:
        print(f"! skipped {row['path']}: {row['reason']}")


def _gpu_report(config):
    from ggufd.engine.gpu import gpu_report
    from ggufd.engine.llama_log import configure_llama, gpu_startup_problems

    configure_llama(config.llama_log_level)
    return gpu_report(gpu_startup_problems())


def main(argv: list[str] | None = None) -> int:
    from ggufd.plugins import PluginError, describe_plugins

    args = parse_args(argv)
    try:
        config, pm, registry = _setup(args)
    except (ConfigError, PluginError) as exc:
        print(f"ggufd: configuration error: {exc}", file=sys.stderr)
        return 2

    if args.check_config or args.command == "models":
        _print_models(registry, args.json, _gpu_report(config) if args.check_config else None)
        if args.check_config:
            for failure in pm.failures:
                print(f"! plugin {failure['name']} not loaded: {failure['error']}")
            if registry.skipped or pm.failures:
                print(
                    f"ggufd: {len(registry.skipped)} model file(s) cannot be served, {len(pm.failures)} plugin(s) "
                    "failed to load (see above)",
                    file=sys.stderr,
                )
                return 1
            print(f"config OK: {config.source or 'built-in defaults'}", file=sys.stderr)
        return 0
    if args.command == "plugins":
        plugins = describe_plugins(pm)
        if args.json:
            print(json.dumps({"plugins": plugins, "failed": pm.failures}, indent=2))
        else:
            for plugin in plugins:
                print(f"{plugin['name']}  ({plugin['origin']})\n    hooks: {', '.join(plugin['hooks']) or '-'}")
            for failure in pm.failures:
                print(f"! {failure['name']}  ({failure['source']}) NOT LOADED: {failure['error']}")
        return 1 if pm.failures else 0
    return _serve(args, config, pm, registry)


def _serve(args, config, pm, registry) -> int:
    import os

    import structlog

    from ggufd.api.app import AppState, make_engine, serve
    from ggufd.api.metrics import Metrics
    from ggufd.api.security import is_loopback
    from ggufd.config import apply_process_environment, load_config
    from ggufd.systemd import Notifier

    def inherited_sockets_expected() -> bool:  # socket activation: systemd decides where we listen
        return os.environ.get("LISTEN_PID") == str(os.getpid())

    missing = [
        model_id for model_id in config.preload if model_id not in registry.models and model_id not in registry.aliases
    ]
    if missing:
        print(
            f"ggufd: configuration error: {config.source or 'config'}: preload: not served: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    if not config.api_keys and not is_loopback(config.host) and not inherited_sockets_expected():
        message = (
            f"listening on {config.host} (beyond this machine) without any API key: anyone who can reach "
            "the port can use the models; set api_keys, api_key_file or GGUFD_API_KEYS"
        )
        if config.unauthenticated_remote == "refuse":
            print(f"ggufd: refusing to start: {message}", file=sys.stderr)
            return 2
        structlog.get_logger("ggufd").warning("SECURITY: " + message)
    apply_process_environment(config)
    metrics = Metrics()
    engine = make_engine(config, metrics)
    metrics.watch(engine)
    state = AppState(
        config=config,
        registry=registry,
        plugins=pm,
        engine=engine,
        reload_config=lambda: load_config(args.config, overrides=_overrides(args)),
        metrics=metrics,
        notifier=Notifier(),
    )
    gpu = state.engine.gpu_report()  # llama.cpp starts now, not during the first /health
    log_gpu = (
        structlog.get_logger("ggufd").info if gpu.offload or not gpu.backends else structlog.get_logger("ggufd").warning
    )
    log_gpu(gpu.summary(), gpu_offload=gpu.offload, gpus=[d.description for d in gpu.devices])
    pm.startup(config)
    try:
        asyncio.run(serve(state))
    except OSError as exc:  # e.g. the port is taken
        print(f"ggufd: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
