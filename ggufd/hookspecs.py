"""Every hook ggufd calls, with its contract.

Plugins implement these with ``@ggufd.hookimpl``. Built-in behaviour lives in
``ggufd/default_plugins/`` and is registered exactly like third-party plugins,
marked ``trylast`` so anything else wins. Hooks are called with keyword
arguments; an implementation may accept any subset of the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from ggufd.gguf_metadata import GGUFMetadata
from ggufd.types import AnswerFilter, ChatPrompt, ModelInfo, ModelSpec, ToolCallStream

if TYPE_CHECKING:
    from ggufd.config import Config

hookspec = pluggy.HookspecMarker("ggufd")


@hookspec
def discover_models(config: Config) -> list[ModelSpec] | None:
    """Contribute the models this plugin finds.

    Called at start (and on reload) by the registry; every plugin's answer is used.

    :param config: the validated :class:`ggufd.config.Config`.
    :returns: a list of :class:`ModelSpec` (or ``None``). When two plugins return the
        same id, the one from the explicit ``[models."<id>"]`` config table wins, then
        the first answer.
    :raises: nothing; unreadable files are logged and skipped.

    Defaults: ``directory_discovery`` (``*.gguf`` in ``models_dir``, split files grouped,
    id = file name without ``.gguf``; ``recursive``, ``models_include``/``models_exclude``),
    ``config_models`` (explicit ``[models.*]`` tables), ``ollama_discovery``
    (``ollama_models_dir``: ids like ``llama3.2:3b``) and ``hf_cache_discovery`` (``hf_cache_dir``).
    """


@hookspec(firstresult=True)
def detect_family(metadata: GGUFMetadata, spec: ModelSpec) -> str | None:
    """Name the model family (chat format) of a model, or ``None`` if this plugin does not know it.

    firstresult: the first non-``None`` answer wins. Called once per model at discovery,
    unless the model's config sets ``family``.

    :param metadata: scalar GGUF metadata (``general.architecture``, ``tokenizer.chat_template``, ...).
    :param spec: the model spec (id, path, options) — file names are a useful hint.
    :returns: a family name such as ``"gemma"``.

    Default: ``gguf_template`` answers ``"gguf-template"`` when the GGUF carries a chat
    template, else ``"generic"``.
    """


@hookspec(firstresult=True)
def format_chat(
    model: ModelInfo,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    template_kwargs: Mapping[str, Any],
) -> ChatPrompt | None:
    """Render a chat (OpenAI ``messages``) into prompt text for ``model``.

    firstresult: the first non-``None`` answer wins. Family plugins answer only for
    ``model.family`` values they own.

    :param model: the model, with ``family`` and GGUF ``metadata``.
    :param messages: normalised messages: ``role`` and ``content`` (always a string;
        text parts already joined), plus ``name``/``tool_calls``/``tool_call_id`` if sent.
    :param tools: the tools the model may call (OpenAI ``{"type": "function", "function":
        {...}}`` objects), empty when none may be. A family that renders them in its own syntax
        returns ``tools_rendered=True``; otherwise ggufd adds a system message describing them
        (asking for a JSON call) and calls this hook again with no tools.
    :param template_kwargs: variables for the template, as llama.cpp and vLLM take them: the
        request's ``chat_template_kwargs`` over the model's and the server's defaults, plus
        ``reasoning_effort`` when one was asked for. Families read what they understand (e.g.
        ``enable_thinking``) and name it in ``ChatPrompt.honoured``; the keys no one honoured
        are reported to the client as ignored.
    :returns: a :class:`ChatPrompt` ending with the generation prompt for the assistant; its
        ``reasoning`` names the syntax the model reasons in, when it does.
    :raises ggufd.errors.InvalidRequest: for messages the format cannot express.

    Precedence: ``template_override`` (tryfirst: a ``chat_template`` in the model's config)
    > family plugins > ``gguf_template`` (trylast: the GGUF's own template in a sandboxed
    Jinja environment, else a logged generic fallback). Implementations written before
    ``tools`` and ``template_kwargs`` existed keep working (pluggy passes only the arguments
    an implementation names).
    """


@hookspec
def stop_sequences(model: ModelInfo) -> list[str] | None:
    """Contribute stop strings that always apply to ``model`` (e.g. end-of-turn markers).

    Every plugin's answer is used; they are added to the request's own ``stop`` list.
    Text matching a stop string is never returned to the client.

    :param model: the model, with ``family`` and GGUF ``metadata``.
    :returns: a list of strings, or ``None``.

    Default: none (the end-of-generation tokens of the vocabulary always stop generation).
    """


@hookspec(firstresult=True)
def parse_tool_calls(model: ModelInfo, text: str) -> list[dict] | None:
    """Find the tool calls in a completed assistant answer, in the family's own syntax.

    firstresult: the first non-``None`` answer wins. Family plugins answer only for
    ``model.family`` values they own, and only when ``text`` contains their tool-call syntax.

    :param model: the model that produced ``text``.
    :param text: the full generated text of one answer (stop strings already removed).
    :returns: ``None`` when ``text`` holds no tool call in this family's syntax; else a list
        of OpenAI-shaped calls ``{"id": str, "type": "function", "function": {"name": str,
        "arguments": str (JSON)}}``, in order. Text around the calls is not part of the result.

    Default: none (the API layer then returns ``text`` as ordinary content).
    """


@hookspec
def tool_call_openers(model: ModelInfo) -> list[str] | None:
    """The strings with which the family's tool-call syntax starts (``<tool_call>``,
    ``[TOOL_CALLS]``, ``<|python_tag|>``, ...).

    Every plugin's answer is used. When a request offers tools, its content streams as it is
    generated up to the first opener; from there on it is held and, at the end, handed to
    ``parse_tool_calls`` (a call is delivered, or the held text as content). An answer that
    starts with a JSON object or array (ggufd's generic call syntax) is held from its start.

    :param model: the model, with ``family`` and GGUF ``metadata``.
    :returns: a list of strings, or ``None``.

    Default: none (only the generic JSON call is recognised).
    """


@hookspec
def markup_tokens(model: ModelInfo) -> list[str] | None:
    """The strings of the family's answer syntax that its vocabulary may hold as special (control)
    tokens: tool-call and reasoning markers such as ``[TOOL_CALLS]``, ``[ARGS]``, ``[THINK]``,
    ``<|tool_call_begin|>``.

    Every plugin's answer is used. llama.cpp renders a control token as nothing; a generated token
    that is one of these strings is rendered as its text instead, so that the answer filter, the
    tool-call parsers and the reasoning budget see it (llama-server's "preserved tokens"). The
    reasoning markers of ``ChatPrompt.reasoning`` and the ``tool_call_openers`` are included
    without being named here. Strings that are no single token of the vocabulary are ignored.

    :param model: the model, with ``family`` and GGUF ``metadata``.
    :returns: a list of strings, or ``None``.

    Default: none.
    """


@hookspec(firstresult=True)
def tool_call_stream(model: ModelInfo, tools: Sequence[Mapping[str, Any]], parallel: bool) -> ToolCallStream | None:
    """Return a fresh :class:`~ggufd.types.ToolCallStream` that finds the calls in one answer's
    content while it is generated, streaming their arguments as they are written; ``None`` to
    use the openers and ``parse_tool_calls`` (calls delivered whole at the end).

    firstresult. Called once per request that offers tools. ``ggufd.tool_calls.MarkedCalls``
    builds one for syntaxes where each call sits between a begin and an end marker.

    :param model: the model the request runs on.
    :param tools: the offered tools (a call to any other name is not a call).
    :param parallel: ``False`` when the request set ``parallel_tool_calls: false``; ggufd keeps
        only the first call either way.
    :returns: a stream object, or ``None``.

    Default: none.
    """


@hookspec(firstresult=True)
def answer_filter(model: ModelInfo, prompt: ChatPrompt) -> AnswerFilter | None:
    """Return a fresh filter for one request's generated text, or ``None`` (the text is the answer as it is).

    firstresult. Called once per request. For families whose output mixes reasoning, channels or
    other markup with the answer (``<think>`` blocks, gpt-oss's harmony format), the filter separates them:

    - ``feed(text: str) -> tuple[str, str]``: the (content, reasoning) for the next piece of
      generated text; it may hold back a partial marker until the next piece;
    - ``finish() -> tuple[str, str]``: what was held back, at the end of the generation.

    Concatenating the pieces must give the same result however the text was split, so streamed
    and non-streamed answers stay identical. Content is returned as ``content``; reasoning as
    ``reasoning_content`` (the field DeepSeek's and llama.cpp's servers use).
    ``ggufd.ReasoningFilter(prompt.reasoning)`` does this for ``<think>``-style syntaxes.

    :param model: the model the request runs on.
    :param prompt: the request's rendered prompt (``prompt.reasoning.opened``: the answer
        starts inside the reasoning).
    :returns: a filter object, or ``None``.

    Default: none.
    """


@hookspec
def startup(config: Config) -> None:
    """Called once after the plugins are loaded and before the server listens.

    :param config: the validated :class:`ggufd.config.Config`.
    """


@hookspec
def shutdown() -> None:
    """Called once when the daemon stops, after the last request and before models are freed."""
