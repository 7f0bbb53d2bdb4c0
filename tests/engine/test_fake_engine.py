"""FakeEngine's gate: a generation holds its pieces after the first ``gate_after`` until the
test sets the event (so "this streamed before the end" is provable without timing)."""

from __future__ import annotations

import asyncio
import threading

from inprocess import fake_model

from ggufd.engine.events import Finished, Started, TextDelta
from ggufd.engine.fake import FakeEngine
from ggufd.types import ChatPrompt, GenerationRequest, SamplingParams

REQUEST = GenerationRequest(prompt=ChatPrompt("Hi"), sampling=SamplingParams(), max_tokens=None)
PIECES = ["a", "b", "c", "d"]


async def read_until(generation, count: int) -> list:
    """The events until ``count`` text pieces (or the end) arrived."""
    events: list = []
    while sum(isinstance(e, TextDelta) for e in events) < count and not generation.done:
        events += await generation.next_events()
    return events


async def settle() -> None:
    """Let the engine run as far as it can (it polls the gate: give it many turns)."""
    for _ in range(50):
        await asyncio.sleep(0.002)


def test_the_gate_holds_the_pieces_after_the_first_ones_until_it_is_set():
    gate = threading.Event()
    engine = FakeEngine(reply=lambda request: list(PIECES), gate=gate, gate_after=2)

    async def main():
        generation = engine.generate(fake_model("m"), REQUEST)
        first = await read_until(generation, 2)
        await settle()
        assert generation._events.empty() and engine.pending() == 1  # held: nothing more, not finished
        threading.Thread(target=gate.set).start()  # any thread may open it
        rest = await read_until(generation, 99)
        return first, rest

    first, rest = asyncio.run(main())
    assert isinstance(first[0], Started) and [e.text for e in first if isinstance(e, TextDelta)] == ["a", "b"]
    assert [e.text for e in rest if isinstance(e, TextDelta)] == ["c", "d"]
    assert rest[-1] == Finished("stop", 1, 4)


def test_a_generation_held_at_the_gate_can_be_cancelled():
    engine = FakeEngine(reply=lambda request: list(PIECES), gate=threading.Event(), gate_after=1)

    async def main():
        generation = engine.generate(fake_model("m"), REQUEST)
        await read_until(generation, 1)
        generation.cancel()
        return await read_until(generation, 99)

    assert asyncio.run(main())[-1] == Finished("cancelled", 1, 1)
    assert engine.cancelled == 1 and engine.pending() == 0


def test_no_gate_no_holding():
    engine = FakeEngine(reply=lambda request: list(PIECES))

    async def main():
        return await read_until(engine.generate(fake_model("m"), REQUEST), 99)

    assert [e.text for e in asyncio.run(main()) if isinstance(e, TextDelta)] == PIECES
