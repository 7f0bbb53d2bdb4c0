"""Small frozen dataclasses that cross the plugin-hook boundary.

Plugins see these types and nothing of the engine or of HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ggufd.gguf_metadata import GGUFMetadata


@dataclass(frozen=True)
class ModelSpec:
    """A model a discovery plugin found: where it lives and how it is configured.

    ``id`` is what clients put in ``model``; ``path`` is the GGUF file (the first
    shard of a split model). ``options`` holds the per-model settings from the
    config file (n_ctx, n_gpu_layers, family, chat_template, sampling, ...);
    explicit ``[models."<id>"]`` entries override what directory discovery found.
    """

    id: str
    path: Path
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "directory"


@dataclass(frozen=True)
class ModelInfo:
    """A served model: its spec, its GGUF metadata and the family that claimed it."""

    spec: ModelSpec
    metadata: GGUFMetadata
    family: str

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def options(self) -> Mapping[str, Any]:
        return self.spec.options


@dataclass(frozen=True)
class ReasoningSyntax:
    """How a family's models write their reasoning, e.g. ``<think>`` … ``</think>``.

    ``opened``: the prompt already opened the reasoning (a generation prompt ending in
    ``<think>``), so the answer starts inside it. ``close`` is what ends the reasoning when a
    reasoning budget is spent: the engine makes the model "write" it, then the answer begins
    (default: ``"\n" + end + "\n\n"``).
    """

    start: str
    end: str
    opened: bool = False
    close: str | None = None

    @property
    def closing_text(self) -> str:
        return self.close if self.close is not None else f"\n{self.end}\n\n"


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered chat prompt.

    ``text`` is tokenized with special tokens parsed. ``add_bos`` asks the engine
    to prepend the model's BOS token (formatters strip a BOS they rendered
    themselves, so it is never doubled). ``stop`` are extra stop strings that
    belong to this format (end-of-turn markers).

    What the formatter tells ggufd beyond the text:

    - ``tools_rendered``: the ``tools`` passed to ``format_chat`` are in the prompt in the
      family's own syntax; otherwise ggufd describes them in a system message and renders again;
    - ``honoured``: the ``template_kwargs`` keys that changed the prompt (or the answer), so that
      the others can be reported as ignored (``X-Ggufd-Ignored``);
    - ``reasoning``: the model reasons in this syntax; ``None`` when it does not (or not here).
      Needed for a reasoning budget; the family's ``answer_filter`` splits the reasoning off.
    """

    text: str
    stop: tuple[str, ...] = ()
    add_bos: bool = True
    tools_rendered: bool = False
    honoured: frozenset[str] = frozenset()
    reasoning: ReasoningSyntax | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request; ``None`` means "use the model's default"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    # llama.cpp's extra samplers (its server's names; None: llama.cpp's default, which is "off")
    typical_p: float | None = None  # 1.0: off
    dry_multiplier: float | None = None  # 0: off
    dry_base: float | None = None  # 1.75
    dry_allowed_length: int | None = None  # 2
    dry_penalty_last_n: int | None = None  # -1: the context
    dry_sequence_breakers: tuple[str, ...] | None = None  # ("\n", ":", '"', "*")
    xtc_probability: float | None = None  # 0: off
    xtc_threshold: float | None = None  # 0.1
    top_n_sigma: float | None = None  # -1: off
    mirostat: int | None = None  # 0: off, 1: Mirostat, 2: Mirostat 2.0
    mirostat_tau: float | None = None  # 5.0
    mirostat_eta: float | None = None  # 0.1
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias)
    grammar: str | None = None  # GBNF that constrains the output (response_format)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything the engine needs to run one generation."""

    prompt: ChatPrompt
    sampling: SamplingParams
    max_tokens: int | None  # None: until end of sequence or end of context
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: off; N: each token's logprob and its N most likely alternatives
    stream: bool = True  # False: the text is read only at the end (the engine may hand it over in one piece)
    #: the family's markup (``markup_tokens``: ``[TOOL_CALLS]``, ``[THINK]``, ...): where the vocabulary has
    #: them as control tokens, which llama.cpp renders as nothing, they are rendered as their text
    markup: tuple[str, ...] = ()
    #: the most tokens the model may reason (``prompt.reasoning`` must be set); then it is made to close
    #: its reasoning and answer. None: no limit
    max_reasoning_tokens: int | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call in a streamed answer. The first piece of each call has its ``id``
    and ``name``; ``arguments`` are fragments of its JSON arguments, in order (joined, they are
    the call's whole arguments)."""

    index: int  # 0, 1, ... in the order the calls appear
    arguments: str = ""
    id: str | None = None
    name: str | None = None


class ToolCallStream(Protocol):
    """Finds tool calls in one answer's content while it is generated; see the ``tool_call_stream``
    hook. Each call returns, in order, content (``str``) and :class:`ToolCallDelta` pieces.

    Concatenating the results must give the same content and calls however the text was split."""

    def feed(self, text: str) -> list[str | ToolCallDelta]: ...

    def finish(self) -> list[str | ToolCallDelta]: ...


class AnswerFilter(Protocol):
    """Splits one request's generated text into (content, reasoning); see the ``answer_filter`` hook.

    Concatenating the pieces must give the same result however the text was split."""

    def feed(self, text: str) -> tuple[str, str]: ...

    def finish(self) -> tuple[str, str]: ...


class PassThrough:
    """The answer filter for families without one: all text is content."""

    @staticmethod
    def feed(text: str) -> tuple[str, str]:
        return text, ""

    @staticmethod
    def finish() -> tuple[str, str]:
        return "", ""
