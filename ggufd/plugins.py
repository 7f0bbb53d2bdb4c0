"""Building the plugin manager.

Order of registration: hook specs -> entry points of group ``ggufd`` -> the built-in model
families (:data:`FAMILY_PLUGINS`) -> modules from the configured ``plugins_dir`` -> the
built-in defaults (:data:`DEFAULT_PLUGINS`) -> ``check_pending()``.

pluggy calls later registrations first (within the same tryfirst/trylast class), so for a
firstresult hook such as ``format_chat`` or ``detect_family``:

1. ``tryfirst`` implementations (the built-in ``template_override``: a ``chat_template``
   in a model's config table beats every plugin);
2. ``plugins_dir`` files, in reverse name order: a local file overrides a family;
3. the families, in reverse name order (qwen3_coder, qwen3, phi, mistral, llama3, kimi_k2,
   gpt_oss, glm, gemma, deepseek, chatml) -- the order they had when they were loaded from the
   checkout's ``plugins/``; so qwen3_coder (Qwen's XML tool calls) is asked before qwen3, and both
   before the generic chatml; kimi_k2 is asked before deepseek (Kimi K2 is a ``deepseek2`` model,
   told apart by its template);
4. installed entry-point plugins (use ``tryfirst`` to beat a built-in family);
5. ``trylast`` implementations (the built-in ``gguf_template``: the GGUF's own template,
   else a generic transcript).

A block-list (config ``disable_plugins`` or ``GGUFD_DISABLE_PLUGINS``) names plugins that
are not registered, built-in ones included. A third-party plugin (entry point or
``plugins_dir`` file) named like a family replaces that family; when it fails to load,
the built-in family is registered in its place (and the failure is still reported).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
import structlog

from ggufd import __version__, hookspecs
from ggufd.types import AnswerFilter, ChatPrompt, ModelInfo, ModelSpec, PassThrough, ToolCallStream

if TYPE_CHECKING:
    from ggufd.config import Config
    from ggufd.gguf_metadata import GGUFMetadata

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

#: the model families shipped in the package, registered as built-ins under their module
#: names. Name order, as when they were files in the checkout's ``plugins/`` folder: pluggy
#: calls the last one first, and this order is part of the documented precedence.
FAMILY_PLUGINS = (
    "ggufd.families.chatml",
    "ggufd.families.deepseek",
    "ggufd.families.gemma",
    "ggufd.families.glm",
    "ggufd.families.gpt_oss",
    "ggufd.families.kimi_k2",
    "ggufd.families.llama3",
    "ggufd.families.mistral",
    "ggufd.families.phi",
    "ggufd.families.qwen3",
    "ggufd.families.qwen3_coder",
)

BUILTIN_ORIGIN = f"ggufd {__version__} (built-in)"


class PluginError(Exception):
    """A plugin could not be loaded or implements an unknown hook."""


class Plugins:
    """The loaded plugins, with one typed method per hook: the one place that shows when and how
    ggufd consults plugins (tox's ``Plugin`` facade is the model).

    Each method applies the hook's merging rule: list answers are flattened, firstresult answers
    get their documented default. ``manager`` is the pluggy manager itself, ``hook`` its hook
    relay (for tests and introspection); ``failures`` lists the third-party plugins that did not
    load, ``origins`` where each loaded plugin came from.
    """

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.failures: list[dict[str, str]] = []  # {"name", "source", "error"}
        self.origins: dict[str, str] = {}  # plugin name -> "distribution version" or file

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def discover_models(self, config: Config) -> list[ModelSpec]:
        """Every discovery plugin's models, in call order."""
        return [spec for answer in self.manager.hook.discover_models(config=config) for spec in (answer or ())]

    def detect_family(self, metadata: GGUFMetadata, spec: ModelSpec) -> str:
        return self.manager.hook.detect_family(metadata=metadata, spec=spec) or "generic"

    def format_chat(
        self,
        model: ModelInfo,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ChatPrompt | None:
        """``None`` only when the built-in formatter is disabled and no plugin answers."""
        return self.manager.hook.format_chat(
            model=model, messages=messages, tools=list(tools), template_kwargs=dict(template_kwargs or {})
        )

    def stop_sequences(self, model: ModelInfo) -> tuple[str, ...]:
        return tuple(stop for answer in self.manager.hook.stop_sequences(model=model) for stop in (answer or ()))

    def parse_tool_calls(self, model: ModelInfo, text: str) -> list[dict] | None:
        return self.manager.hook.parse_tool_calls(model=model, text=text)

    def answer_filter(self, model: ModelInfo, prompt: ChatPrompt | None = None) -> AnswerFilter:
        """A fresh filter for one request; :class:`~ggufd.types.PassThrough` when no family has one."""
        return self.manager.hook.answer_filter(model=model, prompt=prompt or ChatPrompt("")) or PassThrough()

    def tool_call_openers(self, model: ModelInfo) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(o for answer in self.manager.hook.tool_call_openers(model=model) for o in answer or ())
        )

    def markup_tokens(self, model: ModelInfo) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for answer in self.manager.hook.markup_tokens(model=model) for t in answer or ()))

    def tool_call_stream(
        self, model: ModelInfo, tools: Sequence[Mapping[str, Any]], parallel: bool = True
    ) -> ToolCallStream | None:
        return self.manager.hook.tool_call_stream(model=model, tools=list(tools), parallel=parallel)

    def startup(self, config: Config) -> None:
        self.manager.hook.startup(config=config)

    def shutdown(self) -> None:
        self.manager.hook.shutdown()

    def describe(self) -> list[dict]:
        """Name, origin, version and implemented hooks of every registered plugin."""
        return describe_plugins(self)


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


