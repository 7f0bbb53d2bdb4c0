"""The one generation loop, and the handlers of the formats that generate text.

:class:`GenerationHandler` drives one generation for any wire format, from a
:class:`~ggufd.protocol.generation.Plan` the format's protocol module built:

1. admission: queue the generation and wait (up to ``queue_timeout``) until the engine accepted
   the prompt, so that errors such as ``context_length_exceeded`` or a failed load are answered
   with their status before the first byte;
2. streamed: the output's first events, then per batch of engine events what the answer gained,
   flushed; at the end the output's last events. Not streamed: one body at the end;
3. a client that disconnects cancels its generation (within one token); a failure after the 200
   is the output's error event; a generation the server stopped (shutdown deadline) is a 503
   before the 200 and an error event after it.

A format's handler is then a few lines: build the plan, ``await self.generate(plan)``.
"""

from __future__ import annotations

import asyncio
import time

from tornado.iostream import StreamClosedError

from ggufd.api.base import BaseHandler
from ggufd.engine.contract import GenerationHandle
from ggufd.engine.events import Failed, Finished, Started
from ggufd.errors import Overloaded, WrongModelType
from ggufd.protocol import openai_chat, openai_completions
from ggufd.protocol.answer import AnswerAssembler
from ggufd.protocol.generation import Plan

#: names the request fields that were accepted but had no effect on the answer
IGNORED_HEADER = "X-Ggufd-Ignored"
#: at most this many names, each cut to 64 characters (unknown fields are the client's to name)
MAX_IGNORED, MAX_NAME = 32, 64


def ignored_header(names: tuple[str, ...]) -> str:
    """The header's value: the names, comma-separated; ``...`` when some were left out. Names are
    cut to printable ASCII (a header carries no more)."""
    shown = [name[:MAX_NAME].encode("ascii", "replace").decode("ascii") for name in names[:MAX_IGNORED]]
    shown = ["".join(c if c.isprintable() and c != "," else "?" for c in name) for name in shown]
    return ", ".join(shown + (["..."] if len(names) > MAX_IGNORED else []))


def stopped_by_server() -> Overloaded:
    """The server cancelled the request (shutdown deadline, or its model's file was written in place
    under mapped weights) while its client still waited."""
    return Overloaded(
        "The server stopped the request before it finished (shutting down, or its model file changed); try again.",
        retry_after=5,
    )


