"""OpenAI's legacy Completions (``POST /v1/completions``): a raw prompt, no chat format;
request parsing, the ``text_completion`` body and its stream."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from ggufd.errors import ApiError, InvalidRequest
from ggufd.protocol.answer import AnswerAssembler, Outcome, Piece
from ggufd.protocol.generation import Plan, Served
from ggufd.protocol.openai_chat import usage
from ggufd.protocol.options import (
    DEFAULT_LIMITS,
    GenerationOptions,
    ServerLimits,
    apply_server_limits,
    check_array_limits,
    check_stream_options,
    sampling_from,
    stop_list,
    with_model_defaults,
)
from ggufd.protocol.sse import DONE, MEDIA_TYPE, sse
from ggufd.protocol.structured_output import request_grammar
from ggufd.types import ChatPrompt, GenerationRequest
from ggufd.validation import validate

#: OpenAI's default for the legacy completions API when max_tokens is not sent.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True, kw_only=True)
class CompletionRequest(GenerationOptions):
    """A legacy ``/v1/completions`` request: a raw prompt, no chat format."""

    prompt: str
    echo: bool = False


def parse_completion_request(body: dict, limits: ServerLimits = DEFAULT_LIMITS) -> CompletionRequest:
    """Validate a ``/v1/completions`` body; fields ggufd cannot honour are refused with a 400.
    The operator's array limits are checked first, before the schema walks the body."""
    check_array_limits(body, limits)
    validate(body, "completions")
    check_stream_options(body)
    prompt = body["prompt"]
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest(
                "Only one prompt string per request is supported (no batches, no token arrays).", param="prompt"
            )
        prompt = prompt[0]
    if body.get("suffix") not in (None, False, {}):
        raise InvalidRequest("'suffix' is not supported by this server yet.", param="suffix")
    for key in ("n", "best_of"):
        if body.get(key) not in (None, 1):
            raise InvalidRequest(f"Only {key}=1 is supported.", param=key)
    stop = body.get("stop")
    max_given = "max_tokens" in body
    max_tokens = body.get("max_tokens") if max_given else COMPLETIONS_DEFAULT_MAX_TOKENS
    return CompletionRequest(
        model=body.get("model"),
        prompt=prompt,
        sampling=sampling_from(body, grammar=request_grammar(body)),
        max_tokens=None if max_tokens == -1 else max_tokens,
        stop=stop_list(stop),
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        echo=bool(body.get("echo")),
        logprobs=body.get("logprobs"),
        max_tokens_given=max_given,
        stop_given=stop is not None,
    )


def plan(body: dict, served: Served) -> Plan:
    """A completions body -> the generation loop's :class:`Plan`."""
    completion = parse_completion_request(body, served.limits)
    model = served.registry.get(completion.model)
    if model.options.get("sampling"):
        completion = with_model_defaults(completion, model.options["sampling"])
    completion = apply_server_limits(completion, served.limits)
    log_fields: dict[str, Any] = {"model": model.id}
    if served.log_content:
        log_fields["prompt"] = completion.prompt
    request = GenerationRequest(
        prompt=ChatPrompt(text=completion.prompt, add_bos=True),
        sampling=completion.sampling,
        max_tokens=completion.max_tokens,
        stop=completion.stop,
        logprobs=completion.logprobs,
        stream=completion.stream,
    )
    output = TextOutput(
        new_text_completion_id(),
        model.id,
        include_usage=completion.include_usage,
        prefix=completion.prompt if completion.echo else "",
    )
    return Plan(
        model=model,
        request=request,
        output=output,
        answer=AnswerAssembler(logprobs=completion.logprobs is not None),
        log_fields=log_fields,
    )


def new_text_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def completion_logprobs(entries, offset: int = 0) -> dict | None:
    """TokenLogprob events -> the legacy completions ``logprobs`` object."""
    if entries is None:
        return None
    offsets, position = [], offset
    for e in entries:
        offsets.append(position)
        position += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, _, lp in e.top} for e in entries],
        "text_offset": offsets,
    }


def text_completion(
    completion_id: str, created: int, model: str, text: str, outcome: Outcome, logprobs: dict | None = None
) -> dict:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": outcome.reason}],
        "usage": usage(outcome.prompt_tokens, outcome.completion_tokens),
    }


class TextOutput:
    """One text completion on the wire: ``text_completion`` chunks or one body. ``prefix`` is the
    prompt itself when the request asked for ``echo``: it comes first, as text."""

    media_type = MEDIA_TYPE
    DONE = DONE

    def __init__(
        self, completion_id: str, model: str, created: int | None = None, include_usage: bool = False, prefix: str = ""
    ) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self.prefix = prefix

    def begin(self) -> bytes:
        return self.text(self.prefix) if self.prefix else b""  # text completions have no role chunk

    def piece(self, piece: Piece) -> bytes:
        return self.text(piece.content, logprobs=piece.logprobs) if piece.content or piece.logprobs else b""

    def end(self, outcome: Outcome) -> bytes:
        out = self.chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": outcome.reason}])
        if self.include_usage:
            out += self.chunk([], usage=usage(outcome.prompt_tokens, outcome.completion_tokens))
        return out + self.DONE

    def error(self, error: ApiError) -> bytes:
        return sse(error.to_dict())

    def body(self, outcome: Outcome) -> dict:
        return text_completion(
            self.completion_id,
            int(time.time()),
            self.model,
            self.prefix + outcome.content,
            outcome,
            logprobs=completion_logprobs(outcome.logprobs, len(self.prefix)),
        )

    def chunk(self, choices: list, **extra) -> bytes:
        return sse(
            {
                "id": self.completion_id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def text(self, text: str, logprobs=None) -> bytes:
        return self.chunk(
            [{"index": 0, "text": text, "logprobs": completion_logprobs(logprobs), "finish_reason": None}]
        )
