"""OpenAI-shaped API errors.

Every error a client can see is an :class:`ApiError`; handlers render it as
``{"error": {"message", "type", "param", "code"}}`` with its HTTP status.
Messages never contain filesystem paths or tracebacks.
"""

from __future__ import annotations

import re

from ggufd.sizes import format_bytes


class ApiError(Exception):
    """An error that is shown to the client as the OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ApiError):
    """400: the request body is malformed or a parameter is out of range."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code)


class LimitExceeded(InvalidRequest):
    """400 ``limit_exceeded``: an array of the request is longer than the server's limit
    (checked on the decoded body before any other work); the message names the config key."""

    def __init__(self, what: str, limit: int, key: str, param: str) -> None:
        super().__init__(
            f"The request has more {what} than this server accepts: at most {limit} (config '{key}').",
            param=param,
            code="limit_exceeded",
        )


#: an id that names a file, a URL or a home directory is never echoed
_PATH_LIKE = re.compile(r"^(?:[/\\~.]|[A-Za-z]:[/\\])|://|\\|\.\.|^file:|\.gguf$", re.IGNORECASE)


class ModelNotFound(ApiError):
    """404: the requested model id (or alias) is not served."""

    def __init__(self, model: str, message: str | None = None) -> None:
        # Echo the name only when it looks like a model id, never a path or junk.
        looks_like_id = 0 < len(model) <= 128 and model.isprintable() and not _PATH_LIKE.search(model)
        name = f"The model '{model}'" if looks_like_id else "The requested model"
        super().__init__(
            404,
            message or f"{name} does not exist or is not served here; GET /v1/models lists the models.",
            code="model_not_found",
            param="model",
        )


class ContextLengthExceeded(ApiError):
    """400: prompt (plus the requested completion) does not fit the model's context."""

    def __init__(self, n_ctx: int, prompt_tokens: int, max_tokens: int | None, *, at_least: bool = False) -> None:
        # at_least: ``prompt_tokens`` is a lower bound (a prompt refused from its length, untokenized)
        many = "at least " if at_least else ""
        if max_tokens is None:
            message = (
                f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                f"resulted in {many}{prompt_tokens} tokens. Please reduce the length of the messages."
            )
        else:
            message = (
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{many}{prompt_tokens + max_tokens} tokens ({many}{prompt_tokens} in the messages, {max_tokens} "
                "in the completion). Please reduce the length of the messages or completion."
            )
        super().__init__(400, message, code="context_length_exceeded", param="messages")


class ServerError(ApiError):
    """500: a bug or an engine failure; the message stays generic, details go to the log."""

    def __init__(self, message: str = "The server had an error while processing your request.") -> None:
        super().__init__(500, message, type="server_error")


class ModelLoadFailed(ServerError):
    """500: a model could not be loaded. ``reason`` (no paths: safe to show) says why when
    llama.cpp gave a reason the engine recognises; otherwise the message points to the log."""

    def __init__(self, model_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"The model '{model_id}' failed to load: {reason}."
            if reason
            else f"The model '{model_id}' failed to load; see the server log."
        )
        self.model_id = model_id
        self.reason = reason


class Overloaded(ApiError):
    """503 + Retry-After: the model's queue is full, or the server is draining."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(
            503, message, type="server_error", code="server_is_overloaded", headers={"Retry-After": str(retry_after)}
        )


class ModelTooLarge(ApiError):
    """400: the model cannot fit its device's memory budget even with every other model evicted."""

    def __init__(self, model_id: str, need: int, budget: int, device: str) -> None:
        super().__init__(
            400,
            f"The model '{model_id}' needs about {format_bytes(need)}, more than the memory budget of "
            f"{format_bytes(budget)} for device {device}; it cannot be loaded.",
            code="model_too_large",
            param="model",
        )


class InvalidApiKey(ApiError):
    """401: the API key is missing, malformed or wrong (the message never repeats what was sent)."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="ggufd"'})


class WrongModelType(ApiError):
    """400: the route needs a chat model and got an embedding model, or the other way round."""

    def __init__(self, model_id: str, wanted: str) -> None:
        message = {
            "chat": f"The model '{model_id}' is an embedding model; use POST /v1/embeddings.",
            "embedding": f"The model '{model_id}' is not an embedding model (set embedding = true in its config to use it for embeddings).",
        }[wanted]
        super().__init__(400, message, param="model", code="wrong_model_type")


class ModelBusy(ApiError):
    """409: an unload was asked for while the model has running or queued requests."""

    def __init__(self, model_id: str) -> None:
        super().__init__(
            409,
            f"The model '{model_id}' has running or queued requests; it is unloaded only when idle.",
            code="model_busy",
        )


class BodyTooLarge(ApiError):
    """413: the request body is larger than ``max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


class UnsupportedMediaType(ApiError):
    """415: a body that is not JSON."""

    def __init__(self, content_type: str) -> None:
        super().__init__(415, f"Unsupported Content-Type '{content_type}'; send application/json.")


#: APIs clients ask for that ggufd does not serve (yet), by path prefix: what to say about them
UNSERVED_APIS = (
    ("/v1/responses", "OpenAI's Responses API"),
    ("/v1/messages", "Anthropic's Messages API"),
    ("/api/", "Ollama's native API"),
    ("/v1/audio/", "OpenAI's audio API"),
    ("/v1/images/", "OpenAI's images API"),
    ("/v1/rerank", "the rerank API"),
    ("/rerank", "the rerank API"),
    ("/v1/assistants", "OpenAI's Assistants API"),
    ("/v1/threads", "OpenAI's Assistants API"),
    ("/v1/files", "OpenAI's files API"),
    ("/v1/batches", "OpenAI's batch API"),
    ("/v1/fine_tuning", "OpenAI's fine-tuning API"),
    ("/v1/moderations", "OpenAI's moderations API"),
)
SERVED = (
    "/v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models (also without /v1), /health, /metrics, "
    "/tokenize, /detokenize, /apply-template and /extras/tokenize"
)


class PathNotFound(ApiError):
    """404: no route has this path. Names the API a known path belongs to, and what ggufd serves."""

    def __init__(self, path: str) -> None:
        shown = path if len(path) <= 200 and path.isprintable() else "(this path)"
        api = next((name for prefix, name in UNSERVED_APIS if path.startswith(prefix)), None)
        if api is not None:
            message = f"'{shown}' is {api}, which this server does not serve. It serves {SERVED}."
        else:
            message = f"Unknown path '{shown}'. This server serves {SERVED}."
        super().__init__(404, message, code="not_found")


def from_http_status(status: int, reason: str) -> ApiError:
    """Tornado's own HTTP errors (405, a malformed request) in the same shape as ours."""
    return ApiError(status, reason, type="invalid_request_error" if status < 500 else "server_error")


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""
