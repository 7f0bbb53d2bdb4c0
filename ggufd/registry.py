"""The model registry: model id (or alias) -> :class:`ModelInfo`.

Built from every ``discover_models`` hook answer; reads each file's GGUF metadata
(scalar keys only, untrusted input), asks the ``detect_family`` hook, and reports and
skips anything unreadable. It remembers each file's stamp as it read it
(:mod:`ggufd.file_stamps`); :func:`refresh` re-reads the models whose file changed since. This is the only place where a client-supplied name meets
a file: lookups go through a dict of discovered models, never through the filesystem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import structlog

from ggufd.errors import ConfigError, ModelNotFound
from ggufd.file_stamps import FileStamp, file_stamp
from ggufd.gguf_metadata import GGUFFormatError, read_metadata
from ggufd.types import ModelInfo, ModelSpec

log = structlog.get_logger("ggufd.registry")


@dataclass(frozen=True)
class SkippedModel:
    id: str
    path: str
    reason: str
    spec: ModelSpec | None = field(default=None, compare=False, repr=False)  # to read it again


@dataclass(frozen=True)
class ModelRegistry:
    models: Mapping[str, ModelInfo]
    aliases: Mapping[str, str]
    default_id: str | None
    skipped: tuple[SkippedModel, ...] = field(default=())
    #: model id (served or skipped) -> its file's stamp, taken just before its metadata was read
    stamps: Mapping[str, FileStamp | None] = field(default_factory=dict)
    #: the configured default model (an id or alias), kept for :func:`refresh`
    default_model: str | None = None

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

    def specs(self) -> dict[str, ModelSpec]:
        """Every spec, served or skipped (a skipped one may be readable again later)."""
        found = {s.id: s.spec for s in self.skipped if s.spec is not None}
        return {**found, **{info.id: info.spec for info in self.models.values()}}

    def changed(self) -> dict[str, FileStamp | None]:
        """The models (served or skipped) whose file's stamp differs from the one read: id -> stamp now."""
        now = {model_id: file_stamp(spec.path) for model_id, spec in self.specs().items()}
        return {model_id: stamp for model_id, stamp in now.items() if stamp != self.stamps.get(model_id)}


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
    skipped: dict[str, SkippedModel] = {}
    stamps: dict[str, FileStamp | None] = {}
    for model_id in sorted(specs):
        _read(specs[model_id], plugins, models, skipped, stamps)
    registry = _assemble(models, skipped, stamps, config.default_model)
    default_id = config.default_model
    if default_id is not None and registry.aliases.get(default_id, default_id) not in models:
        raise ConfigError(
            f"{config.source or 'config'}: default_model: '{config.default_model}' is not among the served models "
            f"({', '.join(sorted(models)) or 'none found'})"
        )
    return registry


def refresh(registry: ModelRegistry, model_ids: Iterable[str], plugins) -> ModelRegistry:
    """The registry with the named models read again from their files (after a change): a file
    that became unreadable moves to ``skipped``, a skipped one that is readable again is served.
    A configured default model that is no longer served falls back to the first model."""
    specs = registry.specs()
    models = dict(registry.models)
    skipped = {s.id: s for s in registry.skipped}
    stamps = dict(registry.stamps)
    for model_id in sorted(set(model_ids)):
        spec = specs.get(model_id)
        if spec is None:
            continue
        models.pop(model_id, None)
        skipped.pop(model_id, None)
        _read(spec, plugins, models, skipped, stamps)
        if model_id in models:
            log.info("model file read again", model=model_id, file=spec.path.name)
    return _assemble(models, skipped, stamps, registry.default_model)


def _read(spec: ModelSpec, plugins, models: dict, skipped: dict, stamps: dict) -> None:
    """Read one model's metadata into ``models``, or report and skip it."""
    model_id = spec.id
    stamps[model_id] = file_stamp(spec.path)
    try:
        metadata = read_metadata(spec.path)
    except (GGUFFormatError, OSError) as exc:
        reason = str(exc) if isinstance(exc, GGUFFormatError) else (exc.strerror or type(exc).__name__)
        log.warning(
            "skipping model file that is not a readable GGUF", model=model_id, file=spec.path.name, reason=reason
        )
        skipped[model_id] = SkippedModel(model_id, str(spec.path), reason, spec)
        return
    family = spec.options.get("family") or plugins.detect_family(metadata, spec)
    models[model_id] = ModelInfo(spec=spec, metadata=metadata, family=family)


def aliases_of(models: Mapping[str, ModelInfo]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for info in models.values():
        for alias in info.spec.aliases:
            if alias in models or alias in aliases:
                log.warning("ignoring alias that is already taken", alias=alias, model=info.id)
                continue
            aliases[alias] = info.id
    return aliases


def _assemble(models: dict, skipped: dict, stamps: dict, default_model: str | None) -> ModelRegistry:
    models = {model_id: models[model_id] for model_id in sorted(models)}
    aliases = aliases_of(models)
    default_id = aliases.get(default_model, default_model) if default_model is not None else None
    if default_id not in models:
        default_id = min(models) if models else None
    return ModelRegistry(
        MappingProxyType(models),
        MappingProxyType(aliases),
        default_id,
        tuple(skipped[model_id] for model_id in sorted(skipped)),
        MappingProxyType({model_id: stamps.get(model_id) for model_id in (*models, *skipped)}),
        default_model,
    )
