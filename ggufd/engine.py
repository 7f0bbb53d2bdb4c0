"""The engine: owns the llama.cpp objects and runs every llama call off the event loop.

Each model has one :class:`ModelWorker` with a single worker thread; llama objects are
not thread-safe and CUDA work for one device belongs on one thread. Jobs for a model
queue on its thread in FIFO order, so concurrent requests all complete and never
interleave on one llama object. Results travel back to the asyncio loop with
``call_soon_threadsafe`` — the worker never touches the event loop's objects directly.

Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import ctypes
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from .errors import ApiError, ContextLengthExceeded, ServerError
from .text_stream import TextAssembler
from .types import GenerationRequest, ModelInfo

log = structlog.get_logger("ggufd.engine")

# --- events a generation produces, in this order: Started, TextDelta*, Finished | Failed


@dataclass(frozen=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ApiError


class Generation:
    """The handle a caller holds for one running generation.

    Events arrive on the caller's asyncio loop; :meth:`cancel` may be called from any
    thread and stops the worker at its next token (or before it starts, if queued).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancel = threading.Event()
        self.done = False

    # worker side
    def emit(self, event) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    # loop side
    async def next_events(self) -> list:
        """Wait for at least one event; return every event available now (fewer writes under load)."""
        events = [await self._events.get()]
        while not self._events.empty():
            events.append(self._events.get_nowait())
        if isinstance(events[-1], (Finished, Failed)):
            self.done = True
        return events


# --- llama.cpp glue (imported lazily: importing llama_cpp costs memory and start-up time)

#: LLAMA_LOG_LEVEL -> how verbose llama.cpp may be (0 = silent).
_LLAMA_VERBOSITY = {"none": 0, "error": 1, "warn": 2, "warning": 2, "info": 3, "debug": 4}
#: ggml_log_level (ggml.h: 1 debug, 2 info, 3 warn, 4 error, 5 continuation) -> verbosity rank.
_GGML_RANK = {4: 1, 3: 2, 2: 3, 1: 4}
_llama_log_callback = None  # keep the ctypes callback alive


def configure_llama_logging(level: str) -> None:
    """Route llama.cpp's own log lines into structlog, filtered by ``LLAMA_LOG_LEVEL``."""
    global _llama_log_callback
    import llama_cpp

    allowed = _LLAMA_VERBOSITY[level]
    llog = structlog.get_logger("llama.cpp")
    methods = {1: llog.error, 2: llog.warning, 3: llog.info, 4: llog.debug}
    state = {"last": 2}

    @llama_cpp.llama_log_callback
    def callback(ggml_level: int, text: bytes, user_data) -> None:
        if ggml_level == 5:
            ggml_level = state["last"]
        state["last"] = ggml_level
        rank = _GGML_RANK.get(ggml_level, 4)
        if rank > allowed:
            return
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            methods[rank](message, source="llama.cpp")

    _llama_log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


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


def load_llama(info: ModelInfo, settings) -> Any:
    """Create the ``llama_cpp.Llama`` for a model (runs on the model's worker thread)."""
    import llama_cpp

    n_gpu_layers = settings.n_gpu_layers
    if n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
        log.warning(
            "this llama-cpp-python build has no GPU offload; running on CPU "
            "(install it with CMAKE_ARGS=\"-DGGML_CUDA=on\" for CUDA)",
            model=info.id,
            n_gpu_layers=n_gpu_layers,
        )
        n_gpu_layers = 0
    return llama_cpp.Llama(
        model_path=str(info.path),
        n_ctx=settings.n_ctx,
        n_gpu_layers=n_gpu_layers,
        n_batch=settings.n_batch,
        n_threads=settings.threads,
        n_threads_batch=settings.threads,
        verbose=False,
    )


