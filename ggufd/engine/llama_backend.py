"""Everything that touches llama_cpp: loading a model, and continuous batching on it.

ggufd drives llama.cpp through llama-cpp-python's low-level API (the C functions), not
the high-level ``Llama`` class: one context per model holds ``parallel`` sequences, and a
:class:`BatchRunner` decodes every active sequence of the model in one ``llama_decode``
per step. A new request joins the running batch at the next step; long prompts are
prefilled in ``n_batch`` chunks interleaved with the others' decoding; each sequence has
its own sampler chain (temperature, top-k/p, min-p, penalties, seed) and its own stop
strings, UTF-8 holdback and token budget. A finished sequence keeps its KV cells so that
a conversation that continues reuses its prefix.

Every function here except :func:`configure_llama` and :meth:`BatchRunner.submit` runs on
the model's device thread (:mod:`ggufd.engine.devices`), never on the event loop.
"""

from __future__ import annotations

import ctypes
import random
import threading
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from ggufd.engine.devices import Placement, heartbeat
from ggufd.engine.events import Finished, Started, TextDelta, TokenLogprob, deliver_events
from ggufd.errors import ApiError, ContextLengthExceeded, InvalidRequest
from ggufd.engine.text_stream import TextAssembler
from ggufd.types import GenerationRequest, SamplingParams

log = structlog.get_logger("ggufd.llama")

#: LLAMA_LOG_LEVEL -> how verbose llama.cpp may be (0 = silent).
_LLAMA_VERBOSITY = {"none": 0, "error": 1, "warn": 2, "warning": 2, "info": 3, "debug": 4}
#: ggml_log_level (ggml.h: 1 debug, 2 info, 3 warn, 4 error, 5 continuation) -> verbosity rank.
_GGML_RANK = {4: 1, 3: 2, 2: 3, 1: 4}
_keep_alive: list = []  # ctypes callbacks must outlive their registration
_configured = threading.Lock()
_errors: deque[str] = deque(maxlen=32)  # llama.cpp's latest error lines, whatever the log level
_capture = threading.local()  # .lines: a list collecting this thread's llama.cpp errors (see llama_errors)
PENALTY_LAST_N = 64  # tokens the repeat/frequency/presence penalties look back on


def configure_llama(level: str) -> None:
    """Once per process: initialise llama.cpp and route its log lines into structlog."""
    import llama_cpp

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


