"""The OpenAPI 3.1 description of the HTTP API, built from the committed request schemas.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so ``ggufd/schemas/*.json`` embed as they
are; only their ``$defs`` move to ``components/schemas`` (a ``#/$defs/x`` inside a schema
embedded in a bigger document would point at the document's root) and ``$schema``/``$id``
are dropped (an ``$id`` would change the base of every ``$ref`` below it).

Pure: no Tornado, no I/O besides reading the package's schema files.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from ggufd import __version__

#: request schema file (without .json) -> component name
REQUEST_SCHEMAS = {
    "chat_completions": "ChatCompletionsRequest",
    "completions": "CompletionsRequest",
    "tokenize": "TokenizeRequest",
    "embeddings": "EmbeddingsRequest",
}

JSON = "application/json"

_ERROR_STATUSES = {
    "400": "The request is invalid: bad JSON, a value out of range, an unsupported field, or a prompt longer than the context.",
    "401": "API keys are configured and the request has none, or a wrong one.",
    "404": "The model (or path) does not exist.",
    "413": "The request body is larger than max_body_bytes.",
    "415": "The Content-Type is not application/json.",
    "503": "The model's queue is full or the server is draining (see Retry-After).",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    """Copy ``node`` with every ``#/$defs/x`` reference pointing to ``components/schemas``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = f"#/components/schemas/{names[value[len('#/$defs/') :]]}"
            else:
                out[key] = _rewrite_refs(value, names)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, names) for item in node]
    return node


def _load(schema_name: str) -> dict:
    text = resources.files("ggufd.schemas").joinpath(f"{schema_name}.json").read_text("utf-8")
    return json.loads(text)


def request_components() -> dict[str, dict]:
    """The request schemas and their ``$defs`` as ``components/schemas`` entries.

    A ``$def`` keeps its name (``message``, ``max_tokens``...) and is shared when two request
    schemas define it identically; a different definition under a taken name gets the
    request's component name as a prefix (``CompletionsRequest_x``). (A definition that holds
    references is compared after rewriting, so it is never taken for another schema's and is
    prefixed on its second use: sharing it could point its references at the wrong schema's
    definitions.)
    """
    components: dict[str, dict] = {}
    for schema_name, component in REQUEST_SCHEMAS.items():
        schema = _load(schema_name)
        defs = schema.pop("$defs", {})
        schema.pop("$schema", None)
        schema.pop("$id", None)
        names = {}
        for name, definition in defs.items():
            target = name
            if target in components and components[target] != definition:
                target = f"{component}_{name}"
            names[name] = target
        for name, definition in defs.items():
            components[names[name]] = _rewrite_refs(definition, names)
        components[component] = _rewrite_refs(schema, names)
    return components


def _nullable(kind: str) -> dict:
    return {"type": [kind, "null"]}


def response_components() -> dict[str, dict]:
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            name: {"type": "integer", "minimum": 0} for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    finish_reason = {"type": ["string", "null"]}

    def completion(obj: str, choice: dict) -> dict:
        return {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": obj},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "minItems": 1, "items": choice},
                "usage": _ref("Usage"),
            },
        }

    chat_choice = {
        "type": "object",
        "required": ["index", "message", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": _nullable("string"),
                    "reasoning_content": {"type": "string"},
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                },
            },
            "logprobs": _nullable("object"),
            "finish_reason": finish_reason,
        },
    }
    text_choice = {
        "type": "object",
        "required": ["index", "text", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "text": {"type": "string"},
            "logprobs": _nullable("object"),
            "finish_reason": finish_reason,
        },
    }
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "root": {"type": "string"},
            "family": _nullable("string"),
            "aliases": {"type": "array", "items": {"type": "string"}},
            "context_length": _nullable("integer"),
            "loaded": {"type": "boolean"},
            "capabilities": {"type": "object"},
        },
    }

    def chunk(obj: str, choice: dict) -> dict:
        return {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": obj},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "items": choice, "description": "empty in the usage chunk"},
                "usage": _ref("Usage"),
            },
        }

    chat_chunk_choice = {
        "type": "object",
        "required": ["index", "delta", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "delta": {
                "type": "object",
                "properties": {
                    "role": {"const": "assistant"},
                    "content": _nullable("string"),
                    "reasoning_content": {"type": "string"},
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                },
            },
            "logprobs": _nullable("object"),
            "finish_reason": finish_reason,
        },
    }
    return {
        "ChatCompletionChunk": chunk("chat.completion.chunk", chat_chunk_choice),
        "TextCompletionChunk": chunk("text_completion", text_choice),
        "Error": {
            "type": "object",
            "description": "The OpenAI error object.",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _nullable("string"),
                        "code": _nullable("string"),
                    },
                }
            },
        },
        "Usage": usage,
        "ChatCompletion": completion("chat.completion", chat_choice),
        "TextCompletion": completion("text_completion", text_choice),
        "Model": model,
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "version"],
            "properties": {
                "status": {"enum": ["ok", "draining"]},
                "version": {"type": "string"},
                "default_model": _nullable("string"),
                "models": {"type": "array", "items": {"type": "string"}},
                "loaded_models": {"type": "array", "items": {"type": "string"}},
                "model_states": {"type": "object"},
                "gpu_offload": {"type": "boolean"},
                "pending_requests": {"type": "integer"},
                "skipped_files": {"type": "array"},
            },
        },
        "TokenizeResponse": {
            "type": "object",
            "required": ["tokens", "count"],
            "properties": {
                "tokens": {"type": "array", "items": {"type": "integer"}},
                "count": {"type": "integer", "minimum": 0},
            },
        },
        "TokenCountResponse": {
            "type": "object",
            "required": ["count"],
            "properties": {"count": {"type": "integer", "minimum": 0}},
        },
        "EmbeddingList": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["object", "index", "embedding"],
                        "properties": {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer", "minimum": 0},
                            "embedding": {
                                "description": "floats, or base64 of little-endian float32 with encoding_format 'base64'",
                                "anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}],
                            },
                        },
                    },
                },
                "model": {"type": "string"},
                "usage": {
                    "type": "object",
                    "required": ["prompt_tokens", "total_tokens"],
                    "properties": {
                        "prompt_tokens": {"type": "integer", "minimum": 0},
                        "total_tokens": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
        "DetokenizeResponse": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
    }


def _json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: str) -> dict:
    return {status: _json_response(_ERROR_STATUSES[status], _ref("Error")) for status in statuses}


