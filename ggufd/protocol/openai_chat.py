"""OpenAI Chat Completions (``POST /v1/chat/completions``): request parsing, the answer body
and its ``chat.completion.chunk`` stream.

Fields that would change the answer's meaning and that ggufd cannot honour are refused with a
400, never silently ignored; unknown fields are accepted (clients send them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ggufd.errors import ApiError, InvalidRequest
from ggufd.protocol.answer import AnswerAssembler, Outcome, Piece
from ggufd.protocol.generation import Plan, Served
from ggufd.protocol.options import (
    DEFAULT_LIMITS,
    SAMPLING_FIELDS,
    GenerationOptions,
    ServerLimits,
    apply_server_limits,
    check_array_limits,
    check_stream_options,
    sampling_from,
    stop_list,
    with_model_defaults,
)
from ggufd.protocol.prompt import CONTROL_KEYS, build_generation, chat_controls
from ggufd.protocol.sse import DONE, MEDIA_TYPE, sse
from ggufd.protocol.structured_output import request_grammar
from ggufd.protocol.tools import ToolPolicy, call_stream, raw_calls, tool_policy
from ggufd.protocol.tools import grammar as tools_grammar
from ggufd.types import GenerationRequest, ToolCallDelta
from ggufd.validation import validate

#: fields that change the answer's meaning; until they are implemented they are refused, never ignored.
UNSUPPORTED = ("functions",)


#: fields that change the answer whenever they are sent (the others are checked one by one, or ignored)
EFFECTIVE = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "stream",
        "n",
        "logit_bias",
        "response_format",
        "grammar",  # llama.cpp's extensions
        "json_schema",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "stream_options",  # only accepted with stream: true
    }
) | frozenset(SAMPLING_FIELDS)


@dataclass(frozen=True, kw_only=True)
class ChatRequest(GenerationOptions):
    messages: tuple[Mapping[str, Any], ...]
    tool_policy: ToolPolicy | None = None  # tools may be called
    #: the request's own chat_template_kwargs / reasoning_effort / max_reasoning_tokens (defaults apply later)
    controls: Mapping[str, Any] = field(default_factory=dict)
    fields: frozenset[str] = frozenset()  # the body's top-level keys


def ignored_fields(chat: ChatRequest, request: GenerationRequest) -> tuple[str, ...]:
    """The fields the client sent that had no effect on this answer (``X-Ggufd-Ignored``): fields
    ggufd does not act on (``user``, ``metadata``, unknown ones), ``parallel_tool_calls`` without
    tools, template kwargs no template read, a reasoning control on a model that does not reason."""
    prompt = request.prompt
    ignored: list[str] = []
    for name in sorted(chat.fields - EFFECTIVE):
        if name == "parallel_tool_calls" and chat.tool_policy is not None:
            continue
        if name == "reasoning_effort" and "reasoning_effort" in prompt.honoured:
            continue
        if name == "max_reasoning_tokens" and request.max_reasoning_tokens is not None:
            continue
        if name == "chat_template_kwargs":
            ignored.extend(
                f"chat_template_kwargs.{key}"
                for key in sorted(chat.controls.get("chat_template_kwargs") or {})
                if key not in prompt.honoured
            )
            continue
        ignored.append(name)
    return tuple(ignored)


def normalise_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[dict, ...]:
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


def check_tool_types(body: Any) -> None:
    """A tool of a type ggufd cannot serve (``custom``, ``namespace``, hosted tools such as
    ``web_search``) is refused by its type, before the schema would only say "'function' is required"."""
    tools = body.get("tools") if isinstance(body, Mapping) else None
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind != "function":
            shown = kind[:64] if kind.isprintable() else "(this type)"
            raise InvalidRequest(
                f"Tools of type '{shown}' are not supported; only 'function' tools are.", param=f"tools.{i}.type"
            )


def parse_chat_request(
    body: dict, defaults: Mapping[str, Any] | None = None, limits: ServerLimits = DEFAULT_LIMITS
) -> ChatRequest:
    """Validate a chat completions body and turn it into a :class:`ChatRequest`.

    :param defaults: the model's configured ``sampling`` table; request values win
        (see :func:`~ggufd.protocol.options.with_model_defaults`).
    :param limits: the operator's array limits, checked before the schema walks the body.
    """
    check_array_limits(body, limits)
    check_tool_types(body)
    validate(body, "chat_completions")
    check_stream_options(body)
    for key in UNSUPPORTED:
        if body.get(key) not in (None, False, [], {}):
            raise InvalidRequest(f"'{key}' is not supported by this server yet.", param=key)
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    stop = body.get("stop")
    max_key = next((key for key in ("max_completion_tokens", "max_tokens") if key in body), None)
    max_tokens = body[max_key] if max_key else None
    stream_options = body.get("stream_options") or {}
    policy = tool_policy(body)
    messages = normalise_messages(body["messages"])
    grammar = request_grammar(body)
    if policy is not None:
        forced = tools_grammar(policy)
        if forced and grammar:
            raise InvalidRequest(
                "response_format (or grammar, json_schema) cannot be combined with a forced tool_choice.",
                param="response_format",
            )
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
        stop=stop_list(stop),
        stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        max_tokens_given=max_key is not None,
        stop_given=stop is not None,
        controls={key: body[key] for key in CONTROL_KEYS if body.get(key) is not None},
        fields=frozenset(body),
    )
    return with_model_defaults(chat, defaults) if defaults else chat


def plan(body: dict, served: Served) -> Plan:
    """A chat completions body -> the generation loop's :class:`Plan`."""
    chat = parse_chat_request(body, limits=served.limits)
    model = served.registry.get(chat.model)
    if model.options.get("sampling"):
        chat = with_model_defaults(chat, model.options["sampling"])
    chat = apply_server_limits(chat, served.limits)  # messages: checked before validation
    log_fields: dict[str, Any] = {"model": model.id}
    if served.log_content:  # off by default: prompts and answers stay out of the logs
        log_fields["messages"] = list(chat.messages)
    policy = chat.tool_policy
    controls = chat_controls(chat.controls, model.options, served.chat_defaults)
    request = build_generation(served.plugins, model, chat.messages, chat, policy, controls)
    plugins = served.plugins
    return Plan(
        model=model,
        request=request,
        output=ChatOutput(new_completion_id(), model.id, include_usage=chat.include_usage),
        answer=AnswerAssembler(
            answer_filter=plugins.answer_filter(model, request.prompt),
            tool_calls=call_stream(plugins, model, policy, request.prompt) if policy is not None else None,
            find_calls=(lambda raw: raw_calls(plugins, model, raw, policy)) if policy is not None else None,
            parallel=policy.parallel if policy is not None else True,
            logprobs=chat.logprobs is not None,
        ),
        log_fields=log_fields,
        ignored=ignored_fields(chat, request),
    )


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(entries) -> dict | None:
    """TokenLogprob events -> the chat ``logprobs`` object (None when none were asked for)."""
    if entries is None:
        return None
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.bytes),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in e.top],
            }
            for e in entries
        ]
    }


