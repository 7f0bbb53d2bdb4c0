"""ggufd.engine.gpu: what GPUs llama.cpp can use and, if none, a line that says why and what to do.
(The GPU side runs in tests/test_gpu_hardware.py on a machine with a GPU.)"""

from __future__ import annotations

from ggufd.engine.gpu import GpuDevice, GpuReport, _ggml, gpu_report

H200 = GpuDevice("CUDA0", "NVIDIA H200", 150 * 1024**3, 140 * 1024**3)


def test_a_cpu_only_build_reports_no_gpu_and_how_to_get_one():
    report = gpu_report()
    assert report == GpuReport(offload=False)
    assert report.summary().startswith("GPU offload: no - this llama-cpp-python build is CPU-only")
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in report.summary()
    assert report.to_dict() == {"offload": False, "backends": [], "devices": [], "problems": []}


def test_the_device_registry_is_read_through_ggml():
    lib = _ggml()
    assert lib is not None and lib.ggml_backend_dev_count() >= 1  # the CPU device
    assert "CPU" in [
        lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode() for i in range(lib.ggml_backend_reg_count())
    ]
    assert lib.ggml_backend_dev_type(lib.ggml_backend_dev_get(0)) == 0  # GGML_BACKEND_DEVICE_TYPE_CPU


def test_summaries_name_the_gpus_or_the_reason_there_are_none():
    assert (
        GpuReport(True, ("CUDA",), (H200,)).summary()
        == "GPU offload: yes - CUDA0: NVIDIA H200 (150.0 GiB, 140.0 GiB free)"
    )
    driver = "ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version"
    old_driver = GpuReport(False, ("CUDA",), (), (driver,)).summary()
    assert old_driver.startswith("GPU offload: no - this llama-cpp-python build has CUDA but cannot use it: " + driver)
    assert "nvidia-smi" in old_driver
    assert "no usable device found" in GpuReport(False, ("CUDA",)).summary()
    assert GpuReport(True, ("CUDA",), (H200,)).to_dict()["devices"] == [
        {"name": "CUDA0", "description": "NVIDIA H200", "total_bytes": 150 * 1024**3, "free_bytes": 140 * 1024**3}
    ]
