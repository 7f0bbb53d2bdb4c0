"""What a generation tells its caller, and the handle that carries it across threads.

A generation produces, in this order: :class:`Started`, :class:`TextDelta` *, then
:class:`Finished` or :class:`Failed`. The device thread produces them; the caller reads
them on its asyncio loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ggufd.errors import ApiError


@dataclass(frozen=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability (and its most likely alternatives), when asked for."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[tuple[str, tuple[int, ...], float], ...] = ()


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ApiError


class Generation:
    """The handle a caller holds for one generation.

    Events arrive on the caller's loop; :meth:`cancel` may be called from any thread and
    stops the work at the next token, between prompt batches, or before it starts.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancel = threading.Event()
        self.done = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the caller reads events on."""
        return self._loop

    def emit(self, event) -> None:
        """Thread-safe: queue an event for the loop."""
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def put(self, event) -> None:
        """On the caller's loop: queue an event."""
        self._events.put_nowait(event)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> list:
        """``async for events in generation``: each item is every event available at that moment."""
        if self.done:
            raise StopAsyncIteration
        return await self.next_events()

    async def next_events(self) -> list:
        """Wait for at least one event; return every event available now (fewer writes under load)."""
        events = [await self._events.get()]
        while not self._events.empty():
            events.append(self._events.get_nowait())
        if isinstance(events[-1], (Finished, Failed)):
            self.done = True
        return events


def deliver_events(pairs: Iterable[tuple[Generation, object]]) -> None:
    """Thread-safe: queue several generations' events with one wake-up of their loop."""
    pairs = list(pairs)
    if pairs:
        pairs[0][0].loop.call_soon_threadsafe(_put_all, pairs)


def _put_all(pairs) -> None:
    for generation, event in pairs:
        generation.put(event)
