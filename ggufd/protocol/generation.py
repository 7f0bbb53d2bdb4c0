"""The contract between a wire format and the one generation loop (``ggufd.api.generation``).

A format's module turns a request body into a :class:`Plan`: the model, the engine request,
the :class:`~ggufd.protocol.answer.AnswerAssembler` for the answer and an :class:`Output` that
renders it on the format's wire. The loop does the rest the same way for every format:
admission errors before the first byte, events into the assembler, pieces into the output,
client disconnect -> cancel, a failure after the 200 -> the output's error event.

Adding a wire format is one module that builds a Plan and implements Output, plus a thin
handler; nothing else changes shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ggufd.errors import ApiError
from ggufd.plugins import Plugins
from ggufd.protocol.answer import AnswerAssembler, Outcome, Piece
from ggufd.protocol.options import ServerLimits
from ggufd.registry import ModelRegistry
from ggufd.types import GenerationRequest, ModelInfo


class Output(Protocol):
    """How one format shows one answer: as stream events, or as one body at the end."""

    #: the Content-Type of a streamed answer
    media_type: str

    def begin(self) -> bytes:
        """The stream's first events, before any generated text (may be empty)."""
        ...

    def piece(self, piece: Piece) -> bytes:
        """The events for what one batch added (may be empty)."""
        ...

    def end(self, outcome: Outcome) -> bytes:
        """The stream's last events: held content or tool calls, the finish, usage, terminator."""
        ...

    def error(self, error: ApiError) -> bytes:
        """A failure after the stream started, as this format's error event."""
        ...

    def body(self, outcome: Outcome) -> dict:
        """The whole answer of a request that does not stream."""
        ...


@dataclass(frozen=True)
class Served:
    """What a format's parser may consult: the models, the plugins and the operator's limits."""

    registry: ModelRegistry
    plugins: Plugins
    limits: ServerLimits = ServerLimits()
    log_content: bool = False  # prompts and answers may go into the request log line
    #: the server's chat_template_kwargs / reasoning_effort / max_reasoning_tokens defaults
    chat_defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """A parsed request, ready for the generation loop."""

    model: ModelInfo
    request: GenerationRequest
    output: Output
    answer: AnswerAssembler
    #: fields for the request's log line (the model id; the prompt when ``log_content`` is on)
    log_fields: dict[str, Any] = field(default_factory=dict)
    #: request fields that had no effect on this answer (the ``X-Ggufd-Ignored`` header)
    ignored: tuple[str, ...] = ()

    @property
    def stream(self) -> bool:
        return self.request.stream
