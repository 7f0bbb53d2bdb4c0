"""Thin Tornado handlers. Each one: decode -> call pure functions / the engine -> write.

One :class:`BaseHandler` renders every error as the OpenAI error object, assigns the
request id, and logs one structured line per request.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
import tornado.web
from tornado.iostream import StreamClosedError

from ggufd import __version__
from ggufd.protocol.prompt import build_generation
from ggufd.types import PassThrough
from ggufd.protocol.tools import find_calls
from ggufd.errors import Overloaded
from ggufd.engine.events import Failed, Finished, Started, TextDelta, TokenLogprob
from ggufd.errors import ApiError, ServerError
from ggufd.api.security import check_bearer, cors_origin
from ggufd.protocol.openai import (
    ChunkEncoder,
    TextChunkEncoder,
    apply_server_limits,
    chat_completion,
    chat_logprobs,
    completion_logprobs,
    embedding_inputs,
    embeddings_response,
    decode_json_body,
    dumps,
    new_completion_id,
    new_text_completion_id,
    parse_chat_request,
    parse_completion_request,
    text_completion,
    with_model_defaults,
)
from ggufd.types import ChatPrompt, GenerationRequest
from ggufd.validation import validate

log = structlog.get_logger("ggufd.http")

JSON_TYPES = ("application/json",)


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Bodies are received as a stream so that an oversized one is answered with a JSON 413
    (after the headers, from Content-Length, or as soon as a chunked body passes the limit)."""

    #: the metrics label for this route
    endpoint = "other"
    #: answers while the server drains (health checks must see the truth)
    serves_while_draining = False

    def initialize(self, state) -> None:
        self.state = state  # ggufd.api.app.AppState: config, registry, plugins, engine, metrics
        self.log_fields: dict = {}
        self._logged = False
        self._body = bytearray()
        self._body_too_large = False

    def is_public(self) -> bool:
        """Whether this route answers without an API key (when keys are configured)."""
        return False

    def prepare(self) -> None:
        incoming = self.request.headers.get("X-Request-ID", "")
        self.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else f"req_{uuid.uuid4().hex[:16]}"
        self.set_header("X-Request-ID", self.request_id)
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        self.started = time.perf_counter()
        config = self.state.config
        allowed_origin = cors_origin(self.request.headers.get("Origin"), config.cors_origins)
        if allowed_origin:
            self.set_header("Access-Control-Allow-Origin", allowed_origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Expose-Headers", "X-Request-ID, Retry-After")
        if self.request.method == "OPTIONS":
            return  # CORS preflight: no key needed, answered by options()
        if config.api_keys and not self.is_public():
            check_bearer(self.request.headers.get("Authorization"), config.api_keys)
        if self.state.draining and not self.serves_while_draining:
            raise Overloaded("The server is shutting down; retry on another instance or after its restart.", retry_after=5)
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > config.max_body_bytes:
            raise self._too_large()

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large or len(self._body) + len(chunk) > self.state.config.max_body_bytes:
            self._body_too_large = True  # keep reading (bounded by body_timeout), keep nothing
            return
        self._body += chunk

    def _too_large(self) -> ApiError:
        return ApiError(413, f"The request body is larger than the limit of {self.state.config.max_body_bytes} bytes.")

    def options(self, *args) -> None:
        if self._headers.get("Access-Control-Allow-Origin"):
            self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-ID")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Server", f"ggufd/{__version__}")

    def write_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(obj))

    def json_body(self) -> dict:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
            raise ApiError(415, f"Unsupported Content-Type '{content_type}'; send application/json.")
        if self._body_too_large:
            raise self._too_large()
        return decode_json_body(bytes(self._body))

    # --- errors

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            reason = (exc.log_message if isinstance(exc, tornado.web.HTTPError) else None) or self._reason
            error = ApiError(status_code, reason, type="invalid_request_error" if status_code < 500 else "server_error")
        else:
            error = ServerError()
        self.set_status(error.status)
        if error.status == 405:  # RFC 9110: say which methods the resource has
            own = [m for m in ("GET", "POST", "OPTIONS") if getattr(type(self), m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())]
            self.set_header("Allow", ", ".join(own))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.log_fields.setdefault("error", error.code or error.type)
        self.finish(dumps(error.to_dict()))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (ApiError, tornado.web.HTTPError)):
            return  # a client error; the request line records it
        log.error("unhandled error", request_id=getattr(self, "request_id", None), exc_info=(typ, value, tb))

    # --- one log line per request

    def on_finish(self) -> None:
        self.log_request()

    def log_request(self) -> None:
        if self._logged:
            return
        self._logged = True
        started = getattr(self, "started", None)
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        status = self.get_status()
        log.info(
            "request",
            request_id=getattr(self, "request_id", None),
            method=self.request.method,
            path=self.request.path,
            status=status,
            duration_ms=duration_ms,
            **self.log_fields,
        )
        structlog.contextvars.unbind_contextvars("request_id")
        if self.state.metrics is not None and self.request.method != "OPTIONS":
            self.state.metrics.observe_request(self.endpoint, status, self.log_fields, (duration_ms or 0) / 1000)


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"Unknown path '{self.request.path}'. The API is under /v1.", code="not_found")