def chat_completion(completion_id: str, created: int, model: str, outcome: Outcome) -> dict:
    """The ``chat.completion`` object of a finished answer."""
    message: dict[str, Any] = {"role": "assistant", "content": outcome.content}
    if outcome.reasoning:
        message["reasoning_content"] = outcome.reasoning
    if outcome.tool_calls:
        message.update(content=outcome.content or None, tool_calls=outcome.tool_calls)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": chat_logprobs(outcome.logprobs),
                "finish_reason": outcome.reason,
            }
        ],
        "usage": usage(outcome.prompt_tokens, outcome.completion_tokens),
    }


class ChatOutput:
    """One chat completion on the wire: its ``chat.completion.chunk`` events (same id, created
    and model in each) or, not streamed, its ``chat.completion`` body."""

    media_type = MEDIA_TYPE
    DONE = DONE

    def __init__(self, completion_id: str, model: str, created: int | None = None, include_usage: bool = False) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage

    # --- the generation loop's Output

    def begin(self) -> bytes:
        return self.role()

    def piece(self, piece: Piece) -> bytes:
        out = self.reasoning(piece.reasoning) if piece.reasoning else b""
        if piece.content or piece.logprobs:
            out += self.content(piece.content, logprobs=piece.logprobs)
        for delta in piece.tool_calls:
            out += self.tool_call_delta(delta)
        return out

    def end(self, outcome: Outcome) -> bytes:
        out = b""
        if outcome.tool_calls and outcome.late_calls:
            out += self.tool_calls(outcome.tool_calls)
        out += self.finish(outcome.reason)
        if self.include_usage:
            out += self.usage(outcome.prompt_tokens, outcome.completion_tokens)
        return out + self.DONE

    def error(self, error: ApiError) -> bytes:
        return sse(error.to_dict())

    def body(self, outcome: Outcome) -> dict:
        return chat_completion(self.completion_id, int(time.time()), self.model, outcome)

    # --- single chunks

    def chunk(self, choices: list, **extra) -> bytes:
        return sse(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def delta(self, delta: dict, finish_reason: str | None = None, logprobs=None) -> bytes:
        return self.chunk(
            [{"index": 0, "delta": delta, "logprobs": chat_logprobs(logprobs), "finish_reason": finish_reason}]
        )

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
            header = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            out += self.delta({"tool_calls": [header]})
            out += self.delta(
                {"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}
            )
        return out

    def tool_call_delta(self, delta: ToolCallDelta) -> bytes:
        """One piece of a streamed call: the first has its id, type and name (arguments ""), the others
        a fragment of its arguments."""
        if delta.id is not None:
            header = {"index": delta.index, "id": delta.id, "type": "function"}
            out = self.delta({"tool_calls": [{**header, "function": {"name": delta.name, "arguments": ""}}]})
        else:
            out = b""
        if delta.arguments:
            out += self.delta({"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]})
        return out

    def finish(self, reason: str) -> bytes:
        return self.delta({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self.chunk([], usage=usage(prompt_tokens, completion_tokens))
