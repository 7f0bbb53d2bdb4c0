"""Explicit models: every ``[models."<id>"]`` table with a ``path`` is a model.

Tables without ``path`` only carry settings for a model another plugin discovers;
the registry merges them by id.
"""

from __future__ import annotations

from ggufd import hookimpl
from ggufd.types import ModelSpec


@hookimpl(trylast=True)
def discover_models(config):
    return [
        ModelSpec(id=model_id, path=table["path"], aliases=table.get("aliases", ()), options=table, source="config")
        for model_id, table in config.models.items()
        if "path" in table
    ]
