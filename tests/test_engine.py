"""The engine on the tiny model, without HTTP: events, cancellation, queueing, failures."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from ggufd.config import LlamaSettings
from ggufd.engine import Engine, Failed, Finished, Generation, Started, TextDelta
from ggufd.gguf_metadata import read_metadata
from ggufd.types import ChatPrompt, GenerationRequest, ModelInfo, ModelSpec, SamplingParams

PROMPT = ChatPrompt(text="<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
GREEDY = SamplingParams(temperature=0)


def model_info(path: Path, model_id: str = "tiny") -> ModelInfo:
    return ModelInfo(spec=ModelSpec(id=model_id, path=path), metadata=read_metadata(path), family="gguf-template")


def make_engine(n_ctx: int = 256) -> Engine:
    return Engine(settings_for=lambda info: LlamaSettings(n_ctx=n_ctx, n_threads=1))


async def collect(generation: Generation) -> list:
    events = []
    while not generation.done:
        events.extend(await generation.next_events())
    return events


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def run(coro):
    return asyncio.run(coro)


def test_events_come_in_order(tiny_model):
    async def main():
        engine = make_engine()
        events = await collect(engine.start(model_info(tiny_model), GenerationRequest(PROMPT, GREEDY, max_tokens=10)))
        await engine.close()
        return events

    events = run(main())
    assert isinstance(events[0], Started) and events[0].prompt_tokens > 5
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "length" and events[-1].completion_tokens == 10
    assert all(isinstance(e, TextDelta) for e in events[1:-1]) and text_of(events)


def test_cancel_stops_within_one_token(tiny_model):
    """Cancelling from the worker's own emit (the earliest possible moment) stops at the next token."""

    class CancelAfter(Generation):
        def __init__(self, loop, after):
            super().__init__(loop)
            self.after, self.seen = after, 0

        def emit(self, event):
            if isinstance(event, TextDelta):
                self.seen += 1
                if self.seen == self.after:
                    self.cancel()
            super().emit(event)

    async def main():
        engine = make_engine()
        worker = engine.worker(model_info(tiny_model))
        generation = CancelAfter(asyncio.get_running_loop(), after=5)
        worker.submit(generation, GenerationRequest(PROMPT, GREEDY, max_tokens=200))
        events = await collect(generation)
        await engine.close()
        return events

    events = run(main())
    finished = events[-1]
    assert finished.reason == "cancelled"
    # 5 tokens produced text; at most one more was sampled before the flag was seen.
    assert 5 <= finished.completion_tokens <= 6


def test_cancelled_before_start_never_runs(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        blocker = threading.Event()
        worker = engine.worker(info)
        worker._executor.submit(blocker.wait)  # occupy the model's thread
        generation = engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=5))
        generation.cancel()
        blocker.set()
        events = await collect(generation)
        await engine.close()
        return events

    assert run(main()) == [Finished("cancelled", 0, 0)]


def test_concurrent_generations_queue_and_match_solo_output(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        solo = text_of(await collect(engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=40))))
        await asyncio.sleep(0.05)  # the worker reports the finished job back to the loop
        generations = [engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=40)) for _ in range(6)]
        assert engine.status()["tiny"]["pending"] == 6
        results = await asyncio.gather(*(collect(g) for g in generations))
        await asyncio.sleep(0.01)
        pending_after = engine.status()["tiny"]["pending"]
        await engine.close()
        return solo, [text_of(r) for r in results], pending_after

    solo, texts, pending_after = run(main())
    assert texts == [solo] * 6
    assert pending_after == 0


def test_context_length_exceeded_is_an_event(tiny_model):
    async def main():
        engine = make_engine(n_ctx=64)
        long_prompt = ChatPrompt(text="hello " * 100)
        events = await collect(engine.start(model_info(tiny_model), GenerationRequest(long_prompt, GREEDY, max_tokens=None)))
        over = await collect(engine.start(model_info(tiny_model), GenerationRequest(PROMPT, GREEDY, max_tokens=60)))
        await engine.close()
        return events, over

    events, over = run(main())
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].error.code == "context_length_exceeded" and events[0].error.status == 400
    assert isinstance(over[0], Failed) and over[0].error.code == "context_length_exceeded"


def test_model_that_fails_to_load_answers_500_without_crashing(tiny_model, tmp_path):
    import gguf_factory

    broken = tmp_path / "broken.gguf"
    # Valid header and metadata, tensor data cut off: discovery accepts it, llama.cpp refuses it.
    data = tiny_model.read_bytes()
    broken.write_bytes(data[: len(data) - 1000])

    async def main():
        engine = make_engine()
        info = ModelInfo(spec=ModelSpec(id="broken", path=broken), metadata=read_metadata(tiny_model), family="generic")
        first = await collect(engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=5)))
        second = await collect(engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=5)))
        good = await collect(engine.start(model_info(tiny_model), GenerationRequest(PROMPT, GREEDY, max_tokens=5)))
        await engine.close()
        return first, second, good

    first, second, good = run(main())
    for events in (first, second):
        assert len(events) == 1 and isinstance(events[0], Failed)
        assert events[0].error.status == 500 and "broken" in events[0].error.message
        assert str(broken) not in events[0].error.message
    assert isinstance(good[-1], Finished) and good[-1].completion_tokens == 5
    assert gguf_factory  # the factory module is importable alongside


def test_close_frees_models(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        await collect(engine.start(info, GenerationRequest(PROMPT, GREEDY, max_tokens=2)))
        loaded = engine.status()["tiny"]["loaded"]
        worker = engine.worker(info)
        await engine.close()
        return loaded, worker.loaded

    loaded, after = run(main())
    assert loaded is True and after is False
