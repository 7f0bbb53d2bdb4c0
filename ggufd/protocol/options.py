"""What every wire format's request has in common once parsed: sampling, token budget, stops.

Each format's module parses its own body into a subclass of :class:`GenerationOptions`; the
model's configured ``sampling`` table and the operator's limits then apply the same way to all
of them (:func:`with_model_defaults`, :func:`apply_server_limits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ggufd.errors import InvalidRequest, LimitExceeded
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
    "typical_p",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "xtc_probability",
    "xtc_threshold",
    "top_n_sigma",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
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


#: OpenAI's limit on ``stop`` (also the request schemas' ``maxItems``); not configurable
MAX_STOP = 4


@dataclass(frozen=True)
class ServerLimits:
    """The operator's per-request limits (config ``max_tokens_cap`` (0 = none),
    ``max_messages``, ...). The array limits default to the request schemas' ``maxItems``
    ceilings, which stay in force above them."""

    max_tokens_cap: int = 0
    max_messages: int = 4096
    max_embedding_inputs: int = 2048
    max_logit_bias: int = 1024
    max_tools: int = 128
    max_content_parts: int = 4096


DEFAULT_LIMITS = ServerLimits()


def _too_long(value: Any, limit: int) -> bool:
    return isinstance(value, (list, dict)) and len(value) > limit


def check_array_limits(body: Mapping[str, Any], limits: ServerLimits) -> None:
    """Refuse an over-long array of a generation request (chat or completions) with a 400
    naming its limit, before JSON Schema validation walks it: O(number of messages), never
    more, whatever the body holds."""
    if not isinstance(body, Mapping):
        return  # the schema refuses it
    messages = body.get("messages")
    if limits.max_messages and _too_long(messages, limits.max_messages):
        raise LimitExceeded("messages", limits.max_messages, "max_messages", "messages")
    if _too_long(body.get("logit_bias"), limits.max_logit_bias):
        raise LimitExceeded("logit_bias entries", limits.max_logit_bias, "max_logit_bias", "logit_bias")
    if _too_long(body.get("tools"), limits.max_tools):
        raise LimitExceeded("tools", limits.max_tools, "max_tools", "tools")
    if _too_long(body.get("stop"), MAX_STOP):
        raise LimitExceeded("stop strings", MAX_STOP, "stop (OpenAI's limit)", "stop")
    if isinstance(messages, list):
        parts = 0
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                parts += len(content)
                if parts > limits.max_content_parts:
                    raise LimitExceeded(
                        "content parts (all messages together)",
                        limits.max_content_parts,
                        "max_content_parts",
                        f"messages.{i}.content",
                    )


def check_embedding_inputs(body: Mapping[str, Any], limits: ServerLimits) -> None:
    """An embeddings ``input`` with more inputs than ``max_embedding_inputs``: a 400 before validation."""
    value = body.get("input") if isinstance(body, Mapping) else None
    if not isinstance(value, list) or len(value) <= limits.max_embedding_inputs:
        return
    if isinstance(value[0], int) and not isinstance(value[0], bool):
        return  # one input given as token ids (bounded by the schema)
    raise LimitExceeded("embedding inputs", limits.max_embedding_inputs, "max_embedding_inputs", "input")


def _frozen(value: Any) -> Any:
    """A list (``dry_sequence_breakers``) as a tuple: :class:`SamplingParams` is hashable."""
    return tuple(value) if isinstance(value, list) else value


def sampling_from(body: Mapping[str, Any], grammar: str | None = None) -> SamplingParams:
    """The request's sampling fields (``None`` = unset), its ``logit_bias`` and grammar."""
    bias = tuple((int(token), float(value)) for token, value in (body.get("logit_bias") or {}).items())
    return SamplingParams(**{k: _frozen(body.get(k)) for k in SAMPLING_FIELDS}, logit_bias=bias, grammar=grammar)


def with_model_defaults(options: Options, defaults: Mapping[str, Any]) -> Options:
    """Fill what the request left unset from the model's ``sampling`` table.

    An explicit ``max_tokens`` of -1/null means "no limit" and is kept; ``stop`` comes from
    the table only when the request sent none.
    """
    current = options.sampling
    filled: dict[str, Any] = {
        k: v if (v := getattr(current, k)) is not None else _frozen(defaults.get(k)) for k in SAMPLING_FIELDS
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


def check_stream_options(body: Mapping[str, Any]) -> None:
    """``stream_options`` only with ``stream: true`` (as OpenAI answers)."""
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")


def stop_list(value: str | list[str] | None) -> tuple[str, ...]:
    """``stop`` as OpenAI and most formats send it: one string, a list, or nothing."""
    return (value,) if isinstance(value, str) else tuple(value or ())
