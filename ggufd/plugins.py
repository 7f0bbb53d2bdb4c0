"""Building the plugin manager.

Order of registration (later registrations are called first within the same
tryfirst/trylast class): hook specs -> entry points of group ``ggufd`` -> modules
from the configured ``plugins_dir`` -> built-in defaults (their hooks are ``trylast``
or ``tryfirst`` where the precedence demands) -> ``check_pending()``.
A block-list (config ``disable_plugins`` or ``GGUFD_DISABLE_PLUGINS``) names plugins
that are not registered.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pluggy
import structlog

from . import __version__, hookspecs

log = structlog.get_logger("ggufd.plugins")

ENTRY_POINT_GROUP = "ggufd"

#: built-in behaviour, registered like any third-party plugin.
DEFAULT_PLUGINS = (
    "ggufd.default_plugins.directory_discovery",
    "ggufd.default_plugins.config_models",
    "ggufd.default_plugins.ollama_discovery",
    "ggufd.default_plugins.hf_cache_discovery",
    "ggufd.default_plugins.template_override",
    "ggufd.default_plugins.gguf_template",
)


class PluginError(Exception):
    """A plugin could not be loaded or implements an unknown hook."""


def _load_dir_module(path: Path) -> ModuleType:
    name = f"ggufd_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - defensive
        raise PluginError(f"cannot import plugin file {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin file {path} failed to import: {exc!r}") from exc
    return module


def _register(pm: pluggy.PluginManager, plugin: ModuleType, name: str, where: str) -> None:
    """Register, turning a bad hook signature or a name clash into a :class:`PluginError`."""
    taken = pm.get_plugin(name)
    if taken is not None:
        raise PluginError(f"{where}: the name {name!r} is already taken by {getattr(taken, '__file__', None) or taken!r}")
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"{where}: {exc}") from exc


def _check_hooks(pm: pluggy.PluginManager, plugin, where: str) -> None:
    """A hook implementation with no spec (a misspelt hook name) is refused for this plugin alone."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(plugin)
        raise PluginError(f"{where}: {exc}") from exc


def make_plugin_manager(config) -> pluggy.PluginManager:
    """Create the plugin manager for ``config``; never done at import time.

    A third-party plugin that fails (import error, unknown hook, bad signature) is logged and
    left out — listed in ``pm.ggufd_failures`` — unless ``plugins_required`` is set, then it
    is a :class:`PluginError`. Built-in plugins must always load.
    """
    pm = pluggy.PluginManager("ggufd")
    pm.add_hookspecs(hookspecs)
    pm.ggufd_failures = []  # [{"name", "source", "error"}]
    pm.ggufd_origins = {}  # plugin name -> "distribution version" or file
    blocked = set(config.disable_plugins)
    for name in blocked:
        pm.set_blocked(name)

    def attempt(name: str, where: str, load, origin: str) -> None:
        try:
            try:
                plugin = load()
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"{where} failed to import: {exc!r}") from exc
            _register(pm, plugin, name, where)
            _check_hooks(pm, plugin, where)
            pm.ggufd_origins[name] = origin
        except PluginError as exc:
            if getattr(config, "plugins_required", False):
                raise
            log.error("plugin not loaded", plugin=name, error=str(exc))
            pm.ggufd_failures.append({"name": name, "source": origin, "error": str(exc)})

    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in blocked:
            continue
        dist = entry_point.dist
        origin = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
        attempt(entry_point.name, f"entry point {entry_point.name} = {entry_point.value}", entry_point.load, origin)

    if config.plugins_dir is not None:
        for path in sorted(config.plugins_dir.glob("*.py")):
            if path.name.startswith("_") or path.stem in blocked:
                continue
            attempt(path.stem, f"plugin file {path}", lambda path=path: _load_dir_module(path), str(path))

    for module_name in DEFAULT_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if short in blocked or module_name in blocked:
            continue
        _register(pm, importlib.import_module(module_name), short, f"built-in plugin {module_name}")
        pm.ggufd_origins[short] = f"ggufd {__version__} (built-in)"

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # only a built-in plugin can get here
        raise PluginError(str(exc)) from exc
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """Name, origin and implemented hooks of every registered plugin (for ``ggufd plugins``)."""
    origins = getattr(pm, "ggufd_origins", {})
    result = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        origin = origins.get(name) or getattr(plugin, "__file__", "") or ""
        result.append({"name": name, "hooks": hooks, "origin": str(origin), "version": getattr(plugin, "__version__", None)})
    return result