def make_sampler(s: SamplingParams, n_vocab: int, vocab=None):
    """A sampler chain for one sequence: logit bias -> penalties -> grammar ->
    (greedy | top-k -> top-p -> min-p -> temperature -> seeded draw), llama-cpp-python's order.
    Raises InvalidRequest for a token id outside the vocabulary or a grammar llama.cpp rejects."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
    if s.logit_bias:
        bad = [token for token, _ in s.logit_bias if not 0 <= token < n_vocab]
        if bad:
            llama_cpp.llama_sampler_free(chain)
            raise InvalidRequest(f"logit_bias names token {bad[0]}, but the vocabulary has {n_vocab} tokens.", param="logit_bias")
        biases = (llama_cpp.llama_logit_bias * len(s.logit_bias))(*[llama_cpp.llama_logit_bias(token, bias) for token, bias in s.logit_bias])
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(s.logit_bias), biases))
    repeat = s.repeat_penalty if s.repeat_penalty is not None else 1.0
    if repeat != 1.0 or s.frequency_penalty or s.presence_penalty:
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, repeat, s.frequency_penalty or 0.0, s.presence_penalty or 0.0))
    if s.grammar:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, s.grammar.encode("utf-8"), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise InvalidRequest("The grammar for response_format could not be compiled.", param="response_format")
        add(grammar)
    temperature = s.temperature if s.temperature is not None else 0.8
    if temperature == 0:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        add(llama_cpp.llama_sampler_init_top_k(s.top_k if s.top_k is not None else 40))
        add(llama_cpp.llama_sampler_init_top_p(s.top_p if s.top_p is not None else 0.95, 1))
        add(llama_cpp.llama_sampler_init_min_p(s.min_p if s.min_p is not None else 0.05, 1))
        add(llama_cpp.llama_sampler_init_temp(temperature))
        add(llama_cpp.llama_sampler_init_dist(s.seed if s.seed is not None and s.seed >= 0 else random.getrandbits(32)))
    return chain


class GreedyPick:
    """Temperature 0 without penalties or grammar: the highest (biased) logit, read with numpy.

    The same choice as llama.cpp's logit-bias -> greedy chain (first maximum in token order,
    float32 biases), without building its array of every vocabulary entry for each token:
    that took 0.19 ms per sequence and step for gemma's 262k vocabulary (numpy: 0.02 ms),
    little beside a 10 ms CPU step but a large share of a GPU step of about 1 ms."""

    def __init__(self, logit_bias: tuple[tuple[int, float], ...]) -> None:
        import numpy as np

        self.ids = np.array([token for token, _ in logit_bias], dtype=np.int64)
        self.biases = np.array([bias for _, bias in logit_bias], dtype=np.float32)

    @staticmethod
    def applies(s: SamplingParams) -> bool:
        repeat = s.repeat_penalty if s.repeat_penalty is not None else 1.0
        return s.temperature == 0 and not s.grammar and repeat == 1.0 and not s.frequency_penalty and not s.presence_penalty

    def pick(self, logits) -> int:
        """``logits``: the float32 row of one batch entry in llama.cpp's buffer. Biased entries are
        changed for the argmax and put back exactly (a copy of a 262k row cost more than the argmax)."""
        import numpy as np

        if not len(self.ids):
            return int(logits.argmax())
        saved = logits[self.ids]  # fancy indexing: a copy
        np.add.at(logits, self.ids, self.biases)  # a repeated id adds up, as in llama.cpp's logit-bias sampler
        try:
            return int(logits.argmax())
        finally:
            logits[self.ids] = saved


class LoadedModel:
    """A llama.cpp model and its context with ``parallel`` sequences (each ``n_ctx`` long)."""

    def __init__(self, path: str, settings, placement: Placement, on_progress: Callable[[float], None] | None = None,
                 embedding: bool = False) -> None:
        import llama_cpp

        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if placement.n_gpu_layers < 0 else placement.n_gpu_layers
        model_params.main_gpu = placement.main_gpu
        model_params.split_mode = placement.split_mode
        if on_progress is not None:

            @llama_cpp.llama_progress_callback
            def progress(value: float, user_data) -> bool:
                heartbeat()
                on_progress(float(value))
                return True

            model_params.progress_callback = progress
            self._progress = progress  # keep alive while loading
        with llama_errors() as errors:
            self.model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), model_params)
        if not self.model:
            raise LoadError("llama.cpp could not load the model file", errors)
        self.embedding = embedding
        self.parallel = 1 if embedding else max(1, settings.parallel)
        n_ctx = settings.n_ctx or llama_cpp.llama_model_n_ctx_train(self.model)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx * self.parallel
        # an embedding input is decoded in one batch: the batch holds a whole context
        ctx_params.n_batch = n_ctx if embedding else settings.n_batch
        ctx_params.n_ubatch = ctx_params.n_batch
        ctx_params.n_seq_max = self.parallel
        if embedding:
            ctx_params.embeddings = True
            if not settings.gguf_pooling:  # a chat model used for embeddings: average its token states
                ctx_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        ctx_params.n_threads = settings.threads
        ctx_params.n_threads_batch = settings.threads
        ctx_params.flash_attn_type = {"auto": -1, False: 0, True: 1}[settings.flash_attn]
        ctx_params.swa_full = settings.swa_full
        # One KV buffer for all sequences (masked per sequence). Separate streams (kv_unified = False)
        # decoded about half as fast here once KV cells had been reused by partial prefix removal.
        ctx_params.kv_unified = True
        with llama_errors() as errors:
            self.ctx = llama_cpp.llama_init_from_model(self.model, ctx_params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise LoadError("llama.cpp could not create a context for the model", errors)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_swa = llama_cpp.llama_model_n_swa(self.model)  # 0: no sliding-window layers
        self.n_ctx = min(n_ctx, llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.runner = BatchRunner(self)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, size, add_bos, True)
            if n >= 0:
                return list(buffer[:n])
            size = -n

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one generated token (special tokens render as nothing); remembered."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token)
        return piece

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of sequence / of turn); remembered."""
        eog = self._eog.get(token)
        if eog is None:
            import llama_cpp

            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return eog

    def _piece(self, token: int) -> bytes:
        import llama_cpp

        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def embed(self, inputs: list) -> tuple[list[list[float]], int]:
        """Mean-pooled (or the model's own pooling), L2-normalised embeddings of each input
        (a string or a list of token ids); returns them and the number of tokens used."""
        import llama_cpp
        import numpy as np

        vectors, used = [], 0
        n_embd = llama_cpp.llama_model_n_embd(self.model)
        for index, item in enumerate(inputs):
            tokens = self.tokenize(item, True) if isinstance(item, str) else list(item)
            if not tokens or len(tokens) > self.n_ctx:
                raise InvalidRequest(f"Input {index} has {len(tokens)} tokens; this model embeds 1 to {self.n_ctx}.", param="input")
            if any(not 0 <= t < self.n_vocab for t in tokens):
                raise InvalidRequest(f"Input {index} has a token outside the vocabulary.", param="input")
            heartbeat()
            llama_cpp.llama_memory_clear(self.memory, True)
            batch = self.batch
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
                batch.seq_id[i][0] = 0
            batch.n_tokens = len(tokens)
            if llama_cpp.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed while embedding")
            pointer = llama_cpp.llama_get_embeddings_seq(self.ctx, 0)
            vector = np.ctypeslib.as_array(pointer, shape=(n_embd,)).astype(np.float64)
            norm = np.linalg.norm(vector)
            vectors.append((vector / norm if norm > 0 else vector).tolist())
            used += len(tokens)
        return vectors, used

    def detokenize(self, tokens: list[int]) -> str:
        bad = next((token for token in tokens if not 0 <= token < self.n_vocab), None)
        if bad is not None:  # llama.cpp does not check token ids
            raise InvalidRequest(f"Token {bad} is outside the vocabulary of {self.n_vocab} tokens.", param="tokens")
        import llama_cpp

        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        size = 8 * len(tokens) + 16
        while True:  # llama.cpp's own detokenizer: it undoes the SentencePiece space prefix
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self.vocab, array, len(tokens), buffer, size, False, False)
            if n >= 0:
                return buffer.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def close(self) -> None:
        import llama_cpp

        self.runner.close()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
        self.ctx = self.model = None


