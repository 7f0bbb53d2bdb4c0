"""The base of every handler: request ids, CORS and API keys, body limits, the one ``write_error``
and one structured log line per request.

Errors are :class:`~ggufd.errors.ApiError` instances, rendered in the route's wire format by
:meth:`BaseHandler.error_body` (OpenAI's shape unless a format's handler says otherwise).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import structlog
import tornado.web

from ggufd import __version__
from ggufd.api.security import check_bearer, cors_origin
from ggufd.errors import (
    ApiError,
    BodyTooLarge,
    Overloaded,
    PathNotFound,
    ServerError,
    UnsupportedMediaType,
    from_http_status,
)
from ggufd.protocol.body import decode_json_body, dumps

if TYPE_CHECKING:
    from ggufd.api.state import AppState

log = structlog.get_logger("ggufd.http")

JSON_TYPES = ("application/json",)
#: bodies from this size on are decoded and parsed in a worker thread, off the event loop
OFF_LOOP_BYTES = 64 * 1024

T = TypeVar("T")


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Bodies are received as a stream so that an oversized one is answered with a JSON 413
    (after the headers, from Content-Length, or as soon as a chunked body passes the limit)."""

    #: the metrics label for this route
    endpoint = "other"
    #: answers while the server drains (health checks must see the truth)
    serves_while_draining = False

    def initialize(self, state: AppState) -> None:
        self.state = state
        self.log_fields: dict = {}
        self._logged = False
        self._body = bytearray()
        self._body_too_large = False

    def is_public(self) -> bool:
        """Whether this route answers without an API key (when keys are configured)."""
        return False

    def prepare(self) -> None:
        incoming = self.request.headers.get("X-Request-ID", "")
        self.request_id = (
            incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else f"req_{uuid.uuid4().hex[:16]}"
        )
        self.set_header("X-Request-ID", self.request_id)
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        self.started = time.perf_counter()
        config = self.state.config
        allowed_origin = cors_origin(self.request.headers.get("Origin"), config.cors_origins)
        if allowed_origin:
            self.set_header("Access-Control-Allow-Origin", allowed_origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Expose-Headers", "X-Request-ID, Retry-After, X-Ggufd-Ignored")
        if self.request.method == "OPTIONS":
            return  # CORS preflight: no key needed, answered by options()
        if config.api_keys and not self.is_public():
            check_bearer(self.request.headers.get("Authorization"), config.api_keys)
        if self.state.draining and not self.serves_while_draining:
            raise Overloaded(
                "The server is shutting down; retry on another instance or after its restart.", retry_after=5
            )
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > config.max_body_bytes:
            raise self._too_large()

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large or len(self._body) + len(chunk) > self.state.config.max_body_bytes:
            self._body_too_large = True  # keep reading (bounded by body_timeout), keep nothing
            return
        self._body += chunk

    def _too_large(self) -> ApiError:
        return BodyTooLarge(self.state.config.max_body_bytes)

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

    def json_body(self, yielding: bool = False) -> dict:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
            raise UnsupportedMediaType(content_type)
        if self._body_too_large:
            raise self._too_large()
        return decode_json_body(bytes(self._body), yielding=yielding)

    async def parsed_body(self, parse: Callable[[dict], T]) -> T:
        """``parse(self.json_body())``: inline for a small body; for one of ``OFF_LOOP_BYTES`` or
        more in a worker thread, so that decoding, validating and planning a large body never
        holds the event loop (``/health`` and the streams keep being served meanwhile)."""
        if len(self._body) < OFF_LOOP_BYTES:
            return parse(self.json_body())

        def work() -> tuple[T | None, ApiError | None]:
            # The decoded body dies here, in the thread (freeing a large one takes time too):
            # an error comes back without its traceback, whose frames would keep it alive.
            try:
                return parse(self.json_body(yielding=True)), None
            except ApiError as exc:
                return None, exc.with_traceback(None)

        result, error = await asyncio.to_thread(work)
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    # --- errors

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            reason = (exc.log_message if isinstance(exc, tornado.web.HTTPError) else None) or self._reason
            error = from_http_status(status_code, reason)
        else:
            error = ServerError()
        self.set_status(error.status)
        if error.status == 405:  # RFC 9110: say which methods the resource has
            own = [
                m
                for m in ("GET", "POST", "OPTIONS")
                if getattr(type(self), m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())
            ]
            self.set_header("Allow", ", ".join(own))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.log_fields.setdefault("error", error.code or error.type)
        self.finish(dumps(self.error_body(error)))

    def error_body(self, error: ApiError) -> dict:
        """The error object in this route's wire format (OpenAI's unless a format's handler overrides it)."""
        return error.to_dict()

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
    """Every path no route matches: a JSON 404, never Tornado's HTML page."""

    def prepare(self) -> None:
        super().prepare()
        raise PathNotFound(self.request.path)
