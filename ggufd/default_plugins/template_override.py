"""A ``chat_template`` (or ``chat_template_file``) in a model's config table beats everything else."""

from __future__ import annotations

from ggufd import hookimpl
from ggufd.chat_template import render_chat_template


@hookimpl(tryfirst=True)
def format_chat(model, messages, template_kwargs):
    source = model.options.get("chat_template")
    if not source:
        return None
    return render_chat_template(source, messages, model.metadata, template_kwargs=template_kwargs)
