"""The model registry: model id (or alias) -> :class:`ModelInfo`.

Built from every ``discover_models`` hook answer; reads each file's GGUF metadata
(scalar keys only, untrusted input), asks the ``detect_family`` hook, and reports and
skips anything unreadable. This is the only place where a client-supplied name meets
a file: lookups go through a dict of discovered models, never through the filesystem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import structlog

from ggufd.errors import ConfigError, ModelNotFound
from ggufd.gguf_metadata import GGUFFormatError, read_metadata
from ggufd.types import ModelInfo, ModelSpec

log = structlog.get_logger("ggufd.registry")


@dataclass(frozen=True)
class SkippedModel:
    id: str
    path: str
    reason: str


@dataclass(frozen=True)
class ModelRegistry:
    models: Mapping[str, ModelInfo]
    aliases: Mapping[str, str]
    default_id: str | None
    skipped: tuple[SkippedModel, ...] = field(default=())

    def get(self, name: str | None) -> ModelInfo:
        """The model for a request's ``model`` field (``None`` or "" -> the default model)."""
        if not name:
            if self.default_id is None:
                raise ModelNotFound("", "No model is served: the models folder holds no .gguf files.")
            return self.models[self.default_id]
        if not isinstance(name, str) or (model_id := self.aliases.get(name, name)) not in self.models:
            raise ModelNotFound(str(name))
        return self.models[model_id]

    def __iter__(self):
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)


def merge_specs(found: Iterable[ModelSpec], config_tables: Mapping[str, Mapping[str, Any]]) -> dict[str, ModelSpec]:
    """One spec per id. Explicit config entries win; a config table without ``path`` adds its
    settings (aliases, n_ctx, family ...) to the discovered model of the same id."""
    specs: dict[str, ModelSpec] = {}
    for spec in found:
        current = specs.get(spec.id)
        if current is None or (spec.source == "config" and current.source != "config"):
            specs[spec.id] = spec
    for model_id, table in config_tables.items():
        configured = specs.get(model_id)
        if configured is None:
            log.warning("config table names a model that was not found", model=model_id)
            continue
        if configured.source != "config":
            specs[model_id] = replace(configured, options=table, aliases=tuple(table.get("aliases", ())))
    return specs


def build_registry(config, plugins) -> ModelRegistry:
    """Discover, read and classify every model. A bad model file is reported and skipped;
    a ``default_model`` that is not served raises :class:`ConfigError`."""
    found = plugins.discover_models(config)
    specs = merge_specs(found, config.models)
    models: dict[str, ModelInfo] = {}
    skipped: list[SkippedModel] = []
    for model_id in sorted(specs):
        spec = specs[model_id]
        try:
            metadata = read_metadata(spec.path)
        except (GGUFFormatError, OSError) as exc:
            reason = str(exc) if isinstance(exc, GGUFFormatError) else (exc.strerror or type(exc).__name__)
            log.warning(
                "skipping model file that is not a readable GGUF", model=model_id, file=spec.path.name, reason=reason
            )
            skipped.append(SkippedModel(model_id, str(spec.path), reason))
            continue
        family = spec.options.get("family") or plugins.detect_family(metadata, spec)
        models[model_id] = ModelInfo(spec=spec, metadata=metadata, family=family)

    aliases: dict[str, str] = {}
    for info in models.values():
        for alias in info.spec.aliases:
            if alias in models or alias in aliases:
                log.warning("ignoring alias that is already taken", alias=alias, model=info.id)
                continue
            aliases[alias] = info.id

    default_id = config.default_model
    if default_id is not None:
        default_id = aliases.get(default_id, default_id)
        if default_id not in models:
            raise ConfigError(
                f"{config.source or 'config'}: default_model: '{config.default_model}' is not among the served models "
                f"({', '.join(sorted(models)) or 'none found'})"
            )
    if default_id is None and models:
        default_id = min(models)
    return ModelRegistry(MappingProxyType(models), MappingProxyType(aliases), default_id, tuple(skipped))
