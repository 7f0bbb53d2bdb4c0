"""Everything that touches llama_cpp. Every function here except the two at the top runs on
a device's worker thread (see :mod:`ggufd.devices`), never on the event loop.

llama_cpp is imported lazily so that ``ggufd --check-config`` and the plugins never pay for it.
"""

from __future__ import annotations

import ctypes
import random
import threading
from typing import Any, Callable

import structlog

from .devices import Placement, heartbeat
from .errors import ContextLengthExceeded
from .text_stream import TextAssembler
from .types import GenerationRequest

log = structlog.get_logger("ggufd.llama")

#: LLAMA_LOG_LEVEL -> how verbose llama.cpp may be (0 = silent).
_LLAMA_VERBOSITY = {"none": 0, "error": 1, "warn": 2, "warning": 2, "info": 3, "debug": 4}
#: ggml_log_level (ggml.h: 1 debug, 2 info, 3 warn, 4 error, 5 continuation) -> verbosity rank.
_GGML_RANK = {4: 1, 3: 2, 2: 3, 1: 4}
_keep_alive: list = []  # ctypes callbacks must outlive their registration
_thread_state = threading.local()


def gpu_offload_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


class _QuietWhileLoading:
    """``sys.stderr`` wrapper that drops what a thread prints while it loads a model.

    ``Llama(verbose=True)`` prints model metadata and system info to ``sys.stderr``;
    ``verbose=False`` instead points the process-wide file descriptors 1 and 2 at
    /dev/null during the load (losing every other thread's log lines meanwhile, and not
    thread-safe when two devices load at once). So ggufd loads with ``verbose=True`` and
    silences only the loading thread's Python-level prints.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if getattr(_thread_state, "loading", False):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def configure_llama(level: str) -> None:
    """Once per process: llama.cpp's log lines into structlog (filtered by ``LLAMA_LOG_LEVEL``),
    quiet model loads, and a hook that lets :func:`load_llama` see load progress."""
    import sys

    import llama_cpp
    import llama_cpp.llama_cpp as lowlevel

    if not isinstance(sys.stderr, _QuietWhileLoading):
        sys.stderr = _QuietWhileLoading(sys.stderr)

    allowed = _LLAMA_VERBOSITY[level]
    llog = structlog.get_logger("llama.cpp")
    methods = {1: llog.error, 2: llog.warning, 3: llog.info, 4: llog.debug}
    state = {"last": 2}

    @llama_cpp.llama_log_callback
    def log_callback(ggml_level: int, text: bytes, user_data) -> None:
        if ggml_level == 5:
            ggml_level = state["last"]
        state["last"] = ggml_level
        rank = _GGML_RANK.get(ggml_level, 4)
        if rank <= allowed:
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                methods[rank](message, source="llama.cpp")

    llama_cpp.llama_log_set(log_callback, ctypes.c_void_p(0))
    _keep_alive.append(log_callback)

    # Llama() takes no progress callback; its model params come from this function, so a
    # wrapper adds the callback of the load running on this thread (if any).
    original = lowlevel.llama_model_default_params
    if getattr(original, "_ggufd", False):
        return

    def model_default_params():
        params = original()
        callback = getattr(_thread_state, "progress_callback", None)
        if callback is not None:
            params.progress_callback = callback
        return params

    model_default_params._ggufd = True
    lowlevel.llama_model_default_params = model_default_params


def load_llama(path: str, settings, placement: Placement, on_progress: Callable[[float], None] | None = None) -> Any:
    """Create the ``llama_cpp.Llama`` (on the model's device thread)."""
    import llama_cpp

    if on_progress is not None:

        @llama_cpp.llama_progress_callback
        def progress(value: float, user_data) -> bool:
            heartbeat()
            on_progress(float(value))
            return True

        _thread_state.progress_callback = progress
    _thread_state.loading = True
    try:
        llama = llama_cpp.Llama(
            model_path=path,
            n_ctx=settings.n_ctx,
            n_gpu_layers=placement.n_gpu_layers,
            main_gpu=placement.main_gpu,
            split_mode=placement.split_mode,
            n_batch=settings.n_batch,
            n_threads=settings.threads,
            n_threads_batch=settings.threads,
            verbose=True,  # see _QuietWhileLoading
        )
    finally:
        _thread_state.progress_callback = None
        _thread_state.loading = False
    llama.verbose = False  # no per-request prints to stderr
    return llama


def free_llama(llama) -> None:
    llama.close()


def token_bytes(llama, token: int) -> bytes:
    """The bytes of one generated token (special tokens render as nothing)."""
    import llama_cpp

    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(llama._model.vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n


def context_size(llama) -> int:
    # llama.cpp may round the context up (to a multiple of 256); llama-cpp-python's token
    # buffer keeps the size that was asked for, so the smaller one is the limit.
    return min(llama.n_ctx(), len(llama.input_ids))


def _process_prompt(llama, tokens: list[int], generation) -> bool:
    """Evaluate all but the last prompt token in ``n_batch`` chunks, checking for cancellation
    between chunks. A prefix already in the KV cache (the same conversation continuing) is
    reused. Returns False if cancelled. ``Llama.generate`` then finds the prompt cached and
    evaluates only the last token."""
    cached = 0
    for a, b in zip(llama.input_ids[: llama.n_tokens], tokens[:-1]):
        if a != b:
            break
        cached += 1
    llama.n_tokens = cached
    for start in range(cached, len(tokens) - 1, llama.n_batch):
        if generation.cancelled:
            return False
        heartbeat()
        llama.eval(tokens[start : min(start + llama.n_batch, len(tokens) - 1)])
    return not generation.cancelled


def generate(llama, generation, request: GenerationRequest):
    """Run one generation: emit Started and TextDelta events, return the Finished event
    (the engine delivers it after releasing the model). Raises ApiError for a bad prompt."""
    import llama_cpp

    from .engine import Finished, Started, TextDelta

    prompt = request.prompt
    tokens = llama.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
    n_ctx = context_size(llama)
    n_prompt = len(tokens)
    budget = n_ctx - n_prompt
    if budget <= 0 or (request.max_tokens is not None and request.max_tokens > budget):
        raise ContextLengthExceeded(n_ctx, n_prompt, request.max_tokens)
    max_tokens = budget if request.max_tokens is None else request.max_tokens
    generation.emit(Started(n_prompt))
    if not _process_prompt(llama, tokens, generation):
        return Finished("cancelled", n_prompt, 0)

    s = request.sampling
    llama.set_seed(s.seed if s.seed is not None else random.getrandbits(32))
    assembler = TextAssembler(request.stop + prompt.stop)
    vocab = llama._model.vocab
    n_generated = 0
    reason = "length"
    for token in llama.generate(
        tokens,
        temp=s.temperature if s.temperature is not None else 0.8,
        top_p=s.top_p if s.top_p is not None else 0.95,
        top_k=s.top_k if s.top_k is not None else 40,
        min_p=s.min_p if s.min_p is not None else 0.05,
        repeat_penalty=s.repeat_penalty if s.repeat_penalty is not None else 1.0,
        presence_penalty=s.presence_penalty or 0.0,
        frequency_penalty=s.frequency_penalty or 0.0,
        reset=True,
    ):
        heartbeat()
        if generation.cancelled:
            reason = "cancelled"
            break
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            reason = "stop"
            break
        n_generated += 1
        text = assembler.feed(token_bytes(llama, token))
        if text:
            generation.emit(TextDelta(text))
        if assembler.stopped:
            reason = "stop"
            break
        if n_generated >= max_tokens:
            break
    tail = assembler.finish()
    if tail and reason != "cancelled":
        generation.emit(TextDelta(tail))
    return Finished(reason, n_prompt, n_generated)
