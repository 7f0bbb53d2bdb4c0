"""Ollama discovery: serve the models an Ollama installation has pulled (read-only).

Off unless ``ollama_models_dir`` is set (e.g. ``~/.ollama/models``). The store holds
``manifests/<registry host>/<namespace>/<model>/<tag>`` (JSON, ``schemaVersion`` 2, a
``layers`` list) and content-addressed ``blobs/sha256-<hex>``. The layer with media type
``application/vnd.ollama.image.model`` is the GGUF file that is served; the other layers
(template, params, system prompt, licence, projector ...) are ignored for now — the
template and params could become the model's ``chat_template``/``sampling`` options later.

Ids follow Ollama's own names:

* ``registry.ollama.ai/library/llama3.2/3b``   -> ``llama3.2:3b``
* ``registry.ollama.ai/someone/model/tag``    -> ``someone/model:tag``
* ``hf.co/org/repo/Q4_K_M`` (any other host)  -> ``hf.co/org/repo:Q4_K_M``

A model tagged ``latest`` also answers to its name without the tag (an alias), as in Ollama.

Nothing is ever written. A manifest that is not valid JSON of the expected shape, a model
layer whose digest is not ``sha256:<64 hex digits>``, a blob that is missing, or a
manifest or blob that resolves outside the store is logged and skipped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import structlog

from ggufd import hookimpl
from ggufd.types import ModelSpec

log = structlog.get_logger("ggufd.discovery.ollama")

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DIGEST = re.compile(r"sha256:([0-9a-f]{64})\Z")
MAX_MANIFEST_BYTES = 1024 * 1024


def model_id(host: str, namespace: str, name: str, tag: str) -> str:
    if host == DEFAULT_REGISTRY:
        return f"{name}:{tag}" if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}:{tag}"
    return f"{host}/{namespace}/{name}:{tag}"


def _inside(path: Path, boundary: Path) -> Path | None:
    """``path`` resolved, if it exists and stays inside ``boundary``; else ``None``."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return target if target.is_relative_to(boundary) else None


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _manifests(store: Path) -> list[tuple[tuple[str, str, str, str], Path]]:
    """((host, namespace, model, tag), manifest file) for every ``manifests/h/n/m/t`` file."""
    found: list[tuple[tuple[str, str, str, str], Path]] = []
    for host in _subfolders(store / "manifests"):
        for namespace in _subfolders(host):
            for name in _subfolders(namespace):
                try:
                    with os.scandir(name) as it:
                        tags = sorted(Path(e.path) for e in it if not e.name.startswith(".") and not e.is_dir())
                except OSError:
                    continue
                found.extend(((host.name, namespace.name, name.name, tag.name), tag) for tag in tags)
    return found


def _model_blob(manifest: Path, store: Path, blobs: Path) -> Path | str:
    """The model layer's blob path, or the reason the manifest is skipped."""
    if _inside(manifest, store) is None:
        return "manifest is dangling or points outside the store"
    try:
        with manifest.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        return f"cannot read manifest: {exc.strerror or type(exc).__name__}"
    if len(raw) > MAX_MANIFEST_BYTES:
        return "manifest is too large"
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return "manifest is not valid JSON"
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2 or not isinstance(doc.get("layers"), list):
        return "manifest is not an Ollama manifest (schemaVersion 2 with layers)"
    layers = [
        layer for layer in doc["layers"] if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE
    ]
    if not layers:
        return "manifest has no model layer"
    digest = layers[0].get("digest")
    match = DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        return "model layer digest is not sha256:<64 hex digits>"
    blob = blobs / f"sha256-{match[1]}"
    target = _inside(blob, store)
    if target is None:
        return "model blob is missing or points outside the store"
    if not target.is_file():
        return "model blob is not a file"
    return blob


def discover(store: Path) -> list[ModelSpec]:
    store = store.resolve()
    blobs = store / "blobs"
    specs = []
    for (host, namespace, name, tag), manifest in _manifests(store):
        mid = model_id(host, namespace, name, tag)
        result = _model_blob(manifest, store, blobs)
        if isinstance(result, str):
            log.warning("skipping Ollama model", model=mid, manifest=str(manifest.relative_to(store)), reason=result)
            continue
        aliases = (model_id(host, namespace, name, "latest")[: -len(":latest")],) if tag == "latest" else ()
        specs.append(ModelSpec(id=mid, path=result, aliases=aliases, source="ollama"))
    return specs


@hookimpl(trylast=True)
def discover_models(config):
    store = getattr(config, "ollama_models_dir", None)
    if store is None:
        return None
    return discover(Path(store))
