"""OpenAI's model objects (``GET /v1/models``, ``/v1/models/{id}``), with what ggufd adds:
family, aliases, load state, the context a request may use and what the model can do."""

from __future__ import annotations

from pathlib import Path

from ggufd.engine.contract import ModelSettings
from ggufd.types import ModelInfo


def served_context(info: ModelInfo, settings: ModelSettings) -> int | None:
    """Tokens one request may use (prompt + completion): the configured ``n_ctx`` per sequence,
    else the model's training length. Clients such as Continue and opencode size prompts by it."""
    return settings.n_ctx or info.metadata.context_length


def capabilities(info: ModelInfo, settings: ModelSettings) -> dict:
    """What a client can use with this model."""
    embedding = settings.embedding
    return {
        "chat": not embedding,
        "completions": not embedding,
        "embeddings": embedding,
        "tools": not embedding,
        "json_schema": not embedding,
        "logit_bias": not embedding,
        "logprobs": not embedding,
        "context_length": served_context(info, settings),
        "training_context_length": info.metadata.context_length,
        "parallel": settings.parallel,
    }


def model_object(info: ModelInfo, models_dir: Path, loaded: bool, settings: ModelSettings) -> dict:
    try:
        created = int(info.path.stat().st_mtime)
    except OSError:
        created = 0
    try:
        root = "./" + str(info.path.relative_to(models_dir.parent))
    except ValueError:
        root = info.path.name
    context = served_context(info, settings)
    return {
        "id": info.id,
        "object": "model",
        "created": created,
        "owned_by": "local",
        "root": root,
        "family": info.family,
        "aliases": list(info.spec.aliases),
        "context_length": context,
        "max_model_len": context,  # vLLM's name for the same number
        "loaded": loaded,
        "capabilities": capabilities(info, settings),
    }


def model_list(objects: list[dict]) -> dict:
    return {"object": "list", "data": objects}
