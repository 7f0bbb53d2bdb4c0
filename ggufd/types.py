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
class ChatPrompt:
    """A rendered chat prompt.

    ``text`` is tokenized with special tokens parsed. ``add_bos`` asks the engine
    to prepend the model's BOS token (formatters strip a BOS they rendered
    themselves, so it is never doubled). ``stop`` are extra stop strings that
    belong to this format (end-of-turn markers).
    """

    text: str
    stop: tuple[str, ...] = ()
    add_bos: bool = True


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
