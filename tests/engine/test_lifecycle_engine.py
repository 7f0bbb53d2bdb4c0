"""The engine on tiny generated models, without HTTP: events, cancellation in every state,
queueing, loading, eviction, memory budgets, keep_alive, reload."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import gguf_factory
import pytest

from ggufd.config import LlamaSettings
from ggufd.engine import batch as engine_batch
from ggufd.engine.events import Finished, Generation, Started, TextDelta
from ggufd.engine.lifecycle import Engine, Limits, ModelState
from ggufd.engine.model import load_model
from ggufd.errors import ModelLoadFailed, Overloaded
from ggufd.gguf_metadata import read_metadata
from ggufd.types import ChatPrompt, GenerationRequest, ModelInfo, ModelSpec, SamplingParams

PROMPT = ChatPrompt(text="<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
GREEDY = SamplingParams(temperature=0)


def model_info(path: Path, model_id: str = "tiny", **options) -> ModelInfo:
    return ModelInfo(
        spec=ModelSpec(id=model_id, path=path, options=options), metadata=read_metadata(path), family="gguf-template"
    )


def make_engine(n_ctx: int = 256, n_batch: int = 512, loader=load_model, parallel: int = 1, **limits) -> Engine:
    settings = LlamaSettings(n_ctx=n_ctx, n_batch=n_batch, n_threads=1, parallel=parallel)
    return Engine(settings_for=lambda info: settings, limits=Limits(**limits), gpu_available=False, loader=loader)


def request(max_tokens=10, prompt=PROMPT) -> GenerationRequest:
    return GenerationRequest(prompt, GREEDY, max_tokens=max_tokens)


async def collect(generation: Generation) -> list:
    events = []
    while not generation.done:
        events.extend(await generation.next_events())
    return events


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture(scope="module")
def three_models(tmp_path_factory, tiny_model) -> list[Path]:
    folder = tmp_path_factory.mktemp("three")
    paths = []
    for i, name in enumerate(("a", "b", "c")):
        paths.append(gguf_factory.write_tiny_llama(folder / f"{name}.gguf", seed=i))
    return paths


def test_events_come_in_order(tiny_model):
    async def main():
        engine = make_engine()
        events = await collect(engine.start(model_info(tiny_model), request(10)))
        await engine.close()
        return events

    events = asyncio.run(main())
    assert isinstance(events[0], Started) and events[0].prompt_tokens > 5
    assert isinstance(events[-1], Finished) and events[-1].reason == "length" and events[-1].completion_tokens == 10
    assert all(isinstance(e, TextDelta) for e in events[1:-1]) and text_of(events)


VICTIM = "\x00victim"  # a stop string that marks the request cancel_after() watches


def cancel_after(monkeypatch, after: int) -> dict:
    """Cancel the request whose stop list holds VICTIM from the worker thread, right after its
    ``after``-th token went through the text assembler — the earliest possible moment."""
    watched: dict = {"generation": None, "seen": 0}

    class Watching(engine_batch.TextAssembler):
        def feed(self, data: bytes) -> str:
            text = super().feed(data)
            if VICTIM in self._stops:
                watched["seen"] += 1
                if watched["seen"] == after:
                    watched["generation"].cancel()
            return text

    monkeypatch.setattr(engine_batch, "TextAssembler", Watching)
    return watched


def test_cancel_stops_within_one_token(tiny_model, monkeypatch):
    watched = cancel_after(monkeypatch, 5)

    async def main():
        engine = make_engine()
        generation = watched["generation"] = engine.start(
            model_info(tiny_model), GenerationRequest(PROMPT, GREEDY, max_tokens=200, stop=(VICTIM,))
        )
        events = await collect(generation)
        await engine.close()
        return events

    finished = asyncio.run(main())[-1]
    assert finished.reason == "cancelled"
    assert finished.completion_tokens == 5  # no token after the one that saw the cancel


def test_cancelled_while_waiting_for_the_device_never_runs(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        await engine.load(info)
        blocker = threading.Event()
        engine._devices.executor("cpu").submit(blocker.wait)  # occupy the device thread
        generation = engine.start(info, request(5))
        await asyncio.sleep(0.05)
        generation.cancel()
        blocker.set()
        events = await collect(generation)
        await engine.close()
        return events

    assert asyncio.run(main()) == [Finished("cancelled", 0, 0)]


def test_cancel_during_prompt_processing_stops_between_batches(tiny_model, monkeypatch):
    import llama_cpp

    calls = []
    original = llama_cpp.llama_decode

    def counting_decode(ctx, batch):
        calls.append(batch.n_tokens)
        if len(calls) == 2:
            generation.cancel()
        return original(ctx, batch)

    async def main():
        nonlocal generation
        engine = make_engine(n_ctx=1024, n_batch=16)
        info = model_info(tiny_model)
        await engine.load(info)
        monkeypatch.setattr(llama_cpp, "llama_decode", counting_decode)
        generation = engine.start(info, request(5, ChatPrompt(text="hello world " * 200)))
        events = await collect(generation)
        await engine.close()
        return events

    generation = None
    events = asyncio.run(main())
    assert isinstance(events[0], Started) and events[0].prompt_tokens > 300
    assert events[-1].reason == "cancelled" and events[-1].completion_tokens == 0
    assert calls == [16, 16]  # ~20 chunks were needed; it stopped after the second


def test_concurrent_generations_queue_and_match_solo_output(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        solo = text_of(await collect(engine.start(info, request(40))))
        generations = [engine.start(info, request(40)) for _ in range(6)]
        assert engine.pending() == 6
        results = await asyncio.gather(*(collect(g) for g in generations))
        pending_after = engine.pending()
        await engine.close()
        return solo, [text_of(r) for r in results], pending_after

    solo, texts, pending_after = asyncio.run(main())
    assert texts == [solo] * 6 and pending_after == 0


def test_queue_limit_gives_overloaded(tiny_model):
    async def main():
        engine = make_engine(max_queue=2)
        info = model_info(tiny_model)
        running = [engine.start(info, request(50)) for _ in range(3)]  # 1 running + 2 queued
        with pytest.raises(Overloaded) as err:
            engine.start(info, request(5))
        await asyncio.gather(*(collect(g) for g in running))
        again = await collect(engine.start(info, request(2)))  # room again
        await engine.close()
        return err.value, again

    error, again = asyncio.run(main())
    assert error.status == 503 and error.code == "server_is_overloaded" and error.headers["Retry-After"]
    assert again[-1].completion_tokens == 2


def test_context_length_exceeded_is_an_event(tiny_model):
    async def main():
        engine = make_engine(n_ctx=64)
        info = model_info(tiny_model)
        events = await collect(engine.start(info, request(None, ChatPrompt(text="hello " * 100))))
        over = await collect(engine.start(info, request(60)))
        await engine.close()
        return events, over

    events, over = asyncio.run(main())
    assert len(events) == 1 and events[0].error.code == "context_length_exceeded" and events[0].error.status == 400
    assert over[0].error.code == "context_length_exceeded"


def test_model_that_fails_to_load_answers_500_without_crashing(tiny_model, tmp_path):
    broken = tmp_path / "broken.gguf"
    data = tiny_model.read_bytes()
    broken.write_bytes(data[: len(data) - 1000])  # header fine, tensor data cut off: llama.cpp refuses it

    async def main():
        engine = make_engine()
        info = ModelInfo(spec=ModelSpec(id="broken", path=broken), metadata=read_metadata(tiny_model), family="generic")
        first = await collect(engine.start(info, request(5)))
        second = await collect(engine.start(info, request(5)))
        good = await collect(engine.start(model_info(tiny_model), request(5)))
        state = engine.status()["broken"]
        await engine.close()
        return first, second, good, state

    first, second, good, state = asyncio.run(main())
    for events in (first, second):
        assert len(events) == 1 and events[0].error.status == 500 and "broken" in events[0].error.message
        assert str(broken) not in events[0].error.message
    assert good[-1].completion_tokens == 5
    assert state["state"] == "failed"


def test_concurrent_requests_share_one_load(tiny_model):
    loads = []

    def counting_loader(*args):
        loads.append(args[0])
        return load_model(*args)

    async def main():
        engine = make_engine(loader=counting_loader)
        info = model_info(tiny_model)
        results = await asyncio.gather(*(collect(engine.start(info, request(3))) for _ in range(5)))
        await engine.close()
        return results

    results = asyncio.run(main())
    assert len(loads) == 1 and all(r[-1].completion_tokens == 3 for r in results)


def test_max_loaded_models_evicts_least_recently_used(three_models):
    async def main():
        engine = make_engine(max_loaded_models=2)
        a, b, c = (model_info(p, p.stem) for p in three_models)
        await collect(engine.start(a, request(2)))
        await collect(engine.start(b, request(2)))
        await collect(engine.start(a, request(2)))  # a is now more recent than b
        await collect(engine.start(c, request(2)))
        loaded = engine.loaded_models()
        await engine.close()
        return loaded

    assert asyncio.run(main()) == ["a", "c"]


def test_busy_model_is_never_evicted(three_models):
    async def main():
        engine = make_engine(max_loaded_models=1)
        a, b, _ = (model_info(p, p.stem) for p in three_models)
        long = engine.start(a, request(200))
        short = engine.start(b, request(2))  # must wait until a is idle, then evict it
        events_a = await collect(long)
        events_b = await collect(short)
        loaded = engine.loaded_models()
        await engine.close()
        return events_a, events_b, loaded

    events_a, events_b, loaded = asyncio.run(main())
    assert events_a[-1].reason == "length" and events_a[-1].completion_tokens == 200
    assert events_b[-1].completion_tokens == 2 and loaded == ["b"]


def test_memory_budget_evicts_and_refuses_models_that_never_fit(three_models):
    async def main():
        probe = make_engine()
        a, b, c = (model_info(p, p.stem) for p in three_models)
        need = probe._new_slot(a).need_bytes
        engine = make_engine(memory_budget={"*": int(need * 2.5)})
        for info in (a, b, c):
            await collect(engine.start(info, request(2)))
        loaded = engine.loaded_models()
        tiny_budget = make_engine(memory_budget={"cpu": need // 2})
        refused = await collect(tiny_budget.start(a, request(2)))
        await engine.close()
        await tiny_budget.close()
        return loaded, refused

    loaded, refused = asyncio.run(main())
    assert loaded == ["b", "c"]
    assert refused[0].error.status == 400 and refused[0].error.code == "model_too_large"


def test_keep_alive_unloads_idle_models(tiny_model, three_models):
    async def main():
        engine = make_engine(keep_alive=0.2)
        now = model_info(three_models[0], "zero", keep_alive=0)
        later = model_info(tiny_model)
        await collect(engine.start(now, request(2)))
        await collect(engine.start(later, request(2)))
        await asyncio.sleep(0.05)
        first = engine.loaded_models()
        await asyncio.sleep(0.4)
        second = engine.loaded_models()
        await engine.close()
        return first, second

    first, second = asyncio.run(main())
    assert first == ["tiny"] and second == []


def test_removed_model_is_unloaded_when_idle(three_models):
    async def main():
        engine = make_engine()
        a, b, _ = (model_info(p, p.stem) for p in three_models)
        await collect(engine.start(b, request(2)))
        running = engine.start(a, request(100))
        await asyncio.sleep(0)
        engine.update_models({"b": b}, engine._settings_for, engine.limits)  # "a" disappeared
        events = await collect(running)  # its running request still completes
        await asyncio.sleep(0.1)
        state = engine.status()
        await engine.close()
        return events, state

    events, state = asyncio.run(main())
    assert events[-1].reason == "length" and events[-1].completion_tokens == 100
    assert "a" not in state and state["b"]["state"] == "loaded"


def test_close_frees_models(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        await collect(engine.start(info, request(2)))
        before = engine.loaded_models()
        await engine.close()
        return before, engine.loaded_models()

    assert asyncio.run(main()) == (["tiny"], [])


def test_a_load_failure_without_a_known_reason_points_to_the_log(tiny_model):
    def failing_loader(*args):
        raise RuntimeError("/models/tiny.gguf: something llama.cpp did not explain")

    async def main():
        engine = make_engine(loader=failing_loader)
        events = await collect(engine.start(model_info(tiny_model), request(5)))
        state = engine.status()["tiny"]
        await engine.close()
        return events, state

    events, state = asyncio.run(main())
    error = events[-1].error
    assert isinstance(error, ModelLoadFailed) and error.status == 500 and error.type == "server_error"
    assert error.message == "The model 'tiny' failed to load; see the server log." and error.reason is None
    assert state["state"] == "failed" and state["error"] == error.message


def test_status_shows_each_state_as_its_plain_string(tiny_model):
    async def main():
        engine = make_engine()
        info = model_info(tiny_model)
        await engine.load(info)
        loaded = engine.status()
        await engine.unload(info.id)
        unloaded = engine.status()
        await engine.close()
        return loaded, unloaded

    loaded, unloaded = asyncio.run(main())
    assert type(loaded["tiny"]["state"]) is str and loaded["tiny"]["state"] == "loaded"
    assert json.loads(json.dumps(unloaded))["tiny"]["state"] == "unloaded"
    assert [state.value for state in ModelState] == ["unloaded", "loading", "loaded", "unloading", "failed"]