def load_model(path: str, settings, placement: Placement, on_progress: Callable[[float], None] | None = None) -> LoadedModel:
    return LoadedModel(path, settings, placement, on_progress, embedding=settings.embedding)


def free_model(model: LoadedModel) -> None:
    model.close()


@dataclass
class _Sequence:
    """One request inside the batch."""

    generation: Any  # ggufd.engine.lifecycle.Generation
    request: GenerationRequest
    future: Future
    seq_id: int = -1
    prompt: list[int] = field(default_factory=list)
    prefilled: int = 0  # prompt tokens in the KV cache
    pending_token: int | None = None  # sampled, to be decoded at the next step
    n_generated: int = 0
    max_tokens: int = 0
    sampler: Any = None
    greedy: GreedyPick | None = None  # set: sampled with numpy instead of ``sampler``
    text_sent: bool = False
    held: list = field(default_factory=list)  # events of a request that does not stream, kept for its end
    assembler: TextAssembler | None = None


class BatchRunner:
    """Continuous batching for one model: ``submit`` from anywhere, ``run`` on the device thread."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._inbox: deque[_Sequence] = deque()
        self._running = False
        self._active: dict[int, _Sequence] = {}
        self._free = list(range(model.parallel))
        self._finished_at = [0] * model.parallel  # step count when each KV stream's last request ended
        self._steps = 0
        self._cached: dict[int, list[int]] = {seq_id: [] for seq_id in range(model.parallel)}  # tokens in each KV stream
        self._outbox: list = []  # (generation, event) of this step, delivered together

    def submit(self, generation, request: GenerationRequest) -> tuple[Future, bool]:
        """Queue a request; returns its future (resolved with the Finished event) and whether
        the caller must start :meth:`run` on the device thread."""
        sequence = _Sequence(generation, request, Future())
        with self._lock:
            self._inbox.append(sequence)
            start = not self._running
            self._running = True
        return sequence.future, start

    def run(self) -> None:
        """Step until no sequence is left (on the device thread)."""
        try:
            while True:
                with self._lock:
                    if not self._inbox and not self._active:
                        self._running = False
                        return
                self._admit()
                self._drop_cancelled()
                if self._active:
                    self._step()
        except BaseException as exc:  # a bug: fail every request instead of hanging them
            log.exception("batch runner failed")
            with self._lock:
                pending = list(self._inbox) + list(self._active.values())
                self._inbox.clear()
                self._active.clear()
                self._free = list(range(self.model.parallel))
                self._running = False
            self._outbox.clear()  # half a step's events: their generations end with the error below
            for sequence in pending:
                self._free_sampler(sequence)
                if not sequence.future.done():
                    sequence.future.set_exception(exc)
            self._forget_all()

    def close(self) -> None:
        for sequence in self._active.values():
            self._free_sampler(sequence)

    # --- admission

    def _admit(self) -> None:
        while self._free:
            with self._lock:
                if not self._inbox:
                    return
                sequence = self._inbox.popleft()
            if sequence.generation.cancelled:  # the client left while queued: never runs
                sequence.future.set_result(Finished("cancelled", 0, 0))
                continue
            request = sequence.request
            tokens = self.model.tokenize(request.prompt.text, request.prompt.add_bos)
            n_ctx = self.model.n_ctx
            budget = n_ctx - len(tokens)
            if budget <= 0 or (request.max_tokens is not None and request.max_tokens > budget):
                sequence.future.set_exception(ContextLengthExceeded(n_ctx, len(tokens), request.max_tokens))
                continue
            try:
                sampler = make_sampler(request.sampling, self.model.n_vocab, self.model.vocab)
            except ApiError as exc:
                sequence.future.set_exception(exc)
                continue
            sequence.max_tokens = budget if request.max_tokens is None else request.max_tokens
            sequence.prompt = tokens
            sequence.seq_id = self._take_slot(tokens)
            sequence.prefilled = len(self._cached[sequence.seq_id])
            sequence.sampler = sampler
            if GreedyPick.applies(request.sampling):
                sequence.greedy = GreedyPick(request.sampling.logit_bias)
            sequence.assembler = TextAssembler(request.stop + request.prompt.stop)
            self._active[sequence.seq_id] = sequence
            sequence.generation.emit(Started(len(tokens)))

    def _take_slot(self, tokens: list[int]) -> int:
        """The free KV stream with the longest reusable prefix of ``tokens`` (at least half of it),
        else an empty or the least recently used one; the rest of its cache is cleared."""
        import llama_cpp

        def common(seq_id: int) -> int:
            n = 0
            for a, b in zip(self._cached[seq_id], tokens):
                if a != b:
                    break
                n += 1
            return n

        def reusable(seq_id: int) -> int:
            keep = min(common(seq_id), len(tokens) - 1)  # the last prompt token is decoded again for its logits
            return keep if keep and self._window_intact(seq_id, keep) else 0

        seq_id = max(self._free, key=reusable)
        if 2 * reusable(seq_id) < len(tokens):
            # Less than half of the prompt is cached anywhere: another conversation (sharing a chat
            # header or a short system prompt). Keep the other conversations' caches for them: take
            # an empty stream, else the one whose request ended longest ago (llama-server: LRU).
            seq_id = min(self._free, key=lambda s: (bool(self._cached[s]), self._finished_at[s]))
        self._free.remove(seq_id)
        keep = reusable(seq_id)
        if not llama_cpp.llama_memory_seq_rm(self.model.memory, seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(self.model.memory, seq_id, -1, -1)
            keep = 0
        self._cached[seq_id] = self._cached[seq_id][:keep]
        return seq_id

    def _window_intact(self, seq_id: int, keep: int) -> bool:
        """Whether the cache still holds what decoding from position ``keep`` needs. A sliding-window
        layer's cache (``swa_full = false``) drops positions that left the window of the sequence's
        last token. A token at ``keep`` attends to positions after ``keep - n_swa`` (llama.cpp masks
        ``p1 - p0 >= n_swa``), so those must still be there."""
        import llama_cpp

        if not self.model.n_swa:
            return True
        pos_min = llama_cpp.llama_memory_seq_pos_min(self.model.memory, seq_id)  # -1: nothing cached
        return 0 <= pos_min <= max(0, keep - self.model.n_swa + 1)

    # --- one step

    def _drop_cancelled(self) -> None:
        import llama_cpp

        for sequence in [s for s in self._active.values() if s.generation.cancelled]:
            llama_cpp.llama_memory_seq_rm(self.model.memory, sequence.seq_id, -1, -1)
            self._cached[sequence.seq_id] = []
            self._finish(sequence, Finished("cancelled", len(sequence.prompt), sequence.n_generated))

    def _step(self) -> None:
        import llama_cpp

        heartbeat()
        self._steps += 1
        model = self.model
        batch = model.batch
        n = 0
        wants_logits: list[tuple[int, _Sequence]] = []

        def add(token: int, sequence: _Sequence, logits: bool) -> None:
            nonlocal n
            cached = self._cached[sequence.seq_id]
            batch.token[n] = token
            batch.pos[n] = len(cached)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = sequence.seq_id
            batch.logits[n] = logits
            cached.append(token)
            if logits:
                wants_logits.append((n, sequence))
            n += 1

        for sequence in self._active.values():  # one token for every decoding sequence
            if sequence.pending_token is not None:
                add(sequence.pending_token, sequence, True)
                sequence.pending_token = None
        for sequence in self._active.values():  # prompt chunks fill the rest of the batch
            while sequence.prefilled < len(sequence.prompt) and n < model.n_batch:
                sequence.prefilled += 1
                add(sequence.prompt[sequence.prefilled - 1], sequence, sequence.prefilled == len(sequence.prompt))
        if n == 0:
            return
        batch.n_tokens = n
        status = llama_cpp.llama_decode(model.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        outputs = self._outputs(len(wants_logits)) if wants_logits else None  # a mid-prompt chunk asks for none
        for row, (index, sequence) in enumerate(wants_logits):
            logprobs = self._logprobs(index) if sequence.request.logprobs is not None else None
            if sequence.greedy is not None:
                token = sequence.greedy.pick(outputs[row])
            else:
                token = llama_cpp.llama_sampler_sample(sequence.sampler, model.ctx, index)
            if logprobs is not None and not model.is_eog(token):
                self._emit(sequence, self._token_logprob(token, logprobs, sequence.request.logprobs))
            self._accept(sequence, token)
        self._deliver()

    def _outputs(self, n: int):
        """This step's logits, one row per entry that asked for them, in batch order (llama.cpp
        keeps them so): one numpy view per step instead of one per sequence."""
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.model.ctx), shape=(n, self.model.n_vocab))

    def _logits(self, index: int):
        """The model's logits for batch entry ``index``: a float32 view into llama.cpp's buffer,
        valid until the next decode."""
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.model.ctx, index), shape=(self.model.n_vocab,))

    def _logprobs(self, index: int):
        """log-softmax of the model's logits for batch entry ``index`` (before any sampler)."""
        import numpy as np

        logits = self._logits(index).astype(np.float64)
        shifted = logits - logits.max()
        return shifted - np.log(np.exp(shifted).sum())

    def _token_logprob(self, token: int, logprobs, top_n: int) -> TokenLogprob:
        import numpy as np

        def entry(t: int) -> tuple[str, tuple[int, ...], float]:
            data = self.model.token_bytes(int(t))
            return data.decode("utf-8", errors="replace"), tuple(data), float(logprobs[t])

        top = ()
        if top_n:
            best = np.argpartition(-logprobs, top_n)[:top_n]
            top = tuple(entry(t) for t in best[np.argsort(-logprobs[best])])
        text, data, logprob = entry(token)
        return TokenLogprob(text, data, logprob, top)

    def _emit(self, sequence: _Sequence, event) -> None:
        """Queue an event for this step's delivery. A request that does not stream gets its first
        text at once (time to first token) and the rest with its end: its handler would only
        collect the pieces, and each delivery wakes the event loop."""
        if sequence.request.stream or not sequence.text_sent:
            sequence.text_sent = sequence.text_sent or isinstance(event, TextDelta)
            self._outbox.append((sequence.generation, event))
        else:
            sequence.held.append((sequence.generation, event))

    def _deliver(self) -> None:
        """Hand this step's text to the event loop in one wake-up, not one per sequence: every
        wake-up is a thread the CPU must schedule while llama.cpp's threads compute."""
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            deliver_events(outbox)

    def _accept(self, sequence: _Sequence, token: int) -> None:
        n_prompt = len(sequence.prompt)
        if self.model.is_eog(token):
            return self._end(sequence, "stop")
        sequence.n_generated += 1
        text = sequence.assembler.feed(self.model.token_bytes(token))
        if text:
            self._emit(sequence, TextDelta(text))
        if sequence.assembler.stopped:
            return self._end(sequence, "stop")
        if sequence.n_generated >= sequence.max_tokens or n_prompt + sequence.n_generated >= self.model.n_ctx:
            return self._end(sequence, "length")
        sequence.pending_token = token

    def _end(self, sequence: _Sequence, reason: str) -> None:
        tail = sequence.assembler.finish()
        if tail:
            self._emit(sequence, TextDelta(tail))
        self._finish(sequence, Finished(reason, len(sequence.prompt), sequence.n_generated))

    def _finish(self, sequence: _Sequence, final) -> None:
        self._outbox.extend(sequence.held)
        self._deliver()  # its text before its end
        self._free_sampler(sequence)
        del self._active[sequence.seq_id]
        self._free.append(sequence.seq_id)
        self._finished_at[sequence.seq_id] = self._steps
        sequence.future.set_result(final)

    @staticmethod
    def _free_sampler(sequence: _Sequence) -> None:
        import llama_cpp

        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None

    def _forget_all(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.model.memory, True)
        self._cached = {seq_id: [] for seq_id in range(self.model.parallel)}
