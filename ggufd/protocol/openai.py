"""Pure functions between OpenAI JSON and engine calls.

No I/O, no Tornado, no llama: request dicts in, :class:`ChatRequest` out; engine
results in, response and chunk dicts out.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Mapping

from ggufd.errors import InvalidRequest
from ggufd.protocol.structured_output import grammar_for
from ggufd.protocol.tools import ToolPolicy, tool_policy, with_instruction
from ggufd.protocol.tools import grammar as tools_grammar
from ggufd.types import SamplingParams
from ggufd.validation import validate

SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "seed")

#: fields that change the answer's meaning; until they are implemented they are refused, never ignored.
UNSUPPORTED = {
    "functions": "functions",
}


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: tuple[Mapping[str, Any], ...]
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    max_tokens_given: bool = False  # max_tokens/max_completion_tokens was sent (even as -1/null)
    stop_given: bool = False
    tool_policy: ToolPolicy | None = None  # tools may be called
    logprobs: int | None = None  # None: off; N: with N alternatives per token


def decode_json_body(raw: bytes) -> dict:
    """Bytes -> JSON object; 400 for anything else (bad UTF-8, bad JSON, lone surrogates, non-objects)."""
    try:
        # ValueError also covers integers too long to convert (Python's int max-digits limit).
        doc = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        _check_strings(doc, [])
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None
    return doc


def _reject_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (and NaN passes every range check)."""
    raise ValueError(f"{name} is not a valid JSON value")


