"""ggufd.engine.llama_log: the log callback is installed before llama.cpp starts its backends, and
llama.cpp's error lines of a failed load become a reason a client may see (no paths)."""

from __future__ import annotations

import llama_cpp
import pytest

from ggufd.engine import llama_log


def test_the_log_callback_is_in_place_before_llama_cpp_starts_its_backends(monkeypatch):
    """llama_backend_init starts the GPU backends, and that is where llama.cpp says why CUDA cannot
    be used: the callback that records it must already be installed."""
    calls = []
    monkeypatch.setattr(llama_log, "_keep_alive", [])
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda callback, data: calls.append("log_set"))
    monkeypatch.setattr(llama_cpp, "llama_backend_init", lambda: calls.append("backend_init"))
    llama_log.configure_llama("warn")
    assert calls == ["log_set", "backend_init"]


# --- load failures: llama.cpp's own reason reaches the log, a path-free one the client


@pytest.mark.parametrize(
    "lines, reason",
    [
        (
            [
                "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 14336.00 MiB on device 0: cudaMalloc failed: out of memory",
                "alloc_tensor_range: failed to allocate CUDA0 buffer of size 15032385536",
                "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
            ],
            "not enough memory on its device",
        ),
        (["llama_kv_cache: failed to allocate buffer for kv cache"], "not enough memory on its device"),
        (
            ["ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version"],
            "NVIDIA driver is older",
        ),
        (
            [
                "llama_model_load: error loading model: tensor 'output.weight' data is not within the file bounds, model is corrupted or incomplete"
            ],
            "corrupted or incomplete",
        ),
        (
            [
                "llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'mamba9'"
            ],
            "does not know the model's architecture",
        ),
        (["llama_model_load_from_file_impl: failed to load model"], None),
        ([], None),
    ],
)
def test_load_failure_reasons(lines, reason):
    found = llama_log.load_failure_reason(lines)
    assert (found is None) if reason is None else (reason in found and "/" not in found)