class HealthHandler(BaseHandler):
    endpoint = "health"
    serves_while_draining = True

    def is_public(self) -> bool:
        return self.state.config.health_public

    def get(self) -> None:
        state = self.state
        engine = state.engine
        if state.draining:
            self.set_header("Retry-After", "5")
        self.write_json(
            {
                "status": "draining" if state.draining else "ok",
                "version": __version__,
                "default_model": state.registry.default_id,
                "models": sorted(state.registry.models),
                "loaded_models": engine.loaded_models(),
                "model_states": engine.status(),
                "gpu_offload": engine.gpu_available,
                "gpus": [{"name": d.name, "description": d.description, "total_bytes": d.total_bytes} for d in engine.gpu_report().devices],
                "gpu_problems": list(engine.gpu_report().problems),
                "pending_requests": engine.pending(),
                "skipped_files": [{"id": s.id, "reason": s.reason} for s in state.registry.skipped],
            },
            status=503 if state.draining else 200,
        )


def capabilities(info, settings) -> dict:
    """What a client can use with this model (GET /v1/models/{id})."""
    embedding = settings.embedding
    return {
        "chat": not embedding,
        "completions": not embedding,
        "embeddings": embedding,
        "tools": not embedding,
        "json_schema": not embedding,
        "logit_bias": not embedding,
        "logprobs": not embedding,
        "context_length": settings.n_ctx or info.metadata.context_length,
        "parallel": settings.parallel,
    }


def model_object(info, models_dir, loaded: bool) -> dict:
    try:
        created = int(info.path.stat().st_mtime)
    except OSError:
        created = 0
    try:
        root = "./" + str(info.path.relative_to(models_dir.parent))
    except ValueError:
        root = info.path.name
    return {
        "id": info.id,
        "object": "model",
        "created": created,
        "owned_by": "local",
        "root": root,
        "family": info.family,
        "aliases": list(info.spec.aliases),
        "context_length": info.metadata.context_length,
        "loaded": loaded,
    }


class ModelsHandler(BaseHandler):
    endpoint = "models"

    def get(self, model_id: str | None = None) -> None:
        loaded = set(self.state.engine.loaded_models())

        def describe(info) -> dict:
            data = model_object(info, self.state.config.models_dir, info.id in loaded)
            data["capabilities"] = capabilities(info, self.state.engine.settings_for(info))
            return data

        if model_id is not None:
            self.write_json(describe(self.state.registry.get(model_id)))
        else:
            self.write_json({"object": "list", "data": [describe(info) for info in self.state.registry]})


