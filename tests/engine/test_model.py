"""ggufd.engine.model: a file llama.cpp cannot load fails with llama.cpp's reason, which reaches
the client without a path; a sliding-window cache (swa_full = false) takes a fraction of the memory."""

from __future__ import annotations

import asyncio
import dataclasses

import gguf_factory
import pytest

from ggufd.config import LlamaSettings
from ggufd.engine.devices import Placement
from ggufd.engine.llama_log import LoadError, configure_llama
from ggufd.engine.model import load_model
from ggufd.errors import ModelLoadFailed, ServerError


def load_gemma(gemma_model, swa_full: bool, parallel: int = 1, n_ctx: int = 1024):
    configure_llama("error")
    settings = LlamaSettings(n_ctx=n_ctx, n_threads=2, parallel=parallel, swa_full=swa_full)
    return load_model(str(gemma_model), settings, Placement("cpu", 0))


# --- load failures: llama.cpp's own reason reaches the log, a path-free one the client


def test_a_model_file_llama_cpp_cannot_load_fails_with_its_reason(tiny_model, tmp_path):
    broken = gguf_factory.write_truncated_gguf(tiny_model, tmp_path / "broken.gguf", tiny_model.stat().st_size - 4096)
    configure_llama("error")
    with pytest.raises(LoadError) as failure:
        load_model(str(broken), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    assert failure.value.reason == "the model file is corrupted or incomplete"
    assert any("not within the file bounds" in line for line in failure.value.details)
    assert "llama.cpp could not load the model file: " in str(failure.value)


def test_the_client_sees_the_reason_of_a_failed_load(tiny_model, tmp_path):
    from test_lifecycle_engine import make_engine, model_info, request

    broken = gguf_factory.write_truncated_gguf(tiny_model, tmp_path / "broken.gguf", tiny_model.stat().st_size - 4096)

    info = model_info(tiny_model, "broken")  # discovered intact; cut short on disk afterwards
    info = dataclasses.replace(info, spec=dataclasses.replace(info.spec, path=broken))

    async def main():
        engine = make_engine()
        try:
            generation = engine.start(info, request(5))
            return await generation.next_events()
        finally:
            await engine.close()

    events = asyncio.run(main())
    error = events[-1].error
    assert isinstance(error, ServerError) and error.status == 500
    assert isinstance(error, ModelLoadFailed) and error.reason == "the model file is corrupted or incomplete"
    assert error.message == "The model 'broken' failed to load: the model file is corrupted or incomplete."


# --- sliding-window caches (gemma-3: a 512-token window in 15 of its 18 layers)


@pytest.mark.gemma
def test_a_sliding_window_cache_takes_a_fraction_of_the_full_cache(gemma_model):
    def rss_growth(swa_full: bool) -> int:
        before = rss()
        loaded = load_gemma(gemma_model, swa_full=swa_full, parallel=4, n_ctx=4096)
        try:
            return rss() - before
        finally:
            loaded.close()

    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    windowed, full = rss_growth(False), rss_growth(True)
    # KV cache of 4 x 4096 positions: 18 layers in full (~300 MB) vs 3 full layers + 15 windows (~90 MB)
    assert full - windowed > 150 * 1024**2, (windowed, full)


def test_the_mmap_setting_reaches_llama_cpp():
    """``mmap = false`` reads the weights into memory (llama.cpp's load_mode NONE, no lazy tensors)."""
    import llama_cpp

    from ggufd.engine.model import set_mmap

    params = llama_cpp.llama_model_default_params()
    set_mmap(params, False)
    if hasattr(params, "load_mode"):
        assert params.load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE
        assert params.lazy_mode == llama_cpp.LLAMA_LAZY_MODE_OFF
        set_mmap(params, True)
        assert params.load_mode == llama_cpp.LLAMA_LOAD_MODE_MMAP
    else:  # pragma: no cover - older llama-cpp-python
        assert params.use_mmap is False
