"""Rendering Jinja chat templates (the GGUF's own, or one from the config) safely.

Templates come from model files and are untrusted: they run in an immutable sandbox,
compiled once per template text. ``raise_exception`` in a template (e.g. "roles must
alternate") becomes a 400 for the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata
from ggufd.types import ChatPrompt


class TemplateRaised(Exception):
    """The template called ``raise_exception(message)``."""


def _raise_exception(message: str):
    raise TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """Compile once; raises ``jinja2.TemplateError`` for a broken template."""
    # The environment Hugging Face chat templates are written for: loop controls
    # ({% break %}, {% continue %}) and a tojson that neither sorts keys nor HTML-escapes.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, loader=None, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


#: variables ggufd itself gives a template; ``chat_template_kwargs`` may not replace them
RESERVED_VARIABLES = frozenset(
    {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "raise_exception", "strftime_now"}
)


@lru_cache(maxsize=64)
def template_variables(source: str) -> frozenset[str]:
    """The variables a template reads from its context (what ``chat_template_kwargs`` can set)."""
    env = compile_template(source).environment
    return frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))


def adds_bos(metadata: GGUFMetadata) -> bool:
    """Whether llama.cpp's tokenizer adds BOS for this vocabulary (its default is to add it)."""
    return bool(metadata.get("tokenizer.ggml.add_bos_token", True))


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    metadata: GGUFMetadata,
    *,
    add_generation_prompt: bool = True,
    template_kwargs: Mapping[str, Any] | None = None,
    **extra: Any,
) -> ChatPrompt:
    """Render ``messages`` with a Jinja chat template into a :class:`ChatPrompt`.

    A BOS the template renders itself is stripped when the tokenizer adds one anyway,
    so the prompt never starts with two BOS tokens. ``template_kwargs`` (the request's
    ``chat_template_kwargs``, ...) become template variables, except ggufd's own; those the
    template reads are the prompt's ``honoured`` keys.
    """
    kwargs = {k: v for k, v in (template_kwargs or {}).items() if k not in RESERVED_VARIABLES}
    extra = {**kwargs, **extra}
    bos = metadata.bos_token or ""
    eos = metadata.eos_token or ""
    template = compile_template(source)
    try:
        text = template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos,
            eos_token=eos,
            **extra,
        )
    except TemplateRaised as exc:
        raise InvalidRequest(f"The model's chat template rejected the messages: {exc}", param="messages") from None
    add_bos = adds_bos(metadata)
    if add_bos and bos and text.startswith(bos):
        text = text[len(bos) :]
    return ChatPrompt(text=text, add_bos=add_bos, honoured=frozenset(kwargs) & template_variables(source))
