"""A llama.cpp model and its context: loading and freeing it, its vocabulary (tokenize,
detokenize, token pieces) and embeddings. Everything here runs on the model's device thread,
except the read-only vocabulary calls :meth:`Engine.with_model
<ggufd.engine.lifecycle.Engine.with_model>` makes from a worker thread.

ggufd drives llama.cpp through llama-cpp-python's low-level API (the C functions), not
the high-level ``Llama`` class: one context per model holds ``parallel`` sequences, which
its :class:`~ggufd.engine.batch.BatchRunner` decodes together.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import llama_cpp
import numpy as np
import structlog

from ggufd.engine import cpu_probe
from ggufd.engine.batch import BatchRunner
from ggufd.engine.devices import Placement, heartbeat
from ggufd.engine.llama_log import LoadError, llama_errors
from ggufd.errors import InvalidRequest

log = structlog.get_logger("ggufd.llama")


_warned_extra_buffers = threading.Event()

#: Vocabularies whose tokens cover the text without dropping any of it (see ``min_tokens``).
_BOUNDED_VOCABS = (llama_cpp.LLAMA_VOCAB_TYPE_SPM, llama_cpp.LLAMA_VOCAB_TYPE_BPE)


def _extra_buffers_usable() -> bool:
    """False where llama.cpp's AMX kernel faults (:mod:`ggufd.engine.cpu_probe`); asked at the
    first load, not at start-up, so that the probe's child processes never delay listening."""
    if not cpu_probe.amx_unusable():
        return True
    if not _warned_extra_buffers.is_set():
        _warned_extra_buffers.set()
        log.warning(
            "llama.cpp's AMX kernel faults on this machine; its AMX and repacked weight buffers are off",
            reason=cpu_probe.amx_reason(),
        )
    return False


def set_mmap(model_params, mmap: bool) -> None:
    """Map the weights from the file, or read them into memory (or onto the GPU) so that a later
    write to the file cannot touch them. llama.cpp's ``load_mode`` (``use_mmap`` before it); lazy
    tensor reading needs the mapping, so it is off without one."""
    fields = {name for name, *_ in type(model_params)._fields_}
    if "load_mode" in fields:
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        if not mmap and "lazy_mode" in fields:
            model_params.lazy_mode = llama_cpp.LLAMA_LAZY_MODE_OFF
    else:  # pragma: no cover - llama-cpp-python before load_mode
        model_params.use_mmap = mmap


