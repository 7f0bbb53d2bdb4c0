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
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pluggy
import structlog

from . import hookspecs

log = structlog.get_logger("ggufd.plugins")

ENTRY_POINT_GROUP = "ggufd"

#: built-in behaviour, registered like any third-party plugin.
DEFAULT_PLUGINS = (
    "ggufd.default_plugins.directory_discovery",
    "ggufd.default_plugins.config_models",
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


def make_plugin_manager(config) -> pluggy.PluginManager:
    """Create the plugin manager for ``config``; never done at import time."""
    pm = pluggy.PluginManager("ggufd")
    pm.add_hookspecs(hookspecs)
    blocked = set(config.disable_plugins)
    for name in blocked:
        pm.set_blocked(name)

    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # an installed plugin package that fails to import or validate
        raise PluginError(f"entry-point plugin (group {ENTRY_POINT_GROUP!r}) failed to load: {exc!r}") from exc

    if config.plugins_dir is not None:
        for path in sorted(config.plugins_dir.glob("*.py")):
            if path.name.startswith("_") or path.stem in blocked:
                continue
            _register(pm, _load_dir_module(path), path.stem, f"plugin file {path}")

    for module_name in DEFAULT_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if short in blocked or module_name in blocked:
            continue
        _register(pm, importlib.import_module(module_name), short, f"built-in plugin {module_name}")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """Name, origin and implemented hooks of every registered plugin (for ``ggufd plugins``)."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    result = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        dist = dists.get(id(plugin))
        origin = f"{dist.project_name} {dist.version}" if dist else getattr(plugin, "__file__", "") or ""
        result.append({"name": name, "hooks": hooks, "origin": str(origin)})
    return result