def _register(pm: pluggy.PluginManager, plugin: object, name: str, where: str) -> None:
    """Register, turning a bad hook signature or a name clash into a :class:`PluginError`."""
    taken = pm.get_plugin(name)
    if taken is not None:
        raise PluginError(
            f"{where}: the name {name!r} is already taken by {getattr(taken, '__file__', None) or taken!r}"
        )
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


def _new_plugins(blocked: Iterable[str] = ()) -> Plugins:
    """An empty manager with the hook specs, and ``blocked`` names refused by pluggy too."""
    pm = pluggy.PluginManager("ggufd")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    return Plugins(pm)


def _is_blocked(module_name: str, blocked: Collection[str]) -> bool:
    """A built-in is blocked by its short name (``gemma``) or its module name (``ggufd.families.gemma``)."""
    return module_name.rsplit(".", 1)[-1] in blocked or module_name in blocked


def _register_builtin(plugins: Plugins, module_name: str) -> None:
    """Built-in plugins must load: any problem is a :class:`PluginError`, whatever ``plugins_required`` says."""
    short = module_name.rsplit(".", 1)[-1]
    _register(plugins.manager, importlib.import_module(module_name), short, f"built-in plugin {module_name}")
    plugins.origins[short] = BUILTIN_ORIGIN


def _register_families(plugins: Plugins, blocked: Collection[str], replacements: Mapping[str, str]) -> dict[str, str]:
    """Register every family that is neither blocked nor replaced; ``replacements`` maps plugin
    names that third-party plugins bring (or will bring) to where they come from. Returns the
    unblocked families by short name."""
    families = {name.rsplit(".", 1)[-1]: name for name in FAMILY_PLUGINS if not _is_blocked(name, blocked)}
    for short, module_name in families.items():
        taken = plugins.manager.get_plugin(short) is not None
        if taken or short in replacements:
            log.info("built-in family replaced", plugin=short, by=plugins.origins.get(short) or replacements.get(short))
            continue
        _register_builtin(plugins, module_name)
    return families


def _finish(plugins: Plugins) -> Plugins:
    try:
        plugins.manager.check_pending()
    except pluggy.PluginValidationError as exc:  # a built-in plugin (or one given to ggufd.testing)
        raise PluginError(str(exc)) from exc
    return plugins


def make_plugin_manager(config) -> Plugins:
    """Create the plugin manager for ``config``; never done at import time.

    The order of registration, and so the precedence, is in this module's docstring. A
    third-party plugin that fails (import error, unknown hook, bad signature) is logged and
    left out — listed in :attr:`Plugins.failures` — unless ``plugins_required`` is set, then it
    is a :class:`PluginError`. Built-in plugins must always load.
    """
    blocked = set(config.disable_plugins)
    plugins = _new_plugins(blocked)
    pm = plugins.manager

    def attempt(name: str, where: str, load, origin: str) -> bool:
        try:
            try:
                plugin = load()
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"{where} failed to import: {exc!r}") from exc
            _register(pm, plugin, name, where)
            _check_hooks(pm, plugin, where)
            plugins.origins[name] = origin
            return True
        except PluginError as exc:
            if getattr(config, "plugins_required", False):
                raise
            log.error("plugin not loaded", plugin=name, error=str(exc))
            plugins.failures.append({"name": name, "source": origin, "error": str(exc)})
            return False

    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in blocked:
            continue
        dist = entry_point.dist
        origin = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
        attempt(entry_point.name, f"entry point {entry_point.name} = {entry_point.value}", entry_point.load, origin)

    local: dict[str, Path] = {}
    if config.plugins_dir is not None:
        for path in sorted(config.plugins_dir.glob("*.py")):
            if not path.name.startswith("_") and path.stem not in blocked:
                local[path.stem] = path

    families = _register_families(plugins, blocked, {stem: str(path) for stem, path in local.items()})

    for stem, path in local.items():
        loaded = attempt(stem, f"plugin file {path}", lambda path=path: _load_dir_module(path), str(path))
        if not loaded and stem in families and pm.get_plugin(stem) is None:
            _register_builtin(plugins, families[stem])  # a replacement that failed keeps the built-in family

    for module_name in DEFAULT_PLUGINS:
        if not _is_blocked(module_name, blocked):
            _register_builtin(plugins, module_name)

    return _finish(plugins)


def describe_plugins(plugins: Plugins) -> list[dict]:
    """Name, origin and implemented hooks of every registered plugin (for ``ggufd plugins``)."""
    pm, origins = plugins.manager, plugins.origins
    result = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        origin = origins.get(name) or getattr(plugin, "__file__", "") or ""
        result.append(
            {"name": name, "hooks": hooks, "origin": str(origin), "version": getattr(plugin, "__version__", None)}
        )
    return result
