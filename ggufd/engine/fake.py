"""An engine with no llama.cpp behind it, for in-process tests of the HTTP and protocol layers.

:class:`FakeEngine` implements :class:`~ggufd.engine.contract.EngineClient` with scripted
answers: each generation replays the pieces its ``reply`` function gives for the request, as the
real engine would emit them (``Started``, ``TextDelta`` per piece, ``TokenLogprob`` when asked,
then ``Finished``), honouring ``max_tokens`` (one piece = one token), the request's stop strings
(the text up to the first stop), cancellation, and an injected failure. It runs on the caller's
event loop, so a test can drive ``make_app`` with the real clients and no model file.

A reasoning budget (``max_reasoning_tokens`` with ``prompt.reasoning`` set, no grammar) is
honoured as the real engine does, with :class:`~ggufd.engine.reasoning_budget.ReasoningBudget`
counting the pieces: after ``max_reasoning_tokens`` pieces inside the reasoning (budget 0 with
``opened``: before the first piece) the syntax's ``closing_text`` comes as one piece (one token,
never cut by a stop string; matching starts afresh after it), then the script goes on after its
own reasoning end: the rest of the scripted reasoning, up to and including its end marker, is
skipped, and the text after the marker in that piece (if any) comes as a piece. With a grammar the
budget is not applied. ``max_tokens`` counts every piece, the close included.

Example::

    engine = FakeEngine(reply=lambda request: ["Hel", "lo", "!"])
    state = AppState(config=config, registry=registry, plugins=plugins, engine=engine)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ggufd.engine.devices import DeviceExecutors
from ggufd.engine.events import Failed, Finished, Generation, Started, TextDelta, TokenLogprob
from ggufd.engine.gpu import GpuReport
from ggufd.engine.reasoning_budget import ReasoningBudget
from ggufd.errors import ApiError, ContextLengthExceeded, Overloaded, ServerError
from ggufd.types import GenerationRequest, ModelInfo


@dataclass(frozen=True)
class FakeSettings:
    n_ctx: int = 2048
    parallel: int = 4
    embedding: bool = False


def default_reply(request: GenerationRequest) -> list[str]:
    return ["Hello", " from", " the", " fake", " engine", "."]


@dataclass
class FakeEngine:
    """Scripted generations; every call is recorded in :attr:`requests`.

    :param reply: the pieces (one per token) a request's answer consists of.
    :param fail_after: emit a ``Failed(fail_with)`` after this many pieces (None: never).
    :param queue_limit: ``generate`` raises Overloaded once this many generations are unfinished.
    :param delay: seconds between pieces (lets a test disconnect or cancel mid-stream).
    :param gate: when set, each generation emits its first ``gate_after`` pieces and holds the
        rest until the event is set (from any thread): a test that received those pieces while
        the gate was closed has proof that they streamed before the end, without timing.
    :param embedding_models: ids of the models that are embedding models.
    """

    reply: Callable[[GenerationRequest], list[str]] = default_reply
    fail_after: int | None = None
    fail_with: ApiError = field(default_factory=lambda: ServerError("The model failed."))
    queue_limit: int = 32
    delay: float = 0.0
    gate: threading.Event | None = None
    gate_after: int = 1
    n_ctx: int = 2048
    embedding_models: frozenset[str] = frozenset()
    requests: list[GenerationRequest] = field(default_factory=list)
    cancelled: int = 0
    _running: set[Generation] = field(default_factory=set)
    _loaded: set[str] = field(default_factory=set)
    _devices: DeviceExecutors = field(default_factory=DeviceExecutors)

    # --- generation

    def generate(self, info: ModelInfo, request: GenerationRequest) -> Generation:
        if len(self._running) >= self.queue_limit:
            raise Overloaded(
                f"The model '{info.id}' has {len(self._running)} requests waiting, its queue limit; try again shortly."
            )
        self.requests.append(request)
        generation = Generation(asyncio.get_running_loop())
        self._running.add(generation)
        self._loaded.add(info.id)
        task = asyncio.get_running_loop().create_task(self._run(generation, request))
        task.add_done_callback(lambda _: self._running.discard(generation))
        return generation

    async def _run(self, generation: Generation, request: GenerationRequest) -> None:
        try:
            await self._play(generation, request)
        except Exception:  # as the real engine: a bug is a generic 500, its details stay in the log
            generation.put(Failed(ServerError()))

    async def _play(self, generation: Generation, request: GenerationRequest) -> None:
        prompt_tokens = len(self._tokens(request.prompt.text))
        limit = request.max_tokens
        if prompt_tokens + (limit or 0) > self.n_ctx:
            generation.put(Failed(ContextLengthExceeded(self.n_ctx, prompt_tokens, limit)))
            return
        await asyncio.sleep(0)
        if generation.cancelled:
            generation.put(Finished("cancelled", 0, 0))
            self.cancelled += 1
            return
        generation.put(Started(prompt_tokens))
        text, produced, reason = "", 0, "stop"
        for piece, forced in self._budgeted(request, self.reply(request)):
            if limit is not None and produced >= limit:
                reason = "length"
                break
            if self.fail_after is not None and produced >= self.fail_after:
                generation.put(Failed(self.fail_with))
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None and produced >= self.gate_after:
                await self._wait_for_gate(generation)
            if generation.cancelled:
                generation.put(Finished("cancelled", prompt_tokens, produced))
                self.cancelled += 1
                return
            stop_at = None if forced else self._stop_position(text + piece, request.stop)
            produced += 1
            if stop_at is not None:
                if stop_at > len(text):
                    generation.put(TextDelta((text + piece)[len(text) : stop_at]))
                break
            text = "" if forced else text + piece  # a stop string never spans the forced close
            generation.put(TextDelta(piece))
            if request.logprobs is not None:
                generation.put(
                    TokenLogprob(
                        piece, tuple(piece.encode()), -0.5, ((piece, tuple(piece.encode()), -0.5),) * request.logprobs
                    )
                )
            await asyncio.sleep(0)
        generation.put(Finished(reason, prompt_tokens, produced))

    async def _wait_for_gate(self, generation: Generation) -> None:
        """Until :attr:`gate` is set or the generation is cancelled (polled: the event is a thread's)."""
        assert self.gate is not None
        while not self.gate.is_set() and not generation.cancelled:
            await asyncio.sleep(0.002)

    @staticmethod
    def _budgeted(request: GenerationRequest, pieces: Iterable[str]) -> Iterator[tuple[str, bool]]:
        """The script's pieces with the reasoning budget applied: (piece, written by the engine)."""
        syntax = request.prompt.reasoning
        script = iter(pieces)
        if request.max_reasoning_tokens is None or syntax is None or request.sampling.grammar:
            yield from ((piece, False) for piece in script)
            return
        budget = ReasoningBudget(syntax, request.max_reasoning_tokens)
        while not budget.due:
            piece = next(script, None)
            if piece is None:
                return
            yield piece, False
            budget.feed(piece)
            if budget.done:  # the script closed its reasoning or has none: no budget left to apply
                yield from ((piece, False) for piece in script)
                return
        yield syntax.closing_text, True
        end, tail = syntax.end, ""
        for piece in script:  # the rest of the scripted reasoning is skipped, its end marker too
            window = tail + piece
            at = window.find(end)
            if at >= 0:
                if window[at + len(end) :]:
                    yield window[at + len(end) :], False
                break
            tail = window[-(len(end) - 1) :] if len(end) > 1 else ""
        yield from ((piece, False) for piece in script)

    @staticmethod
    def _stop_position(text: str, stops: tuple[str, ...]) -> int | None:
        found = [text.find(stop) for stop in stops if stop and stop in text]
        return min(found) if found else None

    # --- the rest of the contract

    @staticmethod
    def _tokens(text: str) -> list[int]:
        return [len(word) for word in text.split()] or [0]

    async def tokenize(self, info: ModelInfo, text: str, add_bos: bool) -> list[int]:
        return ([1] if add_bos else []) + self._tokens(text)

    async def detokenize(self, info: ModelInfo, tokens: list[int]) -> str:
        return " ".join("x" * t for t in tokens)

    async def token_pieces(self, info: ModelInfo, tokens: list[int]) -> list[bytes]:
        """``x`` repeated per token id; an id of 255 or more is the lone byte 0xff (not UTF-8)."""
        return [b"\xff" if t >= 255 else b"x" * t for t in tokens]

    async def embed(self, info: ModelInfo, inputs: list) -> tuple[list[list[float]], int]:
        vectors = [[1.0, float(len(item)), 0.0] for item in inputs]
        return vectors, sum(len(self._tokens(i)) if isinstance(i, str) else len(i) for i in inputs)

    async def load(self, info: ModelInfo) -> None:
        self._loaded.add(info.id)

    async def unload(self, model_id: str) -> bool:
        self._loaded.discard(model_id)
        return True

    def settings_for(self, info: ModelInfo) -> FakeSettings:
        embedding = info.id in self.embedding_models
        return FakeSettings(n_ctx=self.n_ctx, parallel=1 if embedding else 4, embedding=embedding)

    def is_embedding_model(self, info: ModelInfo) -> bool:
        return info.id in self.embedding_models

    def status(self) -> dict[str, dict]:
        return {
            model_id: {"state": "loaded", "device": "cpu", "parallel": 4, "pending": 0, "memory_estimate_bytes": 0}
            for model_id in sorted(self._loaded)
        }

    def loaded_models(self) -> list[str]:
        return sorted(self._loaded)

    def pending(self) -> int:
        return len(self._running)

    @property
    def gpu_available(self) -> bool:
        return False

    def gpu_report(self) -> GpuReport:
        return GpuReport(offload=False)

    @property
    def devices(self) -> DeviceExecutors:
        return self._devices

    def update_models(self, models: Mapping[str, ModelInfo], settings_for: Any, limits: Any) -> None:
        self._loaded &= set(models)

    def check_files(self) -> list[str]:
        return []

    async def close(self) -> None:
        for generation in list(self._running):
            generation.cancel()
