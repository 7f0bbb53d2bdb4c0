"""Continuous batching on one model: a :class:`BatchRunner` decodes every active sequence of
the model in one ``llama_decode`` per step.

A new request joins the running batch at the next step; long prompts are prefilled in
``n_batch`` chunks interleaved with the others' decoding; each sequence has its own sampler
chain (temperature, top-k/p, min-p, penalties, seed) and its own stop strings, UTF-8 holdback
and token budget. A finished sequence keeps its KV cells so that a conversation that
continues reuses its prefix.

A reasoning budget (``GenerationRequest.max_reasoning_tokens`` with ``prompt.reasoning`` set)
is tracked by a :class:`~ggufd.engine.reasoning_budget.ReasoningBudget`; once it is spent with
the reasoning still open, the tokens of the syntax's ``closing_text`` take the place of sampled
ones, one per step: decoded, emitted as text, counted in ``completion_tokens`` and accepted by
the sampler chain (its penalties see them) like generated tokens, but never ending the
generation (an end-of-generation token among them, a stop string: see
:meth:`TextAssembler.force <ggufd.engine.text_stream.TextAssembler.force>`). ``max_tokens``
bounds the whole answer, the close included. A request with a grammar gets no budget: a forced
token could break the grammar (llama.cpp's grammar sampler would reject it); the protocol layer
reports the budget as ignored. A request without a budget costs nothing more per token than an
attribute test.

Everything here except :meth:`BatchRunner.submit` and :meth:`BatchRunner.prepare` runs on
the model's device thread (:mod:`ggufd.engine.devices`), never on the event loop. ``prepare``
tokenizes a prompt in a worker thread before it is submitted: a long prompt's tokenization
does not stop the model's running batch, nor the other models on its device.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np
import structlog

from ggufd.engine.devices import heartbeat
from ggufd.engine.events import Finished, Started, TextDelta, TokenLogprob, deliver_events
from ggufd.engine.reasoning_budget import ReasoningBudget
from ggufd.engine.sampling import GreedyPick, make_sampler
from ggufd.engine.text_stream import TextAssembler
from ggufd.errors import ApiError, ContextLengthExceeded
from ggufd.types import GenerationRequest

if TYPE_CHECKING:
    from ggufd.engine.events import Generation
    from ggufd.engine.model import LoadedModel

log = structlog.get_logger("ggufd.llama")


@dataclass
class _Sequence:
    """One request inside the batch."""

    generation: Generation
    request: GenerationRequest
    future: Future
    tokens: list[int] | None = None  # the prompt, tokenized by ``prepare`` before ``submit``
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
    reasoning: ReasoningBudget | None = None  # a reasoning budget still being tracked
    markup: frozenset[int] = frozenset()  # control tokens rendered as their text (the family's markup)
    forced: deque[int] | None = None  # the rest of the close of a spent reasoning budget, one per step


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
        self._cached: dict[int, list[int]] = {
            seq_id: [] for seq_id in range(model.parallel)
        }  # tokens in each KV stream
        self._outbox: list = []  # (generation, event) of this step, delivered together
        self._closings: dict[str, list[int]] = {}  # closing texts of reasoning budgets, tokenized

    def prepare(self, request: GenerationRequest) -> list[int]:
        """The prompt's tokens, or :class:`ContextLengthExceeded` if it cannot fit with its
        ``max_tokens``. Thread-safe (the vocabulary is read-only): the engine calls it in a worker
        thread. A prompt too long to fit is refused from its length in bytes before tokenizing
        when it must have more tokens than fit (:meth:`LoadedModel.min_tokens`)."""
        n_ctx, max_tokens = self.model.n_ctx, request.max_tokens
        limit = n_ctx - max(1, max_tokens or 0)  # the most prompt tokens that fit (and leave one to generate)
        data = request.prompt.text.encode("utf-8")
        at_least = self.model.min_tokens(len(data), more_than=limit)
        if at_least is not None:
            raise ContextLengthExceeded(n_ctx, at_least, max_tokens, at_least=True)
        tokens = self.model.tokenize_bytes(data, request.prompt.add_bos)
        if len(tokens) > limit:
            raise ContextLengthExceeded(n_ctx, len(tokens), max_tokens)
        return tokens

    def submit(
        self, generation: Generation, request: GenerationRequest, tokens: list[int] | None = None
    ) -> tuple[Future, bool]:
        """Queue a request (its prompt's ``tokens`` from :meth:`prepare`, else it is tokenized
        when admitted); returns its future (resolved with the Finished event) and whether the
        caller must start :meth:`step` on the device thread (``DeviceExecutors.drive``)."""
        sequence = _Sequence(generation, request, Future(), tokens)
        with self._lock:
            self._inbox.append(sequence)
            start = not self._running
            self._running = True
        return sequence.future, start

    def step(self) -> bool:
        """One turn on the device thread: admit, drop the cancelled, decode one step. False once
        no sequence is left (the runner is idle; the next :meth:`submit` says to start it again)."""
        try:
            with self._lock:
                if not self._inbox and not self._active:
                    self._running = False
                    return False
            self._admit()
            self._drop_cancelled()
            if self._active:
                self._step()
            return True
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
            return False

    def run(self) -> None:
        """Step until no sequence is left (on the device thread, holding it)."""
        while self.step():
            pass

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
            try:
                tokens = sequence.tokens if sequence.tokens is not None else self.prepare(request)
                sampler = make_sampler(request.sampling, self.model.n_vocab, self.model.vocab, self.model.n_ctx)
            except ApiError as exc:
                sequence.future.set_exception(exc)
                continue
            budget = self.model.n_ctx - len(tokens)
            sequence.max_tokens = budget if request.max_tokens is None else request.max_tokens
            sequence.prompt = tokens
            sequence.seq_id = self._choose_stream(tokens)
            sequence.prefilled = len(self._cached[sequence.seq_id])
            sequence.sampler = sampler
            if GreedyPick.applies(request.sampling):
                sequence.greedy = GreedyPick(request.sampling.logit_bias)
            sequence.assembler = TextAssembler(request.stop + request.prompt.stop)
            if request.markup:
                sequence.markup = self.model.control_tokens(request.markup)
            syntax = request.prompt.reasoning
            if request.max_reasoning_tokens is not None and syntax is not None and not request.sampling.grammar:
                sequence.reasoning = ReasoningBudget(syntax, request.max_reasoning_tokens)
                if sequence.reasoning.due:  # a budget of 0 in an opened reasoning: closed before the first token
                    self._close_reasoning(sequence)
            self._active[sequence.seq_id] = sequence
            sequence.generation.emit(Started(len(tokens)))

    def _choose_stream(self, tokens: list[int]) -> int:
        """The free KV stream with the longest reusable prefix of ``tokens`` (at least half of it),
        else an empty or the least recently used one; the rest of its cache is cleared."""

        def common(seq_id: int) -> int:
            n = 0
            for a, b in zip(self._cached[seq_id], tokens, strict=False):  # the shorter one ends the prefix
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
        if not self.model.n_swa:
            return True
        pos_min = llama_cpp.llama_memory_seq_pos_min(self.model.memory, seq_id)  # -1: nothing cached
        return 0 <= pos_min <= max(0, keep - self.model.n_swa + 1)

    # --- one step

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._active.values() if s.generation.cancelled]:
            llama_cpp.llama_memory_seq_rm(self.model.memory, sequence.seq_id, -1, -1)
            self._cached[sequence.seq_id] = []
            self._finish(sequence, Finished("cancelled", len(sequence.prompt), sequence.n_generated))

    def _step(self) -> None:
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
            top_n = sequence.request.logprobs
            logprobs = self._logprobs(index) if top_n is not None else None
            if sequence.forced:  # writing the close of a spent reasoning budget: no sampling
                token = sequence.forced.popleft()
                if logprobs is not None and top_n is not None:
                    self._emit(sequence, self._token_logprob(token, logprobs, top_n))
                self._accept_forced(sequence, token)
                continue
            if sequence.greedy is not None:
                assert outputs is not None  # wants_logits is not empty here
                token = sequence.greedy.pick(outputs[row])
            else:
                token = llama_cpp.llama_sampler_sample(sequence.sampler, model.ctx, index)
            if logprobs is not None and top_n is not None and not model.is_eog(token):
                self._emit(sequence, self._token_logprob(token, logprobs, top_n))
            self._accept(sequence, token)
        self._deliver()

    def _outputs(self, n: int):
        """This step's logits, one row per entry that asked for them, in batch order (llama.cpp
        keeps them so): one numpy view per step instead of one per sequence."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.model.ctx), shape=(n, self.model.n_vocab))

    def _logits(self, index: int):
        """The model's logits for batch entry ``index``: a float32 view into llama.cpp's buffer,
        valid until the next decode."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.model.ctx, index), shape=(self.model.n_vocab,))

    def _logprobs(self, index: int):
        """log-softmax of the model's logits for batch entry ``index`` (before any sampler)."""
        logits = self._logits(index).astype(np.float64)
        shifted = logits - logits.max()
        return shifted - np.log(np.exp(shifted).sum())

    def _token_logprob(self, token: int, logprobs, top_n: int) -> TokenLogprob:
        def entry(t: int) -> tuple[str, tuple[int, ...], float]:
            data = self.model.token_bytes(int(t))
            return data.decode("utf-8", errors="replace"), tuple(data), float(logprobs[t])

        top: tuple[tuple[str, tuple[int, ...], float], ...] = ()
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
        assembler = sequence.assembler
        assert assembler is not None  # set when the sequence was admitted
        data = self._token_data(sequence, token)
        text = assembler.feed(data)
        if text:
            self._emit(sequence, TextDelta(text))
        if assembler.stopped:
            return self._end(sequence, "stop")
        if sequence.n_generated >= sequence.max_tokens or n_prompt + sequence.n_generated >= self.model.n_ctx:
            return self._end(sequence, "length")
        sequence.pending_token = token
        reasoning = sequence.reasoning
        if reasoning is not None:
            if reasoning.feed_bytes(data):
                self._close_reasoning(sequence)
            elif reasoning.done:
                sequence.reasoning = None

    def _token_data(self, sequence: _Sequence, token: int) -> bytes:
        """A generated (or forced) token's bytes: a control token of the family's markup as its text,
        any other control token as nothing (as llama.cpp renders them)."""
        if token in sequence.markup:
            return self.model.token_text(token)
        return self.model.token_bytes(token)

    def _close_reasoning(self, sequence: _Sequence) -> None:
        """The reasoning budget is spent: the close is written from the next step on."""
        assert sequence.reasoning is not None
        sequence.forced = deque(self._closing_tokens(sequence.reasoning.syntax.closing_text))
        sequence.reasoning.closed()
        sequence.reasoning = None

    def _accept_forced(self, sequence: _Sequence, token: int) -> None:
        """A token of the close, in place of a sampled one: counted and shown like one, accepted by
        the sampler chain (penalties; the numpy greedy pick has none), ending nothing but the length."""
        sequence.n_generated += 1
        assert sequence.assembler is not None
        text = sequence.assembler.force(self._token_data(sequence, token))
        if text:
            self._emit(sequence, TextDelta(text))
        if sequence.greedy is None:
            llama_cpp.llama_sampler_accept(sequence.sampler, token)
        if (
            sequence.n_generated >= sequence.max_tokens
            or len(sequence.prompt) + sequence.n_generated >= self.model.n_ctx
        ):
            return self._end(sequence, "length")
        sequence.pending_token = token

    def _closing_tokens(self, text: str) -> list[int]:
        """``text`` tokenized as the model would write it (special tokens parsed, no BOS); remembered.

        A SentencePiece vocabulary that adds a space prefix puts a lone space token at the start of
        a text and after each special token in it; not written by the model in mid-answer, and
        not in the text: dropped (while the tokens still spell the text out)."""
        tokens = self._closings.get(text)
        if tokens is None:
            tokens, target, at = [], text.encode("utf-8"), 0
            pieces = self.model.tokenize(text, False)
            for i, token in enumerate(pieces):
                piece = self.model.token_text(token)
                if target.startswith(piece, at):
                    at += len(piece)
                elif piece == b" ":
                    continue  # the space prefix
                else:  # another tokenization than piece by piece: keep it as it is
                    tokens.extend(pieces[i:])
                    break
                tokens.append(token)
            if len(self._closings) < 64:  # a few per family
                self._closings[text] = tokens
        return tokens

    def _end(self, sequence: _Sequence, reason: str) -> None:
        assert sequence.assembler is not None
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
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None

    def _forget_all(self) -> None:
        llama_cpp.llama_memory_clear(self.model.memory, True)
        self._cached = {seq_id: [] for seq_id in range(self.model.parallel)}
