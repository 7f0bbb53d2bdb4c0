"""llama-cpp-python's server extras: ``/extras/tokenize``, ``/extras/tokenize/count``,
``/extras/detokenize`` (count a request's tokens before sending it)."""

from __future__ import annotations

from ggufd.errors import InvalidRequest
from ggufd.plugins import Plugins
from ggufd.protocol.openai_chat import parse_chat_request
from ggufd.protocol.options import DEFAULT_LIMITS, ServerLimits, check_array_limits
from ggufd.protocol.prompt import build_generation
from ggufd.types import ModelInfo
from ggufd.validation import validate


def parse_tokenize_request(body: dict, limits: ServerLimits = DEFAULT_LIMITS) -> dict:
    """Validate a tokenize body; ``messages`` are bounded like a chat request's, before validation."""
    check_array_limits({"messages": body.get("messages")}, limits)
    validate(body, "tokenize")
    return body


def detokenize_tokens(body: dict) -> list[int]:
    if "tokens" not in body:
        raise InvalidRequest("'tokens' is required.", param="tokens")
    return body["tokens"]


def text_to_tokenize(
    body: dict, plugins: Plugins, model: ModelInfo, limits: ServerLimits = DEFAULT_LIMITS
) -> tuple[str, bool]:
    """-> (text, add_bos): ``input`` as it is, or ``messages`` rendered as a chat request would be."""
    if "messages" in body:
        chat = parse_chat_request({"messages": body["messages"]}, limits=limits)
        prompt = build_generation(plugins, model, chat.messages, chat).prompt
        return prompt.text, prompt.add_bos
    if "input" in body:
        return body["input"], body.get("add_special", True)
    raise InvalidRequest("Send 'input' (text) or 'messages' (a chat).", param="input")


def tokens_response(tokens: list[int], count_only: bool) -> dict:
    return {"count": len(tokens)} if count_only else {"tokens": tokens, "count": len(tokens)}
