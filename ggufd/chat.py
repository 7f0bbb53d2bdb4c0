"""From a parsed chat request to an engine request, through the plugin hooks."""

from __future__ import annotations

from .errors import ServerError
from .openai_format import ChatRequest
from .types import GenerationRequest, ModelInfo


def build_generation(pm, model: ModelInfo, chat: ChatRequest) -> GenerationRequest:
    """Format the messages (``format_chat``, firstresult) and gather stop strings
    (the request's + every ``stop_sequences`` answer)."""
    prompt = pm.hook.format_chat(model=model, messages=chat.messages)
    if prompt is None:  # only possible when the built-in formatter is disabled
        raise ServerError(f"No plugin can format chats for the model '{model.id}'.")
    family_stops = tuple(stop for answer in pm.hook.stop_sequences(model=model) for stop in (answer or ()))
    return GenerationRequest(
        prompt=prompt,
        sampling=chat.sampling,
        max_tokens=chat.max_tokens,
        stop=tuple(dict.fromkeys(chat.stop + family_stops)),
        logprobs=chat.logprobs,
        stream=chat.stream,
    )


class PassThrough:
    """The answer filter for families without one: all text is content."""

    @staticmethod
    def feed(text: str) -> tuple[str, str]:
        return text, ""

    @staticmethod
    def finish() -> tuple[str, str]:
        return "", ""


def answer_filter(pm, model: ModelInfo):
    """The ``answer_filter`` hook's filter for this request, or :class:`PassThrough`."""
    return pm.hook.answer_filter(model=model) or PassThrough()
