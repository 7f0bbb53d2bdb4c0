"""Hugging Face cache discovery: serve the GGUF files in a ``huggingface_hub`` cache (read-only).

Off unless ``hf_cache_dir`` is set (e.g. ``~/.cache/huggingface/hub``). The cache holds one
``models--ORG--NAME`` folder per repository with ``snapshots/<revision>/...`` (files there
are usually symlinks to ``../../blobs/<hash>``, which is fine: they stay inside the cache)
and ``refs/main`` naming the revision of ``main``. Per repository one snapshot is used: the
one ``refs/main`` names if it is present, else the most recently modified one.

Id: ``ORG/NAME/<path in the snapshot without .gguf>``, e.g.
``TheBloke/Mistral-7B-Instruct-v0.2-GGUF/mistral-7b-instruct-v0.2.Q4_K_M`` (a file in a
sub-folder of the repository keeps that folder: ``ORG/NAME/Q4_K_M/model``). Split models
are grouped per folder as in directory discovery. Files that are dangling or resolve
outside the cache folder are logged and skipped; hidden folders are not searched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import structlog

from ggufd import hookimpl
from ggufd.types import ModelSpec

from .directory_discovery import find_gguf_files, group_models

log = structlog.get_logger("ggufd.discovery.hf_cache")

REPO_FOLDER = re.compile(r"models--(?P<name>[^/]+)\Z")
REVISION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}\Z")  # a commit hash, never a path


def repo_id(folder_name: str) -> str | None:
    """``models--ORG--NAME`` -> ``ORG/NAME`` (``models--NAME`` -> ``NAME``)."""
    match = REPO_FOLDER.match(folder_name)
    if match is None:
        return None
    parts = match["name"].split("--")
    return "/".join(parts) if all(parts) else None


def _snapshot(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    try:
        revision = (repo / "refs" / "main").read_text("utf-8", errors="replace")[:256].strip()
    except OSError:
        revision = ""
    if revision:
        chosen = snapshots / revision
        if REVISION.match(revision) and chosen.is_dir() and not chosen.is_symlink():
            return chosen
        log.warning("refs/main names no snapshot; using the newest", repo=repo.name, revision=revision[:64])
    candidates = []
    try:
        with os.scandir(snapshots) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    candidates.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                except OSError:
                    continue
    except OSError:
        return None
    return snapshots / max(candidates)[1] if candidates else None


def discover(root: Path) -> list[ModelSpec]:
    root = root.resolve()
    specs: list[ModelSpec] = []
    try:
        with os.scandir(root) as it:
            repos = sorted((entry.name, Path(entry.path)) for entry in it if entry.is_dir(follow_symlinks=False))
    except OSError as exc:
        log.warning("cannot read the Hugging Face cache", folder=str(root), reason=exc.strerror or type(exc).__name__)
        return []
    for name, repo in repos:
        rid = repo_id(name)
        if rid is None:  # datasets--*, spaces--*, .locks, ...
            continue
        snapshot = _snapshot(repo)
        if snapshot is None:
            continue
        files = find_gguf_files(snapshot, recursive=True, confine_to=root)
        specs.extend(
            ModelSpec(id=f"{rid}/{mid}", path=path, source="hf-cache") for mid, path in group_models(files, snapshot)
        )
    return specs


@hookimpl(trylast=True)
def discover_models(config):
    root = getattr(config, "hf_cache_dir", None)
    if root is None:
        return None
    return discover(Path(root))
