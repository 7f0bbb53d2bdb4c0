"""Directory discovery: every ``*.gguf`` in ``models_dir`` is a model.

The id is the file name without ``.gguf``, exactly as the original project did.
Split models (``name-00001-of-00003.gguf`` ...) appear once, as ``name``, pointing at
the first shard (llama.cpp loads the rest itself); an incomplete split set is reported
and skipped. Files (or symlinks) that resolve outside the models folder are skipped.
Non-recursive unless ``recursive = true``.
"""

from __future__ import annotations

import re
from pathlib import Path

import structlog

from ggufd import hookimpl
from ggufd.types import ModelSpec

log = structlog.get_logger("ggufd.discovery")

SPLIT_NAME = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def find_gguf_files(root: Path, recursive: bool) -> list[Path]:
    pattern = "**/*.gguf" if recursive else "*.gguf"
    root_resolved = root.resolve()
    found = []
    for path in sorted(root.glob(pattern)):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            log.warning("skipping unreadable or dangling model file", file=path.name)
            continue
        if not target.is_relative_to(root_resolved):
            log.warning("skipping model file that points outside models_dir", file=path.name)
            continue
        if target.is_file():
            found.append(path)
    return found


def group_models(files: list[Path]) -> list[tuple[str, Path]]:
    """(id, first file) per model; split shards grouped under their base name."""
    models: list[tuple[str, Path]] = []
    shards: dict[tuple[Path, str, int], set[int]] = {}
    first: dict[tuple[Path, str, int], Path] = {}
    for path in files:
        match = SPLIT_NAME.match(path.name)
        if not match:
            models.append((path.name[: -len(".gguf")], path))
            continue
        key = (path.parent, match["name"], int(match["count"]))
        shards.setdefault(key, set()).add(int(match["index"]))
        if int(match["index"]) == 1:
            first[key] = path
    for key, indexes in shards.items():
        _, name, count = key
        if indexes != set(range(1, count + 1)) or key not in first:
            missing = sorted(set(range(1, count + 1)) - indexes)
            log.warning("skipping incomplete split model", model=name, missing_parts=missing[:10])
            continue
        models.append((name, first[key]))
    unique: dict[str, Path] = {}
    for model_id, path in sorted(models):
        if model_id in unique:
            log.warning("two model files have the same id; serving the first", model=model_id, file=path.name)
            continue
        unique[model_id] = path
    return list(unique.items())


@hookimpl(trylast=True)
def discover_models(config):
    root = config.models_dir
    return [ModelSpec(id=model_id, path=path, source="directory") for model_id, path in group_models(find_gguf_files(root, config.recursive))]
