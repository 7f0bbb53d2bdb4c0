"""What every wire format's request has in common once parsed: sampling, token budget, stops.

Each format's module parses its own body into a subclass of :class:`GenerationOptions`; the
model's configured ``sampling`` table and the operator's limits then apply the same way to all
of them (:func:`with_model_defaults`, :func:`apply_server_limits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ggufd.errors import InvalidRequest
from ggufd.types import SamplingParams

SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """The fields a parsed request of any format carries for the engine."""

    model: str | None
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool = False
    max_tokens_given: bool = False  # a token limit was sent (even as -1/null: "no limit")
    stop_given: bool = False
    logprobs: int | None = None  # None: off; N: with N alternatives per token


Options = TypeVar("Options", bound=GenerationOptions)


@dataclass(frozen=True)
class ServerLimits:
    """The operator's per-request limits (config ``max_tokens_cap``, ``max_messages``; 0 = none)."""

    max_tokens_cap: int = 0
    max_messages: int = 0


def sampling_from(body: Mapping[str, Any], grammar: str | None = None) -> SamplingParams:
    """The request's sampling fields (``None`` = unset), its ``logit_bias`` and grammar."""
    bias = tuple((int(token), float(value)) for token, value in (body.get("logit_bias") or {}).items())
    return SamplingParams(**{k: body.get(k) for k in SAMPLING_FIELDS}, logit_bias=bias, grammar=grammar)


def with_model_defaults(options: Options, defaults: Mapping[str, Any]) -> Options:
    """Fill what the request left unset from the model's ``sampling`` table.

    An explicit ``max_tokens`` of -1/null means "no limit" and is kept; ``stop`` comes from
    the table only when the request sent none.
    """
    current = options.sampling
    filled: dict[str, Any] = {
        k: v if (v := getattr(current, k)) is not None else defaults.get(k) for k in SAMPLING_FIELDS
    }
    sampling = replace(current, **filled)
    return replace(
        options,
        sampling=sampling,
        max_tokens=options.max_tokens if options.max_tokens_given else defaults.get("max_tokens"),
        stop=options.stop if options.stop_given else tuple(defaults.get("stop", ())),
    )


def apply_server_limits(options: Options, limits: ServerLimits, messages: int = 0) -> Options:
    """The operator's limits: too many messages or more tokens than the cap are a 400;
    a request without a limit gets the cap.

    :param messages: how many messages the request holds (0 for formats without messages).
    """
    if limits.max_messages and messages > limits.max_messages:
        raise InvalidRequest(f"At most {limits.max_messages} messages are accepted per request.", param="messages")
    cap = limits.max_tokens_cap
    if cap:
        if options.max_tokens is None:
            return replace(options, max_tokens=cap)
        if options.max_tokens > cap:
            raise InvalidRequest(f"max_tokens may be at most {cap} on this server.", param="max_tokens")
    return options


def stop_list(value: str | list[str] | None) -> tuple[str, ...]:
    """``stop`` as OpenAI and most formats send it: one string, a list, or nothing."""
    return (value,) if isinstance(value, str) else tuple(value or ())