class ModelWorker:
    """One model's llama object and the single thread that touches it."""

    def __init__(self, info: ModelInfo, settings, loader: Callable = load_llama) -> None:
        self.info = info
        self.settings = settings
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{info.id[:20]}")
        self._llama = None
        self._load_error: ApiError | None = None
        self.pending = 0  # queued + running jobs (touched on the loop thread only)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def submit(self, generation: Generation, request: GenerationRequest) -> None:
        self.pending += 1
        future = self._executor.submit(self._run, generation, request)
        future.add_done_callback(lambda _f: generation._loop.call_soon_threadsafe(self._job_done))

    def _job_done(self) -> None:
        self.pending -= 1

    def close(self) -> None:
        """Finish queued work, then free the model (blocks; call from a thread)."""
        self._executor.submit(self._free).result()
        self._executor.shutdown(wait=True)

    # --- everything below runs on the worker thread

    def _free(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
            log.info("model unloaded", model=self.info.id)

    def _ensure_loaded(self):
        if self._llama is None and self._load_error is None:
            started = time.perf_counter()
            log.info("loading model", model=self.info.id, n_ctx=self.settings.n_ctx, n_gpu_layers=self.settings.n_gpu_layers)
            try:
                self._llama = self._loader(self.info, self.settings)
            except Exception as exc:  # llama.cpp raises ValueError for files it cannot load
                log.error("model failed to load", model=self.info.id, error=str(exc))
                self._load_error = ServerError(f"The model '{self.info.id}' failed to load; see the server log.")
            else:
                log.info("model loaded", model=self.info.id, seconds=round(time.perf_counter() - started, 3))
        if self._load_error is not None:
            raise self._load_error
        return self._llama

    def _run(self, generation: Generation, request: GenerationRequest) -> None:
        if generation.cancelled:
            generation.emit(Finished("cancelled", 0, 0))
            return
        try:
            llama = self._ensure_loaded()
            self._generate(llama, generation, request)
        except ApiError as exc:
            generation.emit(Failed(exc))
        except Exception:
            log.exception("generation failed", model=self.info.id)
            generation.emit(Failed(ServerError()))

    def _generate(self, llama, generation: Generation, request: GenerationRequest) -> None:
        import llama_cpp

        prompt = request.prompt
        tokens = llama.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
        # llama.cpp may round the context up (to a multiple of 256); llama-cpp-python's
        # token buffer keeps the size that was asked for, so the smaller one is the limit.
        n_ctx = min(llama.n_ctx(), len(llama.input_ids))
        n_prompt = len(tokens)
        budget = n_ctx - n_prompt
        if budget <= 0 or (request.max_tokens is not None and request.max_tokens > budget):
            raise ContextLengthExceeded(n_ctx, n_prompt, request.max_tokens)
        max_tokens = budget if request.max_tokens is None else request.max_tokens
        generation.emit(Started(n_prompt))

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
        generation.emit(Finished(reason, n_prompt, n_generated))


class Engine:
    """Model id -> :class:`ModelWorker`; creates workers on first use."""

    def __init__(self, settings_for: Callable[[ModelInfo], Any], loader: Callable = load_llama, llama_log_level: str = "warn") -> None:
        self._settings_for = settings_for
        self._loader = loader
        self._llama_log_level = llama_log_level
        self._workers: dict[str, ModelWorker] = {}

    def worker(self, info: ModelInfo) -> ModelWorker:
        worker = self._workers.get(info.id)
        if worker is None:
            if not self._workers and self._loader is load_llama:
                configure_llama_logging(self._llama_log_level)
            worker = self._workers[info.id] = ModelWorker(info, self._settings_for(info), self._loader)
        return worker

    def start(self, info: ModelInfo, request: GenerationRequest) -> Generation:
        """Queue a generation on the model's worker; must be called on the event loop."""
        generation = Generation(asyncio.get_running_loop())
        self.worker(info).submit(generation, request)
        return generation

    def status(self) -> dict[str, dict]:
        return {mid: {"loaded": w.loaded, "pending": w.pending} for mid, w in self._workers.items()}

    def pending(self) -> int:
        return sum(w.pending for w in self._workers.values())

    async def close(self) -> None:
        """Free every model (after queued work finishes)."""
        workers, self._workers = list(self._workers.values()), {}
        await asyncio.gather(*(asyncio.to_thread(w.close) for w in workers))
