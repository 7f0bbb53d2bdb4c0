"""llama.cpp's log: started once per process, its lines routed into structlog, and its error
lines kept, so that a failed load or a GPU that cannot start can say why (:class:`LoadError`)."""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from contextlib import contextmanager

import llama_cpp
import structlog

#: LLAMA_LOG_LEVEL -> how verbose llama.cpp may be (0 = silent).
_LLAMA_VERBOSITY = {"none": 0, "error": 1, "warn": 2, "warning": 2, "info": 3, "debug": 4}
#: ggml_log_level (ggml.h: 1 debug, 2 info, 3 warn, 4 error, 5 continuation) -> verbosity rank.
_GGML_RANK = {4: 1, 3: 2, 2: 3, 1: 4}
_keep_alive: list = []  # ctypes callbacks must outlive their registration
_configured = threading.Lock()
_errors: deque[str] = deque(maxlen=32)  # llama.cpp's latest error lines, whatever the log level
_capture = threading.local()  # .lines: a list collecting this thread's llama.cpp errors (see llama_errors)


def configure_llama(level: str) -> None:
    """Once per process: initialise llama.cpp and route its log lines into structlog."""
    with _configured:
        if _keep_alive:
            return
        allowed = _LLAMA_VERBOSITY[level]
        llog = structlog.get_logger("llama.cpp")
        methods = {1: llog.error, 2: llog.warning, 3: llog.info, 4: llog.debug}
        state = threading.local()  # the level a continuation line (5) continues, per logging thread

        @llama_cpp.llama_log_callback
        def log_callback(ggml_level: int, text: bytes, user_data) -> None:
            if ggml_level == 5:
                ggml_level = getattr(state, "last", 2)
            state.last = ggml_level
            rank = _GGML_RANK.get(ggml_level, 4)
            if rank <= allowed or rank == 1:
                message = text.decode("utf-8", errors="replace").rstrip()
                if message and rank == 1:
                    _errors.append(message)
                    lines = getattr(_capture, "lines", None)
                    if lines is not None:
                        lines.append(message)
                if message and rank <= allowed:
                    methods[rank](message, source="llama.cpp")

        llama_cpp.llama_log_set(log_callback, ctypes.c_void_p(0))
        _keep_alive.append(log_callback)
        # after the callback: starting the backends (CUDA's device query) logs why a GPU cannot be used
        llama_cpp.llama_backend_init()


def gpu_startup_problems() -> tuple[str, ...]:
    """llama.cpp's errors while starting a GPU backend (e.g. "failed to initialize CUDA: CUDA
    driver version is insufficient for CUDA runtime version"); empty when there were none."""
    return tuple(line for line in _errors if "failed to initialize" in line or "driver" in line.lower())


@contextmanager
def llama_errors():
    """Collect the error lines llama.cpp logs on this thread inside the ``with`` block."""
    lines: list[str] = []
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = None


def load_failure_reason(lines: list[str]) -> str | None:
    """llama.cpp's error lines of a failed load -> a reason a client may see (no paths), or None."""
    text = "\n".join(lines).lower()
    if any(sign in text for sign in ("out of memory", "failed to allocate", "unable to allocate", "cudamalloc failed")):
        return "not enough memory on its device; lower n_gpu_layers, n_ctx or parallel for this model"
    if "driver version is insufficient" in text or "failed to initialize cuda" in text:
        return "the GPU cannot be used: the NVIDIA driver is older than this CUDA build needs"
    if "not within the file bounds" in text or "corrupted or incomplete" in text:
        return "the model file is corrupted or incomplete"
    if "unknown model architecture" in text:
        return "this llama.cpp version does not know the model's architecture"
    return None


class LoadError(ValueError):
    """A model or its context could not be created; ``reason`` is safe to show to clients."""

    def __init__(self, what: str, lines: list[str]) -> None:
        self.reason = load_failure_reason(lines)
        self.details = list(lines)
        super().__init__(f"{what}: " + (" | ".join(lines[-4:]) if lines else "llama.cpp gave no reason"))
