"""OpenAI embeddings (``POST /v1/embeddings``): the request's inputs and the response body."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from ggufd.errors import InvalidRequest
from ggufd.protocol.options import DEFAULT_LIMITS, ServerLimits, check_embedding_inputs
from ggufd.validation import validate


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str | None
    inputs: list  # strings or lists of token ids
    encoding_format: str  # "float" | "base64"


def parse_embeddings_request(body: dict, limits: ServerLimits = DEFAULT_LIMITS) -> EmbeddingsRequest:
    """Validate an embeddings body; more inputs than ``max_embedding_inputs`` are refused before
    the schema walks them."""
    check_embedding_inputs(body, limits)
    validate(body, "embeddings")
    if body.get("dimensions") is not None:
        raise InvalidRequest("'dimensions' is not supported: the model's own size is returned.", param="dimensions")
    return EmbeddingsRequest(body.get("model"), embedding_inputs(body["input"]), body.get("encoding_format") or "float")


def embedding_inputs(value) -> list:
    """``input`` as a list of strings or token-id lists (already schema-validated)."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [value]  # one input given as token ids
    return list(value)


def embeddings_response(model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str) -> dict:
    def encode(vector: list[float]):
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
