"""What GPUs llama.cpp can use here, and if none, why: for ``ggufd --check-config``, the start-up
log and ``/health``.

llama-cpp-python binds llama.cpp but not ggml's device registry, so the few functions needed
(``ggml_backend_reg_*``, ``ggml_backend_dev_*``; stable C API) are bound here with ctypes from
the ``libggml`` that llama-cpp-python ships. Anything unexpected gives an empty answer, never an
error: this is a report, not a dependency.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

#: enum ggml_backend_dev_type (ggml-backend.h): CPU, GPU, IGPU, ACCEL, META
_GPU_TYPES = {1: "gpu", 2: "igpu"}


@dataclass(frozen=True)
class GpuDevice:
    name: str  # ggml's device name, e.g. "CUDA0"
    description: str  # e.g. "NVIDIA H200"
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class GpuReport:
    offload: bool  # llama_supports_gpu_offload()
    backends: tuple[str, ...] = ()  # GPU backends compiled into this build, e.g. ("CUDA",)
    devices: tuple[GpuDevice, ...] = ()
    problems: tuple[str, ...] = field(default=())  # llama.cpp's own errors while starting a GPU backend

    def summary(self) -> str:
        """One line for people: what runs where, or what to do."""
        if self.devices and self.offload:
            gpus = "; ".join(
                f"{d.name}: {d.description} ({d.total_bytes / 1024**3:.1f} GiB, {d.free_bytes / 1024**3:.1f} GiB free)"
                for d in self.devices
            )
            return f"GPU offload: yes - {gpus}"
        if self.backends:
            reason = self.problems[-1] if self.problems else "no usable device found"
            return (
                f"GPU offload: no - this llama-cpp-python build has {', '.join(self.backends)} but cannot use it: {reason} "
                "(check the NVIDIA driver with nvidia-smi; a driver older than the build's CUDA cannot run it)"
            )
        return (
            "GPU offload: no - this llama-cpp-python build is CPU-only; for CUDA reinstall it with "
            'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
        )

    def to_dict(self) -> dict:
        return {
            "offload": self.offload,
            "backends": list(self.backends),
            "devices": [
                {"name": d.name, "description": d.description, "total_bytes": d.total_bytes, "free_bytes": d.free_bytes}
                for d in self.devices
            ],
            "problems": list(self.problems),
        }


def _ggml():
    """ctypes handle of llama-cpp-python's libggml (already loaded by llama_cpp), or None."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).resolve().parent / "lib"
    for name in ("libggml.so", "libggml.dylib", "ggml.dll"):
        if (folder / name).exists():
            lib = ctypes.CDLL(str(folder / name))
            break
    else:
        return None
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for function in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, function).argtypes = [ctypes.c_void_p]
        getattr(lib, function).restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.ggml_backend_dev_memory.restype = None
    return lib


def gpu_report(problems: tuple[str, ...] = ()) -> GpuReport:
    """Ask llama.cpp (call :func:`ggufd.engine.llama_log.configure_llama` first, so that its start-up
    errors are captured and passed in as ``problems``)."""
    import llama_cpp

    offload = bool(llama_cpp.llama_supports_gpu_offload())
    try:
        lib = _ggml()
    except (OSError, AttributeError):
        lib = None
    if lib is None:
        return GpuReport(offload, problems=problems)
    backends = tuple(
        name
        for name in (
            lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode() for i in range(lib.ggml_backend_reg_count())
        )
        if name not in ("CPU", "BLAS", "RPC")
    )
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(device) not in _GPU_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            GpuDevice(
                lib.ggml_backend_dev_name(device).decode(errors="replace"),
                lib.ggml_backend_dev_description(device).decode(errors="replace"),
                total.value,
                free.value,
            )
        )
    return GpuReport(offload, backends, tuple(devices), problems)
