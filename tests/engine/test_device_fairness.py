"""Models sharing a device take turns step by step (ggufd.engine.devices.DeviceExecutors.drive),
and a prompt too long for the context is refused from its length, tokenized off the device thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import gguf_factory
import pytest
from test_lifecycle_engine import PROMPT, collect, make_engine, model_info, request, text_of

from ggufd.engine.batch import BatchRunner
from ggufd.engine.devices import DeviceExecutors
from ggufd.engine.events import Finished, TextDelta
from ggufd.engine.model import LoadedModel
from ggufd.types import ChatPrompt


def test_drivers_on_one_device_alternate_and_a_lone_one_never_requeues(monkeypatch):
    executors = DeviceExecutors()
    order: list[str] = []
    submitted: list[str] = []
    original = DeviceExecutors._submit

    def counting_submit(self, device, fn, *args):
        submitted.append(device)
        return original(self, device, fn, *args)

    monkeypatch.setattr(DeviceExecutors, "_submit", counting_submit)

    release = threading.Event()

    def stepper(name: str, steps: int, started: threading.Event | None = None) -> tuple:
        left, done = [steps], threading.Event()

        def step() -> bool:
            if started is not None and not started.is_set():
                started.set()
                release.wait(5)  # the other driver and a job queue up behind this step
            order.append(name)
            left[0] -= 1
            if not left[0]:
                done.set()
            return left[0] > 0

        return step, done

    async def main():
        alone, alone_done = stepper("solo", 200)
        executors.drive("cpu", alone)
        await asyncio.to_thread(alone_done.wait, 5)
        lone_submissions = len(submitted)
        started = threading.Event()
        a, a_done = stepper("a", 6, started)
        executors.drive("cpu", a)
        await asyncio.to_thread(started.wait, 5)
        b, _ = stepper("b", 3)
        executors.drive("cpu", b)
        job = asyncio.ensure_future(executors.run("cpu", order.append, "job"))
        await asyncio.sleep(0)  # the job is queued
        release.set()
        await job
        await asyncio.to_thread(a_done.wait, 5)
        return lone_submissions

    lone_submissions = asyncio.run(main())
    executors.shutdown()
    assert order[:200] == ["solo"] * 200 and lone_submissions == 1  # 200 steps in one slice
    # a's first step held the thread while b and a job were queued: then they take turns
    assert order[200:] == ["a", "b", "job", "a", "b", "a", "b", "a", "a", "a"]


def test_a_job_cancelled_before_it_ran_leaves_a_lone_driver_alone(monkeypatch):
    executors = DeviceExecutors()
    release, submitted = threading.Event(), []
    original = DeviceExecutors._submit
    monkeypatch.setattr(DeviceExecutors, "_submit", lambda self, *a: submitted.append(a[1]) or original(self, *a))

    async def main():
        blocker = asyncio.ensure_future(executors.run("cpu", release.wait, 5))
        waiter = asyncio.ensure_future(executors.run("cpu", lambda: None))
        await asyncio.sleep(0.01)
        waiter.cancel()  # its job never runs
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        for _ in range(3):  # the cancellation reaches the job's future (loop callbacks)
            await asyncio.sleep(0)
        release.set()
        await blocker
        left, done = [50], threading.Event()

        def step() -> bool:
            left[0] -= 1
            if not left[0]:
                done.set()
            return left[0] > 0

        executors.drive("cpu", step)
        await asyncio.to_thread(done.wait, 5)

    asyncio.run(main())
    executors.shutdown()
    assert len(submitted) == 3  # the two jobs and one slice: the driver was never asked to make way


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("two")
    return tuple(gguf_factory.write_tiny_llama(folder / f"{name}.gguf", seed=i) for i, name in enumerate("ab"))


def test_a_model_gets_its_turns_while_another_on_the_device_generates(two_models, monkeypatch):
    steps: list[BatchRunner] = []
    original = BatchRunner._step

    def recording_step(self):
        steps.append(self)
        original(self)

    monkeypatch.setattr(BatchRunner, "_step", recording_step)

    async def main():
        engine = make_engine(n_ctx=2048)
        a, b = model_info(two_models[0], "a"), model_info(two_models[1], "b")
        await engine.load(a)
        await engine.load(b)
        alone = await collect(engine.start(b, request(4)))
        steps.clear()
        busy = engine.start(a, request(2000))
        first = await busy.next_events()
        while not any(isinstance(e, TextDelta) for e in first):  # a is generating
            first += await busy.next_events()
        beside = await collect(engine.start(b, request(4)))
        busy.cancel()  # a was still generating: it ends cancelled, not at its length
        rest = await collect(busy)
        runners = engine._slots["a"].llama.runner, engine._slots["b"].llama.runner
        await engine.close()
        return alone, beside, rest, runners

    alone, beside, rest, (runner_a, runner_b) = asyncio.run(main())
    assert text_of(beside) == text_of(alone) and beside[-1] == alone[-1] == Finished("length", 14, 4)
    assert rest[-1].reason == "cancelled" and rest[-1].completion_tokens < 2000
    b_steps = [i for i, runner in enumerate(steps) if runner is runner_b]
    assert len(b_steps) == 4  # the prompt step samples the first token, each further step one more
    during = steps[b_steps[0] : b_steps[-1]]
    assert sum(runner is runner_a for runner in during) <= len(b_steps)  # one step of a per step of b


def count_tokenizations(monkeypatch) -> list[int]:
    """From now on: the byte length of every text the models tokenize."""
    sizes: list[int] = []
    original = LoadedModel.tokenize_bytes

    def counting(self, data: bytes, add_bos: bool) -> list[int]:
        sizes.append(len(data))
        return original(self, data, add_bos)

    monkeypatch.setattr(LoadedModel, "tokenize_bytes", counting)
    return sizes


def test_a_prompt_far_too_long_is_refused_before_tokenizing(tiny_model, monkeypatch):
    sizes = count_tokenizations(monkeypatch)

    async def main():
        engine = make_engine(n_ctx=256)
        info = model_info(tiny_model)
        huge = await collect(engine.start(info, request(None, ChatPrompt(text="a" * 768 * 1024))))
        with_completion = await collect(engine.start(info, request(100, ChatPrompt(text="a" * 768 * 1024))))
        longish = await collect(engine.start(info, request(None, ChatPrompt(text="a" * 2000))))
        fine = await collect(engine.start(info, request(4)))
        longest = engine._slots["tiny"].llama.max_token_text()
        await engine.close()
        return huge, with_completion, longish, fine, longest

    huge, with_completion, longish, fine, longest = asyncio.run(main())
    for events in (huge, with_completion):
        assert len(events) == 1 and events[0].error.status == 400
        assert events[0].error.code == "context_length_exceeded" and "at least" in events[0].error.message
    assert f"at least {-(-768 * 1024 // longest)} tokens" in huge[0].error.message
    # 2000 bytes may be 256 tokens or fewer for all the bound knows: tokenized, then refused exactly
    assert longish[0].error.code == "context_length_exceeded" and "at least" not in longish[0].error.message
    assert fine[-1] == Finished("length", 14, 4)
    assert sizes == [2000, len(PROMPT.text.encode())]  # the huge prompts never reached the tokenizer


@pytest.mark.parametrize(
    "text",
    ["a" * 5000, " " * 5000, "<|im_start|>" * 500, "héllo wörld " * 400, "\U0001f642" * 1500, "the of and " * 500],
)
def test_the_length_bound_is_never_above_the_real_token_count(tiny_model, text):
    from ggufd.config import LlamaSettings
    from ggufd.engine.devices import Placement

    model = LoadedModel(str(tiny_model), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    try:
        data = text.encode()
        longest = model.max_token_text()
        assert longest is not None and model.min_tokens(len(data), more_than=0) == -(-len(data) // longest)
        assert len(model.tokenize_bytes(data, False)) >= model.min_tokens(len(data), more_than=0)
        assert model.min_tokens(len(data), more_than=len(data)) is None
    finally:
        model.close()


def test_tokenizing_a_long_prompt_does_not_hold_the_model(tiny_model, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    original = LoadedModel.tokenize_bytes

    def slow_for_long_texts(self, data: bytes, add_bos: bool) -> list[int]:
        if len(data) > 1000:  # stands for llama.cpp's seconds on a long text
            entered.set()
            release.wait(30)
        return original(self, data, add_bos)

    monkeypatch.setattr(LoadedModel, "tokenize_bytes", slow_for_long_texts)

    async def main():
        engine = make_engine(n_ctx=256)
        info = model_info(tiny_model)
        long = engine.start(info, request(None, ChatPrompt(text="a" * 2000)))
        await asyncio.to_thread(entered.wait, 30)
        short = await collect(engine.start(info, request(4)))
        released_before_short_ended = release.is_set()
        release.set()
        refused = await collect(long)
        await engine.close()
        return short, released_before_short_ended, refused

    short, released_before_short_ended, refused = asyncio.run(main())
    assert short[-1] == Finished("length", 14, 4) and not released_before_short_ended
    assert refused[-1].error.code == "context_length_exceeded"
