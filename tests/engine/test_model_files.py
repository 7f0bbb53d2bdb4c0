"""The engine and a model file that changes under it (issue 23), with a fake loader (no llama.cpp):
the stamp taken at load, stale and changing slots, who waits, who is cancelled, what loads next."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from pathlib import Path

import gguf_factory
import pytest

from ggufd.config import LlamaSettings
from ggufd.engine import lifecycle
from ggufd.engine.events import Failed, Finished, Generation, Started
from ggufd.engine.lifecycle import Engine, Limits
from ggufd.errors import ModelNotFound, Overloaded
from ggufd.file_stamps import changed_in_place, file_stamp
from ggufd.gguf_metadata import read_metadata
from ggufd.types import ChatPrompt, GenerationRequest, ModelInfo, ModelSpec, SamplingParams

REQUEST = GenerationRequest(ChatPrompt(text="hi"), SamplingParams(temperature=0), max_tokens=4)
WAIT = 10  # seconds; every wait below ends on a condition long before


class FakeRunner:
    """Runs one generation at a time until the model's ``release`` is set or it is cancelled
    (the BatchRunner contract: ``prepare`` off the device thread, ``submit``, ``step`` on it)."""

    def __init__(self, model: FakeModel) -> None:
        self.model = model
        self.queue: list = []
        self.lock = threading.Lock()
        self.running = False

    def prepare(self, request) -> list[int]:
        return [1]

    def submit(self, generation: Generation, request, tokens=None):
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            self.queue.append((generation, future))
            start, self.running = not self.running, True
        return future, start

    def step(self) -> bool:
        """One generation from start to end (a fake "step"); False once nothing is queued."""
        with self.lock:
            if not self.queue:
                self.running = False
                return False
            generation, future = self.queue.pop(0)
        generation.emit(Started(1))
        while not generation.cancelled and not self.model.release.wait(0.01):
            pass
        future.set_result(Finished("cancelled" if generation.cancelled else "stop", 1, 0))
        return True


class FakeModel:
    def __init__(self, path: str) -> None:
        self.content = Path(path).read_bytes()
        self.release = threading.Event()
        self.runner = FakeRunner(self)
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Loader:
    def __init__(self) -> None:
        self.models: list[FakeModel] = []

    def __call__(self, path, settings, placement, on_progress=None) -> FakeModel:
        model = FakeModel(path)
        self.models.append(model)
        return model


@pytest.fixture
def model_file(tmp_path) -> Path:
    return gguf_factory.write_tiny_llama(tmp_path / "m.gguf", seed=1)


def info_of(path: Path) -> ModelInfo:
    return ModelInfo(spec=ModelSpec(id="m", path=path), metadata=read_metadata(path), family="gguf-template")


def engine_with(loader: Loader, mmap: bool) -> Engine:
    settings = LlamaSettings(n_ctx=256, n_threads=1, parallel=1, mmap=mmap)
    return Engine(settings_for=lambda info: settings, limits=Limits(), gpu_available=False, loader=loader)


async def started(generation: Generation) -> None:
    events = await asyncio.wait_for(generation.next_events(), WAIT)
    assert isinstance(events[0], Started), events


async def final(generation: Generation):
    while True:
        events = await asyncio.wait_for(generation.next_events(), WAIT)
        if isinstance(events[-1], (Finished, Failed)):
            return events[-1]


async def until(condition, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def replace_file(path: Path, content: bytes) -> None:
    new = path.with_suffix(".new")
    new.write_bytes(content)
    os.replace(new, path)


def write_in_place(path: Path, content: bytes) -> None:
    with path.open("r+b") as fh:  # the same inode, as `cp new.gguf path` does it
        fh.truncate(0)
        fh.write(content)


def test_stamps_tell_an_atomic_replace_from_an_in_place_write(model_file):
    before = file_stamp(model_file)
    assert before == file_stamp(model_file) and before is not None
    write_in_place(model_file, model_file.read_bytes() + b"x")
    in_place = file_stamp(model_file)
    assert in_place != before and changed_in_place(before, in_place)
    replace_file(model_file, b"other")
    replaced = file_stamp(model_file)
    assert replaced != in_place and not changed_in_place(in_place, replaced)
    os.unlink(model_file)
    assert file_stamp(model_file) is None and not changed_in_place(replaced, None)


@pytest.mark.parametrize("mmap", [True, False])
def test_atomic_replace_lets_the_running_request_finish_then_loads_the_new_file(model_file, mmap):
    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap)
        info = info_of(model_file)
        first = engine.start(info, REQUEST)
        await started(first)
        old = model_file.read_bytes()
        replace_file(model_file, old + b"v2")
        assert engine.check_files() == ["m"]
        assert engine.check_files() == []  # noticed once
        assert engine.status()["m"]["file_changed"] is True
        second = engine.start(info, REQUEST)
        await asyncio.sleep(0.3)
        assert not first.cancelled and not loader.models[0].closed  # the old inode is still valid
        assert second._events.empty()  # held: not on the old model, not on a file nobody re-read
        engine.update_models({"m": info_of(model_file)}, engine._settings_for, engine.limits)
        await asyncio.sleep(0.2)
        assert second._events.empty()  # the old model still runs a request
        loader.models[0].release.set()
        assert (await final(first)).reason == "stop"
        await started(second)
        loader.models[1].release.set()
        assert (await final(second)).reason == "stop"
        await engine.close()
        return loader

    loader = asyncio.run(main())
    assert loader.models[0].closed and loader.models[1].content.endswith(b"v2")


def test_in_place_write_under_a_mapped_model_cancels_its_generations_at_once(model_file):
    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=True)
        info = info_of(model_file)
        running = engine.start(info, REQUEST)
        await started(running)
        write_in_place(model_file, b"new content")
        assert engine.check_files() == ["m"]
        assert running.cancelled
        assert (await final(running)).reason == "cancelled"
        await until(lambda: loader.models[0].closed)  # unloaded once nothing runs on it
        assert engine.status()["m"]["state"] == "unloaded"
        waiting = engine.start(info, REQUEST)
        await asyncio.sleep(0.2)
        assert len(loader.models) == 1  # nothing loads a file that nobody has re-read
        engine.update_models({"m": info}, engine._settings_for, engine.limits)
        await started(waiting)
        loader.models[1].release.set()
        await final(waiting)
        await engine.close()
        return loader

    loader = asyncio.run(main())
    assert loader.models[1].content == b"new content"


def test_in_place_write_under_a_model_read_into_memory_lets_it_finish(model_file):
    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=False)
        info = info_of(model_file)
        running = engine.start(info, REQUEST)
        await started(running)
        write_in_place(model_file, b"new content")
        assert engine.check_files() == ["m"]
        await asyncio.sleep(0.2)
        assert not running.cancelled and not loader.models[0].closed
        loader.models[0].release.set()
        assert (await final(running)).reason == "stop"
        await until(lambda: loader.models[0].closed)
        await engine.close()

    asyncio.run(main())


def test_a_request_notices_the_change_without_waiting_for_the_poll(model_file):
    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=True)
        info = info_of(model_file)
        await engine.load(info)
        write_in_place(model_file, b"changed")
        held = engine.start(info, REQUEST)  # no check_files() call: the request's own stat sees it
        await until(lambda: loader.models[0].closed)
        assert len(loader.models) == 1 and held._events.empty()
        engine.update_models({"m": info}, engine._settings_for, engine.limits)
        await started(held)
        loader.models[1].release.set()
        await final(held)
        await engine.close()
        return loader

    assert asyncio.run(main()).models[1].content == b"changed"


def test_a_change_nobody_re_reads_counts_once_the_file_is_still(model_file, monkeypatch):
    monkeypatch.setattr(lifecycle, "FILE_SETTLE_SECONDS", 0.2)

    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=False)
        info = info_of(model_file)
        await engine.load(info)
        replace_file(model_file, b"v2")
        held = engine.start(info, REQUEST)
        while len(loader.models) < 2:
            engine.check_files()
            await asyncio.sleep(0.05)
        await started(held)
        loader.models[1].release.set()
        await final(held)
        await engine.close()
        return loader

    assert asyncio.run(main()).models[1].content == b"v2"


def test_a_file_that_became_unreadable_fails_the_waiting_requests_cleanly(model_file):
    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=True)
        info = info_of(model_file)
        await engine.load(info)
        write_in_place(model_file, b"")
        assert engine.check_files() == ["m"]
        held = engine.start(info, REQUEST)
        await asyncio.sleep(0.1)
        engine.update_models({}, engine._settings_for, engine.limits)  # the registry skipped it
        event = await final(held)
        await engine.close()
        return event, loader

    event, loader = asyncio.run(main())
    assert isinstance(event, Failed) and isinstance(event.error, ModelNotFound) and event.error.status == 404
    assert "no longer served" in event.error.message and str(model_file) not in event.error.message
    assert loader.models[0].closed and len(loader.models) == 1


def test_a_request_waits_for_a_changing_file_only_so_long(model_file, monkeypatch):
    monkeypatch.setattr(lifecycle, "FILE_WAIT_SECONDS", 0.3)

    async def main():
        loader = Loader()
        engine = engine_with(loader, mmap=True)
        info = info_of(model_file)
        await engine.load(info)
        replace_file(model_file, b"v2")
        engine.check_files()
        event = await final(engine.start(info, REQUEST))
        await engine.close()
        return event

    event = asyncio.run(main())
    assert isinstance(event, Failed) and isinstance(event.error, Overloaded)
    assert event.error.status == 503 and event.error.headers["Retry-After"] == "5"


def test_a_file_changed_while_it_loaded_is_loaded_again(model_file):
    class ChangingLoader(Loader):
        def __call__(self, path, *args, **kwargs):
            model = super().__call__(path, *args, **kwargs)
            if len(self.models) == 1:
                replace_file(Path(path), b"written during the load")
            return model

    async def main():
        loader = ChangingLoader()
        engine = engine_with(loader, mmap=True)
        info = info_of(model_file)
        held = engine.start(info, REQUEST)
        await until(lambda: bool(loader.models) and loader.models[0].closed)
        engine.update_models({"m": info}, engine._settings_for, engine.limits)
        await started(held)
        loader.models[-1].release.set()
        await final(held)
        await engine.close()
        return loader

    loader = asyncio.run(main())
    assert [m.content for m in loader.models][1:] == [b"written during the load"]