def sse_event_schema(chunk: str) -> dict:
    """One server-sent event of a stream (OpenAPI 3.1: the ``schema`` of ``text/event-stream``
    describes each event): its ``data`` is a JSON chunk, the error object (a failure after
    the 200) or ``[DONE]``."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": JSON,
                        "contentSchema": {"anyOf": [_ref(chunk), _ref("Error")]},
                    },
                ]
            }
        },
        "description": "Server-sent events: `data: {chunk}` ... `data: [DONE]`; an error after the 200 is "
        "`data: {error}` and ends the stream.",
    }


def _post(summary: str, operation_id: str, request: str, ok: dict, *, stream: str | None = None) -> dict:
    content = {JSON: {"schema": ok}}
    if stream:
        content["text/event-stream"] = {"schema": sse_event_schema(stream)}
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {
                "200": {"description": "OK", "content": content},
                **_errors("400", "401", "404", "413", "415", "503"),
            },
        }
    }


def _get(
    summary: str, operation_id: str, ok: dict, *errors: str, parameters: list | None = None, ok_status: str = "200"
) -> dict:
    operation = {
        "summary": summary,
        "operationId": operation_id,
        "responses": {ok_status: _json_response("OK", ok), **_errors("401", *errors)},
    }
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _build() -> dict:
    health = _get("Liveness, the models and what is loaded", "health", _ref("Health"))
    health["get"]["responses"]["503"] = _json_response("The server is draining.", _ref("Health"))
    model_id = {
        "name": "model_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "A model id or alias.",
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "ggufd",
            "version": __version__,
            "description": "Local GGUF models over an OpenAI-compatible API. Errors are the OpenAI error object.",
        },
        "paths": {
            "/v1/chat/completions": _post(
                "Chat completion",
                "createChatCompletion",
                "ChatCompletionsRequest",
                _ref("ChatCompletion"),
                stream="ChatCompletionChunk",
            ),
            "/v1/completions": _post(
                "Text completion (legacy)",
                "createCompletion",
                "CompletionsRequest",
                _ref("TextCompletion"),
                stream="TextCompletionChunk",
            ),
            "/v1/embeddings": _post(
                "Embeddings (embedding models only)", "createEmbedding", "EmbeddingsRequest", _ref("EmbeddingList")
            ),
            "/extras/tokenize": _post(
                "Tokenize text or a chat", "tokenize", "TokenizeRequest", _ref("TokenizeResponse")
            ),
            "/extras/tokenize/count": _post(
                "Count the tokens of text or a chat", "countTokens", "TokenizeRequest", _ref("TokenCountResponse")
            ),
            "/extras/detokenize": _post(
                "Token ids to text", "detokenize", "TokenizeRequest", _ref("DetokenizeResponse")
            ),
            "/v1/models": _get("The served models", "listModels", _ref("ModelList")),
            "/v1/models/{model_id}": _get("One model", "retrieveModel", _ref("Model"), "404", parameters=[model_id]),
            "/health": health,
            "/openapi.json": _get("This document", "openapi", {"type": "object", "required": ["openapi", "paths"]}),
        },
        "components": {"schemas": {**request_components(), **response_components()}},
    }


@cache
def _document() -> dict:
    return _build()


def openapi_document() -> dict:
    """The OpenAPI 3.1 document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())
