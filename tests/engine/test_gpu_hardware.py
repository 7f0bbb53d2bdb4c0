"""GPU-only checks (run by bench/gpu-check.sh on a machine with an NVIDIA GPU); skipped elsewhere."""

from __future__ import annotations

import asyncio

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.skipif(
    not llama_cpp.llama_supports_gpu_offload(), reason="needs a CUDA build of llama-cpp-python and a GPU"
)


def model_info(path, model_id, **options):
    from ggufd.gguf_metadata import read_metadata
    from ggufd.types import ModelInfo, ModelSpec

    return ModelInfo(
        spec=ModelSpec(id=model_id, path=path, options=options), metadata=read_metadata(path), family="gguf-template"
    )


def test_the_report_lists_the_gpu_with_its_memory():
    from ggufd.engine.gpu import gpu_report

    report = gpu_report()
    assert report.offload and "CUDA" in report.backends and report.devices
    device = report.devices[0]
    assert device.name == "CUDA0" and device.total_bytes > 1024**3 and 0 < device.free_bytes <= device.total_bytes
    assert report.summary().startswith("GPU offload: yes - CUDA0: ")


def test_a_cuda_build_that_sees_no_gpu_says_why():
    """With no visible device, llama.cpp's own reason ("failed to initialize CUDA: no CUDA-capable
    device is detected") reaches the report, as it would for a driver that is too old."""
    import os
    import subprocess
    import sys

    code = (
        "from ggufd.engine.gpu import gpu_report; from ggufd.engine.llama_log import configure_llama, gpu_startup_problems; "
        "configure_llama('error'); r = gpu_report(gpu_startup_problems()); print(r.offload, r.backends, r.problems); print(r.summary())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "has CUDA but cannot use it: " in done.stdout and "failed to initialize CUDA" in done.stdout, (
        done.stdout + done.stderr
    )


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory):
    import gguf_factory

    folder = tmp_path_factory.mktemp("gpu")
    return gguf_factory.write_synthetic_llama(
        folder / "gpu.gguf", n_embd=1024, n_layer=8, n_head=16, n_head_kv=4, n_ff=4096, vocab_size=32000
    )


def engine():
    from ggufd.config import LlamaSettings
    from ggufd.engine.lifecycle import Engine

    return Engine(
        settings_for=lambda info: LlamaSettings(
            n_ctx=1024, n_gpu_layers=0 if info.options.get("device") == "cpu" else -1, parallel=2
        )
    )


async def run(eng, info, max_tokens=64):
    from gguf_factory import EOS_ID, IM_END_ID

    from ggufd.types import ChatPrompt, GenerationRequest, SamplingParams

    generation = eng.start(
        info,
        GenerationRequest(
            ChatPrompt("hello"),
            SamplingParams(temperature=0, logit_bias=((EOS_ID, -100.0), (IM_END_ID, -100.0))),
            max_tokens,
        ),
    )
    events = []
    while not generation.done:
        events.extend(await generation.next_events())
    return events


def test_two_models_on_device_0_share_its_thread(gpu_model):
    import threading

    async def main():
        eng = engine()
        a, b = model_info(gpu_model, "a", device=0), model_info(gpu_model, "b", device=0)
        await asyncio.gather(run(eng, a), run(eng, b))
        status = eng.status()
        threads = {t.name for t in threading.enumerate() if t.name.startswith("ggufd-cuda:0")}
        await eng.close()
        return status, threads

    status, threads = asyncio.run(main())
    assert status["a"]["device"] == status["b"]["device"] == "cuda:0"
    assert status["a"]["offloaded_layers"] == status["a"]["total_layers"]
    assert len(threads) == 1


def test_a_cpu_model_runs_while_a_gpu_model_generates(gpu_model):
    import time

    async def main():
        eng = engine()
        gpu, cpu = model_info(gpu_model, "gpu", device=0), model_info(gpu_model, "cpu", device="cpu")
        await asyncio.gather(run(eng, gpu, 4), run(eng, cpu, 4))  # load both
        started = time.perf_counter()
        gpu_task = asyncio.ensure_future(run(eng, gpu, 400))
        cpu_events = await run(eng, cpu, 8)
        cpu_done = time.perf_counter() - started
        gpu_events = await gpu_task
        gpu_done = time.perf_counter() - started
        status = eng.status()
        await eng.close()
        return cpu_events, gpu_events, cpu_done, gpu_done, status

    cpu_events, gpu_events, cpu_done, gpu_done, status = asyncio.run(main())
    assert status["cpu"]["device"] == "cpu" and status["gpu"]["device"] == "cuda:0"
    assert cpu_events[-1].completion_tokens == 8 and gpu_events[-1].completion_tokens == 400
    assert cpu_done < gpu_done  # the CPU model did not wait for the GPU model's thread
