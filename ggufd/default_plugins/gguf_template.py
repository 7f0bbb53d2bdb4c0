"""The last resort for chat formatting: the GGUF's own template, else a plain transcript.

``tokenizer.chat_template`` is rendered in a sandbox. A model with no template (or one
that does not compile) gets a generic "Role: text" transcript, and a warning is logged
once per model so the operator knows to configure a family or template.
"""

from __future__ import annotations

import jinja2
import structlog

from ggufd import hookimpl
from ggufd.chat_template import adds_bos, compile_template, render_chat_template
from ggufd.types import ChatPrompt

log = structlog.get_logger("ggufd.chat")

_warned: set[str] = set()

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def usable_template(metadata) -> str | None:
    source = metadata.chat_template
    if not source:
        return None
    try:
        compile_template(source)
    except jinja2.TemplateError:
        return None
    return source


@hookimpl(trylast=True)
def detect_family(metadata, spec):
    return "gguf-template" if usable_template(metadata) else "generic"


def generic_transcript(messages, add_bos: bool = True) -> ChatPrompt:
    lines = [f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m.get('content') or ''}" for m in messages]
    lines.append("Assistant:")
    return ChatPrompt(text="\n".join(lines), stop=("\nUser:", "\nSystem:"), add_bos=add_bos)


@hookimpl(trylast=True)
def format_chat(model, messages, template_kwargs):
    source = usable_template(model.metadata)
    if source is not None:
        return render_chat_template(source, messages, model.metadata, template_kwargs=template_kwargs)
    if model.id not in _warned:
        _warned.add(model.id)
        log.warning(
            "no chat template for model; using a generic transcript — set family or chat_template in its config",
            model=model.id,
            family=model.family,
        )
    return generic_transcript(messages, add_bos=adds_bos(model.metadata))