class GenerationHandler(BaseHandler):
    """Shared by chat and text completions: queue a generation, then stream or collect it.

    Subclasses turn the body into a generation (:meth:`build`) and name the wire shapes
    (:meth:`encoder`, :meth:`result`)."""

    generation = None
    answer = PassThrough  # the answer filter (chat models may split reasoning from content)
    prefix = ""  # text returned before the generated text (completions with echo)
    hold_content = False  # stream content only at the end (it may turn out to be a tool call)
    logprobs: list | None = None  # TokenLogprob events, when the request asked for logprobs

    async def post(self) -> None:
        self.state.active.add(self)
        try:
            await self._post()
        finally:
            self.state.active.discard(self)

    def cancel_generation(self) -> None:
        if self.generation is not None:
            self.generation.cancel()

    def build(self, body: dict, config) -> tuple:
        """-> (model, GenerationRequest, stream, include_usage)."""
        raise NotImplementedError

    def resolve(self, parsed, **limits):
        """The parsed request's model, and the request with that model's sampling defaults and then
        the server's limits applied -> (model, request)."""
        model = self.state.registry.get(parsed.model)
        if model.options.get("sampling"):
            parsed = with_model_defaults(parsed, model.options["sampling"])
        self.log_fields["model"] = model.id
        return model, apply_server_limits(parsed, **limits)

    def encoder(self, completion_id: str, model_id: str):
        raise NotImplementedError

    def final_content(self, encoder, content: str, finished) -> tuple[bytes, str]:
        """Held content at the end of a stream -> (events to write, finish reason)."""
        return (encoder.content(content) if content else b""), finished.reason

    def result(self, completion_id: str, model_id: str, text: str, reason: str, prompt_tokens: int, completion_tokens: int, reasoning: str) -> dict:
        raise NotImplementedError

    async def _post(self) -> None:
        body = self.json_body()
        model, request, stream, include_usage = self.build(body, self.state.config)
        if self.state.engine.is_embedding_model(model):
            raise ApiError(400, f"The model '{model.id}' is an embedding model; use POST /v1/embeddings.", param="model", code="wrong_model_type")
        self.generation = self.state.engine.start(model, request)

        # Wait for the prompt to be accepted: errors such as context_length_exceeded
        # are decided before the first byte of the response.
        timeout = self.state.config.queue_timeout or None
        try:
            events = await asyncio.wait_for(self.generation.next_events(), timeout)
        except asyncio.TimeoutError:
            self.generation.cancel()
            raise Overloaded(f"The request waited more than {timeout:g} s for the model '{model.id}'; try again shortly.") from None
        first = events[0]
        if isinstance(first, Failed):
            raise first.error
        if isinstance(first, Finished):  # cancelled while queued
            self._note_finish(first)
            if self._client_gone:
                self.log_request()
                return
            raise self._stopped_by_server()
        assert isinstance(first, Started)
        self.log_fields["prompt_tokens"] = first.prompt_tokens
        completion_id = self.new_id()
        if stream:
            await self._stream(self.encoder(completion_id, model.id), include_usage, events[1:])
        else:
            await self._complete(model.id, completion_id, events[1:])

    def _note_text(self, text: str) -> None:
        if "ttft_ms" not in self.log_fields:
            self.log_fields["ttft_ms"] = round((time.perf_counter() - self.started) * 1000, 2)
        if self.state.config.log_content:
            self.log_fields["completion"] = self.log_fields.get("completion", "") + text

    def _note_finish(self, finished: Finished) -> None:
        self.log_fields.update(finish_reason=finished.reason, completion_tokens=finished.completion_tokens)

    async def _complete(self, model_id: str, completion_id: str, events: list) -> None:
        parts: list[str] = [self.prefix]
        reasoning: list[str] = []

        def take(piece: tuple[str, str]) -> None:
            parts.append(piece[0])
            reasoning.append(piece[1])

        while True:
            for event in events:
                if isinstance(event, TextDelta):
                    self._note_text(event.text)
                    take(self.answer.feed(event.text))
                elif isinstance(event, TokenLogprob):
                    self.logprobs.append(event)
                elif isinstance(event, Finished):
                    take(self.answer.finish())
                    self._note_finish(event)
                    if event.reason == "cancelled":
                        if self._client_gone:
                            self.log_request()
                            return
                        raise self._stopped_by_server()
                    self.write_json(
                        self.result(completion_id, model_id, "".join(parts), event.reason, event.prompt_tokens, event.completion_tokens, "".join(reasoning))
                    )
                    return
                elif isinstance(event, Failed):
                    raise event.error
            events = await self.generation.next_events()

    async def _stream(self, encoder, include_usage: bool, events: list) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        held: list[str] = []
        try:
            self.write(encoder.role())
            if self.prefix:
                self.write(encoder.content(self.prefix))
            await self.flush()
            while True:
                out = []
                token_logprobs = [] if self.logprobs is not None else None
                finished = None
                for event in events:
                    if isinstance(event, TextDelta):
                        self._note_text(event.text)
                        out.append(event.text)
                    elif isinstance(event, TokenLogprob):
                        token_logprobs.append(event)
                    elif isinstance(event, Finished):
                        finished = event
                    elif isinstance(event, Failed):
                        self.log_fields["error"] = event.error.code or event.error.type
                        self.write(encoder.error(event.error.to_dict()))
                        self.finish()
                        return
                content, reasoning = self.answer.feed("".join(out)) if out else ("", "")
                if finished is not None:
                    tail = self.answer.finish()
                    content, reasoning = content + tail[0], reasoning + tail[1]
                if reasoning:
                    self.write(encoder.reasoning(reasoning))
                if self.hold_content:
                    held.append(content)
                elif content or token_logprobs:
                    self.write(encoder.content(content, logprobs=token_logprobs))
                if finished is not None:
                    self._note_finish(finished)
                    if finished.reason == "cancelled":
                        if not self._client_gone:
                            self.write(encoder.error(self._stopped_by_server().to_dict()))
                            self.finish()
                        self.log_request()
                        return
                    reason = finished.reason
                    if self.hold_content:
                        events_out, reason = self.final_content(encoder, "".join(held), finished)
                        self.write(events_out)
                    self.write(encoder.finish(reason))
                    if include_usage:
                        self.write(encoder.usage(finished.prompt_tokens, finished.completion_tokens))
                    self.write(encoder.DONE)
                    self.finish()
                    return
                if out:
                    await self.flush()
                events = await self.generation.next_events()
        except StreamClosedError:
            self._client_left()
            await self._wait_until_stopped()

    async def _wait_until_stopped(self) -> None:
        """After the client left: the worker stops within a token; record how the generation ended."""
        while not self.generation.done:
            for event in await self.generation.next_events():
                if isinstance(event, Finished):
                    self._note_finish(event)
        self.log_request()

    _client_gone = False

    def _client_left(self) -> None:
        self._client_gone = True
        if self.generation is not None and not self.generation.done:
            self.generation.cancel()
            self.log_fields["client_disconnected"] = True

    @staticmethod
    def _stopped_by_server() -> Overloaded:
        """The server cancelled the request (shutdown deadline) while its client still waited."""
        return Overloaded("The server is shutting down; the request was stopped before it finished.", retry_after=5)

    def on_connection_close(self) -> None:
        self._client_left()
        super().on_connection_close()