class LoadedModel:
    """A llama.cpp model and its context with ``parallel`` sequences (each ``n_ctx`` long)."""

    def __init__(
        self,
        path: str,
        settings,
        placement: Placement,
        on_progress: Callable[[float], None] | None = None,
        embedding: bool = False,
    ) -> None:
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if placement.n_gpu_layers < 0 else placement.n_gpu_layers
        model_params.main_gpu = placement.main_gpu
        model_params.split_mode = placement.split_mode
        set_mmap(model_params, bool(getattr(settings, "mmap", False)))
        if not _extra_buffers_usable():
            model_params.use_extra_bufts = False  # plain CPU weight buffers (llama-server's --no-repack)
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
        self._control_tokens: dict[tuple[str, ...], frozenset[int]] = {}  # family markups: a handful
        self._eog: dict[int, bool] = {}
        self._max_token_text: int | None = None
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_swa = llama_cpp.llama_model_n_swa(self.model)  # 0: no sliding-window layers
        self.n_ctx = min(n_ctx, llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.runner = BatchRunner(self)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self.tokenize_bytes(text.encode("utf-8"), add_bos)

    def tokenize_bytes(self, data: bytes, add_bos: bool) -> list[int]:
        size = len(data) + 8  # enough: a token covers at least one byte (plus BOS and a space prefix)
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, size, add_bos, True)
            if n >= 0:
                return list(buffer[:n])
            size = -n

    def min_tokens(self, n_bytes: int, more_than: int) -> int | None:
        """A lower bound on the tokens of any text of ``n_bytes`` bytes, when it exceeds
        ``more_than``; else None (tokenize to know). Cheap, to refuse a prompt that cannot fit
        before tokenizing it: llama.cpp's tokenizer is superlinear on some long inputs (768 KB
        of spaces: 2.7 s for gemma). A token of a SentencePiece or byte-level BPE vocabulary
        stands for at most as many bytes of the text as its own text has (the longest:
        :meth:`max_token_text`), and these tokenizers drop nothing, so the bound never refuses
        a text that would fit. No bound (None) where text can vanish: WordPiece and Unigram
        normalise whitespace, and a special token marked to strip the whitespace beside it
        (llama.cpp does so for phi-3's) swallows any amount of it."""
        if n_bytes <= more_than:
            return None  # a token has at least one byte: a text this short may fit
        longest = self.max_token_text()
        if longest is None:
            return None
        at_least = -(-n_bytes // longest)
        return at_least if at_least > more_than else None

    def max_token_text(self) -> int | None:
        """The longest token text of the vocabulary in bytes, None where a token may stand for
        more of the text than its own (see :meth:`min_tokens`). Computed on first use, in the
        worker thread of the first long prompt (0.4 s for gemma's 262k tokens)."""
        if self._max_token_text is None:
            vocab, longest = self.vocab, 0
            if llama_cpp.llama_vocab_type(vocab) in _BOUNDED_VOCABS:
                strip = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP | llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP
                for token in range(self.n_vocab):
                    if llama_cpp.llama_vocab_get_attr(vocab, token) & strip:
                        longest = 0
                        break
                    longest = max(longest, len(llama_cpp.llama_vocab_get_text(vocab, token) or b""))
            self._max_token_text = longest  # 0: no bound
        return self._max_token_text or None

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
            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return eog

    def control_tokens(self, markup: tuple[str, ...]) -> frozenset[int]:
        """The tokens among ``markup`` strings that are single control tokens of this vocabulary
        (rendered as nothing by :meth:`token_bytes`); remembered per set of strings."""
        found = self._control_tokens.get(markup)
        if found is None:
            ids: set[int] = set()
            for text in markup:
                data = text.encode("utf-8")
                # a SentencePiece vocabulary may put a space token before it: look for the token itself
                ids.update(
                    t for t in self.tokenize(text, False) if self.token_text(t) == data and not self.token_bytes(t)
                )
            if len(self._control_tokens) >= 64:
                self._control_tokens.clear()
            found = self._control_tokens[markup] = frozenset(ids)
        return found

    def token_text(self, token: int) -> bytes:
        """The bytes of one token with a special token rendered as its text (not remembered)."""
        return self._piece(token, special=True)

    def _piece(self, token: int, special: bool = False) -> bytes:
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, special)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def embed(self, inputs: list) -> tuple[list[list[float]], int]:
        """Mean-pooled (or the model's own pooling), L2-normalised embeddings of each input
        (a string or a list of token ids); returns them and the number of tokens used."""
        vectors, used = [], 0
        n_embd = llama_cpp.llama_model_n_embd(self.model)
        for index, item in enumerate(inputs):
            tokens = self.tokenize(item, True) if isinstance(item, str) else list(item)
            if not tokens or len(tokens) > self.n_ctx:
                raise InvalidRequest(
                    f"Input {index} has {len(tokens)} tokens; this model embeds 1 to {self.n_ctx}.", param="input"
                )
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
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        size = 8 * len(tokens) + 16
        while True:  # llama.cpp's own detokenizer: it undoes the SentencePiece space prefix
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self.vocab, array, len(tokens), buffer, size, False, False)
            if n >= 0:
                return buffer.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def close(self) -> None:
        self.runner.close()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
        self.ctx = self.model = None


def load_model(
    path: str, settings, placement: Placement, on_progress: Callable[[float], None] | None = None
) -> LoadedModel:
    return LoadedModel(path, settings, placement, on_progress, embedding=settings.embedding)


def free_model(model: LoadedModel) -> None:
    model.close()
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Give the freed weights back to the system (glibc's ``malloc_trim``).

    With ``mmap = false`` the weights live in malloc'd buffers; after the first large free, glibc
    raises its mmap threshold and later buffers come from the heap, which keeps freed pages: 50
    load/unload cycles of a 9 MB model grew RSS by 29 MB before this (measured in
    tests/test_lifecycle.py). A no-op where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