def _check_strings(value: Any, path: list) -> None:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates from ``\\ud800`` escapes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("The request contains a lone UTF-16 surrogate, which is not valid text.", param=".".join(map(str, path)) or None) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path)
            _check_strings(item, path + [key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, path + [index])


def normalise_messages(messages: list[dict]) -> tuple[dict, ...]:
    """Content arrays of text parts are joined into one string; other part types are refused."""
    result = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequest(
                        f"Content part type '{part.get('type')}' is not supported; only text parts are.",
                        param=f"messages.{i}.content.{j}",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        role = "system" if message["role"] == "developer" else message["role"]
        normalised = {"role": role, "content": content if content is not None else ""}
        for key in ("name", "tool_calls", "tool_call_id"):
            if message.get(key) is not None:
                normalised[key] = message[key]
        result.append(normalised)
    return tuple(result)


def sampling_from(body: dict, grammar: str | None = None) -> SamplingParams:
    """The request's sampling fields (``None`` = unset), its ``logit_bias`` and grammar."""
    bias = tuple((int(token), float(value)) for token, value in (body.get("logit_bias") or {}).items())
    return SamplingParams(**{k: body.get(k) for k in SAMPLING_FIELDS}, logit_bias=bias, grammar=grammar)


def parse_chat_request(body: dict, defaults: Mapping[str, Any] | None = None) -> ChatRequest:
    """Validate a chat completions body and turn it into a :class:`ChatRequest`.

    :param defaults: the model's configured ``sampling`` table; request values win
        (see :func:`with_model_defaults`).
    """
    validate(body, "chat_completions")
    for key, what in UNSUPPORTED.items():
        if body.get(key) not in (None, False, [], {}):
            raise InvalidRequest(f"'{what}' is not supported by this server yet.", param=key)
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    stop = body.get("stop")
    max_key = next((key for key in ("max_completion_tokens", "max_tokens") if key in body), None)
    max_tokens = body[max_key] if max_key else None
    stream_options = body.get("stream_options") or {}
    policy = tool_policy(body)
    messages = normalise_messages(body["messages"])
    grammar = grammar_for(body.get("response_format"))
    if policy is not None:
        messages = with_instruction(messages, policy)
        forced = tools_grammar(policy)
        if forced and grammar:
            raise InvalidRequest("response_format cannot be combined with a forced tool_choice.", param="response_format")
        grammar = forced or grammar
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise InvalidRequest("top_logprobs needs logprobs: true.", param="top_logprobs")
    chat = ChatRequest(
        model=body.get("model"),
        messages=messages,
        tool_policy=policy,
        logprobs=(body.get("top_logprobs") or 0) if body.get("logprobs") else None,
        sampling=sampling_from(body, grammar=grammar),
        max_tokens=None if max_tokens == -1 else max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        max_tokens_given=max_key is not None,
        stop_given=stop is not None,
    )
    return with_model_defaults(chat, defaults) if defaults else chat


def with_model_defaults(chat: ChatRequest, defaults: Mapping[str, Any]) -> ChatRequest:
    """Fill what the request left unset from the model's ``sampling`` table.

    An explicit ``max_tokens`` of -1/null means "no limit" and is kept; ``stop`` comes from
    the table only when the request sent none.
    """
    sampling = replace(chat.sampling, **{k: v if (v := getattr(chat.sampling, k)) is not None else defaults.get(k) for k in SAMPLING_FIELDS})
    return replace(
        chat,
        sampling=sampling,
        max_tokens=chat.max_tokens if chat.max_tokens_given else defaults.get("max_tokens"),
        stop=chat.stop if chat.stop_given else tuple(defaults.get("stop", ())),
    )


def apply_server_limits(chat: ChatRequest, *, max_tokens_cap: int = 0, max_messages: int = 0) -> ChatRequest:
    """The operator's limits: too many messages or more tokens than the cap are a 400;
    a request without a limit gets the cap."""
    if max_messages and len(getattr(chat, "messages", ())) > max_messages:
        raise InvalidRequest(f"At most {max_messages} messages are accepted per request.", param="messages")
    if max_tokens_cap:
        if chat.max_tokens is None:
            return replace(chat, max_tokens=max_tokens_cap)
        if chat.max_tokens > max_tokens_cap:
            raise InvalidRequest(f"max_tokens may be at most {max_tokens_cap} on this server.", param="max_tokens")
    return chat


@dataclass(frozen=True)
class CompletionRequest:
    """A legacy ``/v1/completions`` request: a raw prompt, no chat format."""

    model: str | None
    prompt: str
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    echo: bool = False
    max_tokens_given: bool = False
    stop_given: bool = False
    logprobs: int | None = None


#: OpenAI's default for the legacy completions API when max_tokens is not sent.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def parse_completion_request(body: dict) -> CompletionRequest:
    """Validate a ``/v1/completions`` body; fields ggufd cannot honour are refused with a 400."""
    validate(body, "completions")
    prompt = body["prompt"]
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest("Only one prompt string per request is supported (no batches, no token arrays).", param="prompt")
        prompt = prompt[0]
    for key in ("suffix",):
        if body.get(key) not in (None, False, {}):
            raise InvalidRequest(f"'{key}' is not supported by this server yet.", param=key)
    for key in ("n", "best_of"):
        if body.get(key) not in (None, 1):
            raise InvalidRequest(f"Only {key}=1 is supported.", param=key)
    stop = body.get("stop")
    max_given = "max_tokens" in body
    max_tokens = body.get("max_tokens") if max_given else COMPLETIONS_DEFAULT_MAX_TOKENS
    return CompletionRequest(
        model=body.get("model"),
        prompt=prompt,
        sampling=sampling_from(body),
        max_tokens=None if max_tokens == -1 else max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        echo=bool(body.get("echo")),
        logprobs=body.get("logprobs"),
        max_tokens_given=max_given,
        stop_given=stop is not None,
    )


def new_text_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def text_completion(
    completion_id: str, created: int, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, logprobs: dict | None = None
) -> dict:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def embedding_inputs(value) -> list:
    """``input`` as a list of strings or token-id lists (already schema-validated)."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [value]  # one input given as token ids
    return list(value)


def embeddings_response(model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str) -> dict:
    import base64
    import struct

    def encode(vector: list[float]):
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(entries) -> dict | None:
    """TokenLogprob events -> the chat ``logprobs`` object (None when none were asked for)."""
    if entries is None:
        return None
    return {
        "content": [
            {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in e.top]}
            for e in entries
        ]
    }


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


def chat_completion(
    completion_id: str, created: int, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
    reasoning: str = "", tool_calls: list | None = None, logprobs: dict | None = None,
) -> dict:
    message = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message.update(content=None, tool_calls=tool_calls)
        finish_reason = "tool_calls"
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class ChunkEncoder:
    """Builds the ``data: ...`` events of one streamed chat completion (same id/created/model in each)."""

    def __init__(self, completion_id: str, model: str, created: int | None = None) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created

    def _event(self, choices: list, **extra) -> bytes:
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices, **extra}
        return b"data: " + dumps(chunk) + b"\n\n"

    def delta(self, delta: dict, finish_reason: str | None = None, logprobs=None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "logprobs": self.format_logprobs(logprobs), "finish_reason": finish_reason}])

    @staticmethod
    def format_logprobs(entries):
        return chat_logprobs(entries)

    def role(self) -> bytes:
        return self.delta({"role": "assistant", "content": ""})

    def content(self, text: str, logprobs=None) -> bytes:
        return self.delta({"content": text}, logprobs=logprobs)

    def reasoning(self, text: str) -> bytes:
        return self.delta({"reasoning_content": text})

    def tool_calls(self, calls: list) -> bytes:
        """OpenAI-style tool call deltas: a header per call (id, name), then its arguments."""
        out = b""
        for index, call in enumerate(calls):
            header = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            out += self.delta({"tool_calls": [header]})
            out += self.delta({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
        return out

    def finish(self, reason: str) -> bytes:
        return self.delta({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._event([], usage=usage(prompt_tokens, completion_tokens))

    @staticmethod
    def error(error: dict) -> bytes:
        return b"data: " + dumps(error) + b"\n\n"

    DONE = b"data: [DONE]\n\n"


class TextChunkEncoder(ChunkEncoder):
    """The ``data: ...`` events of one streamed legacy text completion."""

    def _event(self, choices: list, **extra) -> bytes:
        chunk = {"id": self.completion_id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices, **extra}
        return b"data: " + dumps(chunk) + b"\n\n"

    def delta(self, delta: dict, finish_reason: str | None = None, logprobs=None) -> bytes:
        return self._event([{"index": 0, "text": delta.get("content", ""), "logprobs": self.format_logprobs(logprobs), "finish_reason": finish_reason}])

    @staticmethod
    def format_logprobs(entries):
        return completion_logprobs(entries)

    def role(self) -> bytes:
        return b""  # text completions have no role chunk

    def reasoning(self, text: str) -> bytes:
        return b""


def dumps(obj: Any) -> bytes:
    """Compact, strict UTF-8 JSON (the engine never produces unencodable text)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
