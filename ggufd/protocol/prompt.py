"""From a parsed chat request to an engine request, through the plugin hooks."""

from __future__ import annotations

from ggufd.errors import ServerError
from ggufd.protocol.openai import ChatRequest
from ggufd.plugins import Plugins
from ggufd.types import GenerationRequest, ModelInfo


def build_generation(plugins: Plugins, model: ModelInfo, chat: ChatRequest) -> GenerationRequest:
    """Format the messages (``format_chat``, firstresult) and gather stop strings
    (the request's + every ``stop_sequences`` answer)."""
    prompt = plugins.format_chat(model, chat.messages)
    if prompt is None:  # only possible when the built-in formatter is disabled
        raise ServerError(f"No plugin can format chats for the model '{model.id}'.")
    family_stops = plugins.stop_sequences(model)
    return GenerationRequest(
        prompt=prompt,
        sampling=chat.sampling,
        max_tokens=chat.max_tokens,
        stop=tuple(dict.fromkeys(chat.stop + family_stops)),
        logprobs=chat.logprobs,
        stream=chat.stream,
    )
