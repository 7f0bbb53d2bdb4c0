"""Device-pinned executors: one worker thread per device.

Every llama call for a model runs on the thread of the device the model lives on:
llama objects are not thread-safe, and CUDA work for one device belongs on one thread.
Models on the same device share its thread (they share its compute anyway); a CPU-only
model runs on the "cpu" thread while GPU models generate.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

import structlog

from .llama_backend import Placement

log = structlog.get_logger("ggufd.devices")

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
                "this llama-cpp-python build has no GPU offload; running on CPU "
                '(reinstall it with CMAKE_ARGS="-DGGML_CUDA=on" for CUDA)',
                model=model_id,
                n_gpu_layers=n_gpu_layers,
            )
        return Placement("cpu", 0)
    if device is None:
        return Placement("gpu", n_gpu_layers, 0, LLAMA_SPLIT_MODE_LAYER)
    return Placement(f"cuda:{int(device)}", n_gpu_layers, int(device), LLAMA_SPLIT_MODE_NONE)


class DeviceExecutors:
    """Device key -> its single worker thread."""

    def __init__(self) -> None:
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def executor(self, device: str) -> ThreadPoolExecutor:
        executor = self._executors.get(device)
        if executor is None:
            executor = self._executors[device] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ggufd-{device}")
        return executor

    async def run(self, device: str, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor(device), fn, *args)

    def shutdown(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        self._executors.clear()
