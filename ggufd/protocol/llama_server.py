"""llama.cpp server's utility routes: ``/tokenize``, ``/detokenize`` and ``/apply-template``.

Tools written against llama-server count tokens and inspect the prompt through these; the
shapes are llama.cpp's (``content`` in, ``tokens`` out; pieces that are not UTF-8 as byte
lists), with an optional ``model`` since ggufd serves several. ``/apply-template`` renders a chat
completions body through :func:`ggufd.protocol.openai_chat.plan`, so its prompt is exactly the
one the same body would generate from."""

from __future__ import annotations

from ggufd.protocol import openai_chat
from ggufd.protocol.generation import Served
from ggufd.validation import validate


def parse_tokenize(body: dict) -> dict:
    validate(body, "llama_tokenize")
    return body


def parse_detokenize(body: dict) -> dict:
    validate(body, "llama_detokenize")
    return body


def piece_value(piece: bytes) -> str | list[int]:
    """A token's piece as llama.cpp writes it: the text when it is valid UTF-8, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def tokenize_response(tokens: list[int], pieces: list[bytes] | None = None) -> dict:
    if pieces is None:
        return {"tokens": tokens}
    return {"tokens": [{"id": token, "piece": piece_value(piece)} for token, piece in zip(tokens, pieces, strict=True)]}


def detokenize_response(text: str) -> dict:
    return {"content": text}


def apply_template(body: dict, served: Served) -> dict:
    """A chat completions body -> ``{"prompt": ...}``, the text it would generate from, without generating."""
    return {"prompt": openai_chat.plan(body, served).request.prompt.text}