class ChatCompletionsHandler(GenerationHandler):
    """``POST /v1/chat/completions``."""

    endpoint = "chat.completions"

    def build(self, body: dict, config) -> tuple:
        model, chat = self.resolve(parse_chat_request(body), max_tokens_cap=config.max_tokens_cap, max_messages=config.max_messages)
        if config.log_content:  # off by default: prompts and answers stay out of the logs
            self.log_fields["messages"] = list(chat.messages)
        self.answer = self.state.plugins.answer_filter(model)
        self.model, self.tool_policy = model, chat.tool_policy
        self.hold_content = chat.tool_policy is not None
        self.logprobs = [] if chat.logprobs is not None else None
        return model, build_generation(self.state.plugins, model, chat), chat.stream, chat.include_usage

    def find_calls(self, text: str) -> list | None:
        if self.tool_policy is None:
            return None
        return find_calls(self.state.plugins, self.model, text, self.tool_policy)

    def final_content(self, encoder, content: str, finished) -> tuple[bytes, str]:
        calls = self.find_calls(content) if finished.reason != "length" else None
        if calls:
            return encoder.tool_calls(calls), "tool_calls"
        return super().final_content(encoder, content, finished)

    new_id = staticmethod(new_completion_id)

    def encoder(self, completion_id: str, model_id: str) -> ChunkEncoder:
        return ChunkEncoder(completion_id, model_id)

    def result(self, completion_id, model_id, text, reason, prompt_tokens, completion_tokens, reasoning) -> dict:
        calls = self.find_calls(text) if reason != "length" else None
        return chat_completion(completion_id, int(time.time()), model_id, text, reason, prompt_tokens, completion_tokens,
                               reasoning=reasoning, tool_calls=calls, logprobs=chat_logprobs(self.logprobs))


class CompletionsHandler(GenerationHandler):
    """``POST /v1/completions``: the legacy text completions API (a raw prompt, no chat format)."""

    endpoint = "completions"

    def build(self, body: dict, config) -> tuple:
        model, completion = self.resolve(parse_completion_request(body), max_tokens_cap=config.max_tokens_cap)
        if config.log_content:
            self.log_fields["prompt"] = completion.prompt
        self.prefix = completion.prompt if completion.echo else ""
        self.logprobs = [] if completion.logprobs is not None else None
        request = GenerationRequest(
            prompt=ChatPrompt(text=completion.prompt, add_bos=True),
            sampling=completion.sampling,
            max_tokens=completion.max_tokens,
            stop=completion.stop,
            logprobs=completion.logprobs,
            stream=completion.stream,
        )
        return model, request, completion.stream, completion.include_usage

    new_id = staticmethod(new_text_completion_id)

    def encoder(self, completion_id: str, model_id: str) -> TextChunkEncoder:
        return TextChunkEncoder(completion_id, model_id)

    def result(self, completion_id, model_id, text, reason, prompt_tokens, completion_tokens, reasoning) -> dict:
        return text_completion(completion_id, int(time.time()), model_id, text, reason, prompt_tokens, completion_tokens,
                               logprobs=completion_logprobs(self.logprobs, len(self.prefix)))


