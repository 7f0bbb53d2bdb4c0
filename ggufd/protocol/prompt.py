"""From chat messages to an engine request, through the plugin hooks (every chat format uses it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ggufd.errors import ServerError
from ggufd.plugins import Plugins
from ggufd.protocol.options import GenerationOptions
from ggufd.protocol.tools import ToolPolicy, with_instruction
from ggufd.types import ChatPrompt, GenerationRequest, ModelInfo


@dataclass(frozen=True, kw_only=True)
class ChatControls:
    """What a chat request asks of the template and of the reasoning, beside its messages.

    ``template_kwargs`` are the request's ``chat_template_kwargs`` over the model's and the
    server's defaults, ``reasoning_effort`` included when one applies; ``max_reasoning_tokens``
    the reasoning budget (None: none)."""

    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_reasoning_tokens: int | None = None


#: the keys of the server's and a model's defaults for :class:`ChatControls` (config)
CONTROL_KEYS = ("chat_template_kwargs", "reasoning_effort", "max_reasoning_tokens")


def chat_controls(request: Mapping[str, Any], model: Mapping[str, Any], server: Mapping[str, Any]) -> ChatControls:
    """The request's ``chat_template_kwargs``, ``reasoning_effort`` and ``max_reasoning_tokens``
    over the model's configured defaults, over the server's. Template kwargs merge key by key."""
    kwargs: dict[str, Any] = {}
    for source in (server, model, request):
        kwargs.update(source.get("chat_template_kwargs") or {})
    effort = next((s["reasoning_effort"] for s in (request, model, server) if s.get("reasoning_effort")), None)
    if effort is not None:
        kwargs["reasoning_effort"] = effort
    budget = next(
        (s["max_reasoning_tokens"] for s in (request, model, server) if s.get("max_reasoning_tokens") is not None),
        None,
    )
    return ChatControls(template_kwargs=kwargs, max_reasoning_tokens=budget)


def render(
    plugins: Plugins,
    model: ModelInfo,
    messages: Sequence[Mapping[str, Any]],
    policy: ToolPolicy | None,
    template_kwargs: Mapping[str, Any],
) -> ChatPrompt:
    """Format the messages (``format_chat``, firstresult). Tools a family does not render in its own
    syntax (or any tool when a call is forced, since the grammar forces ggufd's JSON call) are
    described in a system message and the chat is rendered again without them."""
    if policy is None:
        prompt = plugins.format_chat(model, messages, (), template_kwargs)
    elif policy.choice == "auto":
        prompt = plugins.format_chat(model, messages, policy.tools, template_kwargs)
        if prompt is not None and not prompt.tools_rendered:
            prompt = plugins.format_chat(model, with_instruction(messages, policy), (), template_kwargs)
    else:
        prompt = plugins.format_chat(model, with_instruction(messages, policy), (), template_kwargs)
    if prompt is None:  # only possible when the built-in formatter is disabled
        raise ServerError(f"No plugin can format chats for the model '{model.id}'.")
    return prompt


def build_generation(
    plugins: Plugins,
    model: ModelInfo,
    messages: Sequence[Mapping[str, Any]],
    options: GenerationOptions,
    policy: ToolPolicy | None = None,
    controls: ChatControls | None = None,
) -> GenerationRequest:
    """Format the messages (:func:`render`) and gather stop strings (the request's + every
    ``stop_sequences`` answer).

    :param messages: OpenAI-shaped messages (``role``, ``content`` as a string, optional
        ``name``/``tool_calls``/``tool_call_id``); other formats convert theirs to these.
    :param policy: the tools the model may call, if any.
    :param controls: template variables and the reasoning budget. The budget applies when the
        prompt says the model reasons (``ChatPrompt.reasoning``) and no grammar constrains the answer.
    """
    controls = controls or ChatControls()
    prompt = render(plugins, model, messages, policy, controls.template_kwargs)
    budget = controls.max_reasoning_tokens
    if prompt.reasoning is None or options.sampling.grammar is not None:
        budget = None
    markup = list(plugins.markup_tokens(model))
    if prompt.reasoning is not None:
        markup += [prompt.reasoning.start, prompt.reasoning.end]
    if policy is not None:
        markup += plugins.tool_call_openers(model)
    return GenerationRequest(
        prompt=prompt,
        sampling=options.sampling,
        max_tokens=options.max_tokens,
        stop=tuple(dict.fromkeys(options.stop + plugins.stop_sequences(model))),
        logprobs=options.logprobs,
        stream=options.stream,
        max_reasoning_tokens=budget,
        markup=tuple(dict.fromkeys(markup)),
    )
