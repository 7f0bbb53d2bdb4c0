"""Helpers for testing plugins, for plugin authors and for ggufd's own tests.

Build the objects the hooks receive without a GGUF file on disk, a plugin manager that holds
your plugin beside ggufd's built-in ones, and render a chat the way the daemon does::

    import ggufd.testing
    import my_plugin

    plugins = ggufd.testing.plugin_manager(my_plugin)
    model = ggufd.testing.model_info(family="mycool", template=None, architecture="mycoolarch")
    prompt = ggufd.testing.render(plugins, model, [{"role": "user", "content": "hi"}])
    assert prompt.text == "<|user|>\\nhi\\n<|assistant|>\\n"

Nothing here loads a model or starts a server. :class:`FakeEngine` (from :mod:`ggufd.engine.fake`) is an
engine with scripted answers, to run the HTTP API in-process without llama.cpp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ggufd.chat_template import render_chat_template
from ggufd.engine.fake import FakeEngine  # re-exported: the engine to put under make_app in a test
from ggufd.gguf_metadata import GGUFMetadata
from ggufd.plugins import (
    DEFAULT_PLUGINS,
    Plugins,
    _finish,
    _new_plugins,
    _register,
    _register_builtin,
    _register_families,
)
from ggufd.protocol.openai_chat import normalise_messages
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec

__all__ = ["FakeEngine", "gguf_metadata", "model_info", "model_spec", "plugin_manager", "render", "render_template"]


def gguf_metadata(
    template: str | None = None,
    architecture: str | None = "llama",
    values: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    add_bos: bool | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> GGUFMetadata:
    """A :class:`~ggufd.GGUFMetadata` built in memory, as ``read_metadata`` would return it.

    :param template: ``tokenizer.chat_template``; ``None`` leaves the key out.
    :param architecture: ``general.architecture``; ``None`` leaves the key out.
    :param values: further scalar keys (``{"tokenizer.ggml.pre": "tekken"}``), applied last.
    :param name: ``general.name``; ``None`` leaves the key out.
    :param add_bos: ``tokenizer.ggml.add_bos_token``; ``None`` leaves the key out.
    :param bos_token: the text of the BOS token (from the vocabulary in a real file).
    :param eos_token: the text of the EOS token.

    >>> gguf_metadata("{{ messages }}", "qwen2", name="Qwen2.5 7B").architecture
    'qwen2'
    """
    keys: dict[str, Any] = {}
    for key, value in (
        ("general.architecture", architecture),
        ("general.name", name),
        ("tokenizer.chat_template", template),
        ("tokenizer.ggml.add_bos_token", add_bos),
    ):
        if value is not None:
            keys[key] = value
    keys.update(values or {})
    return GGUFMetadata(
        version=3, tensor_count=0, values=keys, array_lengths={}, bos_token=bos_token, eos_token=eos_token
    )


def model_spec(
    model_id: str = "model",
    *,
    path: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
) -> ModelSpec:
    """A :class:`~ggufd.ModelSpec` as a discovery plugin would return it.

    :param model_id: the id clients use.
    :param path: the GGUF file; default ``/models/<model_id>.gguf`` (it need not exist).
    :param options: the model's config table (``chat_template``, ``sampling``, ...).
    :param aliases: further ids.

    >>> model_spec("gemma-2b-it.Q4_0").path.name
    'gemma-2b-it.Q4_0.gguf'
    """
    return ModelSpec(
        id=model_id,
        path=Path(path) if path is not None else Path("/models") / f"{model_id}.gguf",
        aliases=tuple(aliases),
        options=dict(options or {}),
    )


def model_info(
    family: str = "generic",
    template: str | None = None,
    architecture: str | None = "llama",
    metadata: GGUFMetadata | Mapping[str, Any] | None = None,
    model_id: str = "model",
    options: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    add_bos: bool | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    path: str | Path | None = None,
) -> ModelInfo:
    """A :class:`~ggufd.ModelInfo` (what ``format_chat`` and the other per-model hooks receive),
    with its GGUF metadata built in memory.

    :param family: the family name, as ``detect_family`` (or the model's config) set it.
    :param template: the GGUF's ``tokenizer.chat_template``.
    :param architecture: the GGUF's ``general.architecture``.
    :param metadata: either a ready :class:`~ggufd.GGUFMetadata` (used as it is; then
        ``template``, ``name``, ``add_bos`` and the tokens must not be given and
        ``architecture`` is ignored), or further GGUF keys for :func:`gguf_metadata`.
    :param model_id: the model's id; its path is ``/models/<model_id>.gguf`` unless ``path`` is given.
    :param options: the model's config table, e.g. ``{"chat_template": "..."}``.

    >>> model_info(family="gemma", architecture="gemma3").metadata.architecture
    'gemma3'
    """
    if isinstance(metadata, GGUFMetadata):
        given = {"template": template, "name": name, "add_bos": add_bos, "bos_token": bos_token, "eos_token": eos_token}
        clashes = sorted(key for key, value in given.items() if value is not None)
        if clashes:
            raise TypeError(f"model_info: metadata is a GGUFMetadata, so {', '.join(clashes)} cannot be given as well")
        meta = metadata
    else:
        meta = gguf_metadata(
            template, architecture, metadata, name=name, add_bos=add_bos, bos_token=bos_token, eos_token=eos_token
        )
    return ModelInfo(spec=model_spec(model_id, path=path, options=options), metadata=meta, family=family)


def _plugin_name(plugin: object) -> str | None:
    if isinstance(plugin, ModuleType):
        return plugin.__name__.rsplit(".", 1)[-1]
    return None  # pluggy names it


def plugin_manager(*plugins: object, builtins: bool = True) -> Plugins:
    """A :class:`~ggufd.plugins.Plugins` manager holding ``plugins`` (modules, classes or
    objects with ``@ggufd.hookimpl`` functions), registered like files in ``plugins_dir``.

    With ``builtins`` (the default) ggufd's built-in plugins are registered around them as in
    the daemon: the model families first (so your plugins are called before them, and a module
    named like a family, ``gemma``, replaces it), the defaults (config templates, the GGUF's own
    template, discovery) last. Installed entry-point plugins are never loaded, so the result
    does not depend on the environment. A bad hook name or signature is a
    :class:`~ggufd.plugins.PluginError`.

    >>> plugin_manager(builtins=False).describe()
    []
    """
    result = _new_plugins()
    names = [_plugin_name(plugin) for plugin in plugins]
    if builtins:
        _register_families(result, (), {name: "a test plugin" for name in names if name})
    for plugin, name in zip(plugins, names, strict=True):
        if name is None:
            name = result.manager.get_canonical_name(plugin)
        _register(result.manager, plugin, name, f"test plugin {name}")
        result.origins[name] = str(getattr(plugin, "__file__", None) or "test plugin")
    if builtins:
        for module_name in DEFAULT_PLUGINS:
            _register_builtin(result, module_name)
    return _finish(result)


def render(
    plugins: Plugins,
    model: ModelInfo,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    template_kwargs: Mapping[str, Any] | None = None,
) -> ChatPrompt | None:
    """The prompt the daemon would render for a chat: ``messages`` are normalised as requests
    are (content parts joined, ``developer`` becomes ``system``, ``content: None`` becomes
    ``""``), then ``format_chat`` is called with ``tools`` and ``template_kwargs`` (the request's
    ``chat_template_kwargs``, ``reasoning_effort`` included). ``None`` only when no plugin answers, which needs
    ``plugin_manager(..., builtins=False)``. A conversation the format refuses raises
    :class:`~ggufd.InvalidRequest`, as it would be a 400 for the client.

    >>> render(plugin_manager(), model_info(family="gemma"), [{"role": "user", "content": "Hi"}]).text
    '<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n'
    """
    return plugins.format_chat(model, normalise_messages(list(messages)), tools, template_kwargs)


def render_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    metadata: GGUFMetadata | None = None,
    **variables: Any,
) -> ChatPrompt:
    """Render a Jinja chat template (a model's published ``chat_template``) the way ggufd
    renders a GGUF's own template: sandboxed, ``add_generation_prompt=True``, a BOS the
    template writes itself stripped when the tokenizer adds one. Golden tests compare a
    family plugin's prompt with this, byte for byte.

    :param metadata: gives ``bos_token``/``eos_token`` and whether BOS is added; default
        :func:`gguf_metadata` with no tokens.
    :param variables: further template variables, e.g. ``strftime_now=lambda fmt: "2025-08-05"``.

    >>> render_template("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}", [{"role": "user", "content": "Hi"}]).text
    '[user]Hi'
    """
    return render_chat_template(template, messages, metadata or gguf_metadata(), **variables)