class AdminModelHandler(BaseHandler):
    """``POST /admin/models/{id}/load`` and ``.../unload``: explicit lifecycle control."""

    endpoint = "admin"

    async def post(self, model_id: str, action: str) -> None:
        info = self.state.registry.get(model_id)
        engine = self.state.engine
        if action == "load":
            await engine.load(info)
        elif not await engine.unload(info.id):
            raise ApiError(409, f"The model '{info.id}' has running or queued requests; it is unloaded only when idle.", code="model_busy")
        self.write_json({"id": info.id, "state": engine.status().get(info.id, {}).get("state", "unloaded")})


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus exposition (needs an API key unless ``metrics_public``)."""

    endpoint = "metrics"
    serves_while_draining = True

    def is_public(self) -> bool:
        return self.state.config.metrics_public

    def get(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.state.metrics.registry))


class PluginsHandler(BaseHandler):
    """``GET /-/plugins``: the loaded plugins (name, origin and version, hooks) and those that failed."""

    endpoint = "plugins"

    def get(self) -> None:
        plugins = self.state.plugins
        self.write_json({"plugins": plugins.describe(), "failed": plugins.failures})


class TokenizeHandler(BaseHandler):
    """``POST /extras/tokenize`` (``{"input": str}`` or ``{"messages": [...]}`` as a chat request
    would format them), ``/extras/tokenize/count`` and ``/extras/detokenize`` — llama-cpp-python's
    server names. Count a request's tokens before sending it."""

    endpoint = "tokenize"

    async def post(self, action: str) -> None:
        body = self.json_body()
        validate(body, "tokenize")
        model = self.state.registry.get(body.get("model"))
        engine = self.state.engine
        if action == "detokenize":
            if "tokens" not in body:
                raise ApiError(400, "'tokens' is required.", param="tokens")
            text = await engine.with_model(model, lambda loaded: loaded.detokenize(body["tokens"]))
            self.write_json({"text": text})
            return
        if "messages" in body:
            chat = parse_chat_request({"messages": body["messages"]})
            prompt = build_generation(self.state.plugins, model, chat).prompt
            text, add_bos = prompt.text, prompt.add_bos
        elif "input" in body:
            text, add_bos = body["input"], body.get("add_special", True)
        else:
            raise ApiError(400, "Send 'input' (text) or 'messages' (a chat).", param="input")
        tokens = await engine.with_model(model, lambda loaded: loaded.tokenize(text, add_bos))
        self.write_json({"count": len(tokens)} if action == "tokenize/count" else {"tokens": tokens, "count": len(tokens)})


class EmbeddingsHandler(BaseHandler):
    """``POST /v1/embeddings`` for embedding models (``embedding = true``, or a GGUF with pooling)."""

    endpoint = "embeddings"

    async def post(self) -> None:
        body = self.json_body()
        validate(body, "embeddings")
        model = self.state.registry.get(body.get("model"))
        self.log_fields["model"] = model.id
        if not self.state.engine.is_embedding_model(model):
            raise ApiError(400, f"The model '{model.id}' is not an embedding model (set embedding = true in its config to use it for embeddings).",
                           param="model", code="wrong_model_type")
        if body.get("dimensions") is not None:
            raise ApiError(400, "'dimensions' is not supported: the model's own size is returned.", param="dimensions")
        inputs = embedding_inputs(body["input"])
        vectors, used = await self.state.engine.embed(model, inputs)
        self.log_fields["prompt_tokens"] = used
        self.write_json(embeddings_response(model.id, vectors, used, body.get("encoding_format") or "float"))


class OpenAPIHandler(BaseHandler):
    """``GET /openapi.json``: the API described from the committed request schemas."""

    endpoint = "openapi"

    def is_public(self) -> bool:
        return True

    def get(self) -> None:
        from ggufd.api.openapi import openapi_document

        self.write_json(openapi_document())
