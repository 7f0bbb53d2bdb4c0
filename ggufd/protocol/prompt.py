"""From chat messages to an engine request, through the plugin hooks (every chat format uses it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ggufd.errors import ServerError
from ggufd.plugins import Plugins
from ggufd.protocol.options import GenerationOptions
from ggufd.types import GenerationRequest, ModelInfo


def build_generation(
    plugins: Plugins, model: ModelInfo, messages: Sequence[Mapping[str, Any]], options: GenerationOptions
) -> GenerationRequest:
    """Format the messages (``format_chat``, firstresult) and gather stop strings
    (the request's + every ``stop_sequences`` answer).

    :param messages: OpenAI-shaped messages (``role``, ``content`` as a string, optional
        ``name``/``tool_calls``/``tool_call_id``); other formats convert theirs to these.
    """
    prompt = plugins.format_chat(model, messages)
    if prompt is None:  # only possible when the built-in formatter is disabled
        raise ServerError(f"No plugin can format chats for the model '{model.id}'.")
    return GenerationRequest(
        prompt=prompt,
        sampling=options.sampling,
        max_tokens=options.max_tokens,
        stop=tuple(dict.fromkeys(options.stop + plugins.stop_sequences(model))),
        logprobs=options.logprobs,
        stream=options.stream,
    )