class GenerationHandler(BaseHandler):
    """Runs a :class:`Plan`; subclasses only build it."""

    generation: GenerationHandle | None = None
    client_gone = False

    def cancel_generation(self) -> None:
        """Stop the generation at its next token (the server's shutdown deadline)."""
        if self.generation is not None:
            self.generation.cancel()

    def on_connection_close(self) -> None:
        self._client_left()
        super().on_connection_close()

    async def generate(self, plan: Plan) -> None:
        self.state.active.add(self)
        try:
            await self._generate(plan)
        finally:
            self.state.active.discard(self)

    async def _generate(self, plan: Plan) -> None:
        self.log_fields.update(plan.log_fields)
        if plan.ignored:
            self.set_header(IGNORED_HEADER, ignored_header(plan.ignored))
            self.log_fields["ignored"] = list(plan.ignored)
        engine = self.state.engine
        if engine.is_embedding_model(plan.model):
            raise WrongModelType(plan.model.id, wanted="chat")
        self.generation = engine.generate(plan.model, plan.request)
        events = await self._admitted(plan)
        if events is None:
            return
        if plan.stream:
            await self._stream(plan, events)
        else:
            await self._collect(plan, events)

    async def _admitted(self, plan: Plan) -> list | None:
        """Wait until the prompt is accepted -> the events after ``Started`` (None: the client left)."""
        assert self.generation is not None
        timeout = self.state.config.queue_timeout or None
        try:
            events = await asyncio.wait_for(self.generation.next_events(), timeout)
        except TimeoutError:
            self.generation.cancel()
            raise Overloaded(
                f"The request waited more than {timeout:g} s for the model '{plan.model.id}'; try again shortly."
            ) from None
        first = events[0]
        if isinstance(first, Failed):
            raise first.error
        if isinstance(first, Finished):  # cancelled while queued
            self._note_finish(first)
            if self.client_gone:
                self.log_request()
                return None
            raise stopped_by_server()
        assert isinstance(first, Started)
        self.log_fields["prompt_tokens"] = first.prompt_tokens
        return events[1:]

    async def _collect(self, plan: Plan, events: list) -> None:
        assert self.generation is not None
        answer = plan.answer
        while True:
            self._note_text(answer, events)
            if answer.failed is not None:
                raise answer.failed.error
            if answer.finished is not None:
                self._note_finish(answer.finished)
                if answer.finished.reason == "cancelled":
                    if self.client_gone:
                        self.log_request()
                        return
                    raise stopped_by_server()
                outcome = answer.outcome()
                self.log_fields["finish_reason"] = outcome.reason  # "tool_calls" where the engine said "stop"
                self.write_json(plan.output.body(outcome))
                return
            events = await self.generation.next_events()

    async def _stream(self, plan: Plan, events: list) -> None:
        assert self.generation is not None
        output, answer = plan.output, plan.answer
        self.set_header("Content-Type", output.media_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(output.begin())
            await self.flush()
            while True:
                piece = self._note_text(answer, events)
                if answer.failed is not None:
                    self.log_fields["error"] = answer.failed.error.code or answer.failed.error.type
                    self.finish(output.error(answer.failed.error))
                    return
                self.write(output.piece(piece))
                if answer.finished is not None:
                    self._note_finish(answer.finished)
                    if answer.finished.reason == "cancelled":
                        if not self.client_gone:
                            self.finish(output.error(stopped_by_server()))
                        self.log_request()
                        return
                    outcome = answer.outcome()
                    self.log_fields["finish_reason"] = outcome.reason
                    self.finish(output.end(outcome))
                    return
                if answer.raw_text:
                    await self.flush()
                events = await self.generation.next_events()
        except StreamClosedError:
            self._client_left()
            await self._wait_until_stopped()

    def _note_text(self, answer: AnswerAssembler, events: list):
        """Feed a batch to the answer; note time to first token and (log_content) the text."""
        piece = answer.add(events)
        if answer.raw_text:
            if "ttft_ms" not in self.log_fields:
                self.log_fields["ttft_ms"] = round((time.perf_counter() - self.started) * 1000, 2)
            if self.state.config.log_content:
                self.log_fields["completion"] = self.log_fields.get("completion", "") + answer.raw_text
        return piece

    def _note_finish(self, finished: Finished) -> None:
        self.log_fields.update(finish_reason=finished.reason, completion_tokens=finished.completion_tokens)

    async def _wait_until_stopped(self) -> None:
        """After the client left: the worker stops within a token; record how the generation ended."""
        assert self.generation is not None
        while not self.generation.done:
            for event in await self.generation.next_events():
                if isinstance(event, Finished):
                    self._note_finish(event)
        self.log_request()

    def _client_left(self) -> None:
        self.client_gone = True
        if self.generation is not None and not self.generation.done:
            self.generation.cancel()
            self.log_fields["client_disconnected"] = True


class ChatCompletionsHandler(GenerationHandler):
    """``POST /v1/chat/completions``."""

    endpoint = "chat.completions"

    async def post(self) -> None:
        served = self.state.served()
        await self.generate(await self.parsed_body(lambda body: openai_chat.plan(body, served)))


class CompletionsHandler(GenerationHandler):
    """``POST /v1/completions``: the legacy text completions API (a raw prompt, no chat format)."""

    endpoint = "completions"

    async def post(self) -> None:
        served = self.state.served()
        await self.generate(await self.parsed_body(lambda body: openai_completions.plan(body, served)))
