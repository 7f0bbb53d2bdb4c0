"""Device-pinned executors: one worker thread per device.

Every llama call for a model runs on the thread of the device the model lives on:
llama objects are not thread-safe, and CUDA work for one device belongs on one thread.
Models on the same device share its thread (they share its compute anyway); a CPU-only
model runs on the "cpu" thread while GPU models generate.

The models sharing a thread take turns: a batch loop runs as :meth:`DeviceExecutors.drive`,
one step at a time, and gives the thread up after any step when another job is queued for the
device (another model's steps, a load, embeddings), going to the back of the queue. A
request's first token on one model waits for a step of the other, not for all its work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("ggufd.devices")


@dataclass(frozen=True)
class Placement:
    """Where a model runs: its executor key and the llama.cpp parameters that pin it there."""

    device: str  # "cpu", "gpu" (llama.cpp's default split over visible GPUs) or "cuda:N"
    n_gpu_layers: int
    main_gpu: int = 0
    split_mode: int = 1  # LLAMA_SPLIT_MODE_LAYER; 0 = NONE (one GPU)


_warned_cpu_only: set[str] = set()

LLAMA_SPLIT_MODE_NONE = 0
LLAMA_SPLIT_MODE_LAYER = 1


def placement_for(options: Mapping[str, Any], n_gpu_layers: int, gpu_available: bool, model_id: str = "") -> Placement:
    """Map a model's ``device`` setting (GPU index, ``"cpu"`` or unset) to llama.cpp parameters."""
    device = options.get("device")
    if device == "cpu" or n_gpu_layers == 0:
        return Placement("cpu", 0)
    if not gpu_available:
        if model_id not in _warned_cpu_only:
            _warned_cpu_only.add(model_id)
            log.warning(
                "GPU layers requested but no GPU can be used; running on CPU "
                "(the start-up line 'GPU offload: no - ...' and ggufd --check-config say why)",
                model=model_id,
                n_gpu_layers=n_gpu_layers,
            )
        return Placement("cpu", 0)
    if device is None:
        return Placement("gpu", n_gpu_layers, 0, LLAMA_SPLIT_MODE_LAYER)
    return Placement(f"cuda:{int(device)}", n_gpu_layers, int(device), LLAMA_SPLIT_MODE_NONE)


_current = threading.local()


def heartbeat() -> None:
    """Called by llama work (per token, per prompt batch, during loads) to prove its thread moves."""
    beat = getattr(_current, "beat", None)
    if beat is not None:
        beat[0] = time.monotonic()


class DeviceExecutors:
    """Device key -> its single worker thread, and a heartbeat per thread for the watchdog."""

    def __init__(self) -> None:
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._busy: dict[str, list[float]] = {}  # device -> [last beat] while a job runs
        self._queued: dict[str, int] = {}  # device -> jobs submitted and not started yet
        self._queued_lock = threading.Lock()

    def stalled(self, max_silence: float) -> list[str]:
        """Devices whose running job has not beaten for ``max_silence`` seconds (a wedged worker)."""
        now = time.monotonic()
        return [device for device, beat in list(self._busy.items()) if now - beat[0] > max_silence]

    def _tracked(self, device: str, fn: Callable, args: tuple) -> Any:
        self._unqueue(device)
        beat = [time.monotonic()]
        _current.beat = beat
        self._busy[device] = beat
        try:
            return fn(*args)
        finally:
            self._busy.pop(device, None)
            _current.beat = None

    def executor(self, device: str) -> ThreadPoolExecutor:
        executor = self._executors.get(device)
        if executor is None:
            executor = self._executors[device] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ggufd-{device}")
        return executor

    def _submit(self, device: str, fn: Callable, *args) -> Future:
        executor = self.executor(device)
        with self._queued_lock:
            self._queued[device] = self._queued.get(device, 0) + 1
        try:
            future = executor.submit(self._tracked, device, fn, args)
        except BaseException:
            self._unqueue(device)
            raise
        # cancelled before it started (its awaiter was cancelled): it never reaches _tracked
        future.add_done_callback(lambda done: self._unqueue(device) if done.cancelled() else None)
        return future

    def _unqueue(self, device: str) -> None:
        with self._queued_lock:
            self._queued[device] -= 1

    async def run(self, device: str, fn: Callable, *args) -> Any:
        return await asyncio.wrap_future(self._submit(device, fn, *args))

    def drive(self, device: str, step: Callable[[], bool]) -> None:
        """Call ``step()`` on the device's thread until it returns False (from any thread; returns
        at once). Between steps the loop yields to the jobs queued for the device meanwhile and
        continues behind them: models on one device interleave step by step. Alone, it steps in
        one loop: no queueing and no wake-up per step. ``step`` handles its own errors."""
        self._submit(device, self._slice, device, step)

    def _slice(self, device: str, step: Callable[[], bool]) -> None:
        while step():
            if self._queued.get(device):  # another job waits for this thread: its turn first
                try:
                    self._submit(device, self._slice, device, step)
                except RuntimeError:  # shut down meanwhile: finish here instead
                    continue
                return

    def shutdown(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        self._executors.clear()
