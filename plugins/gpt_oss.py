"""The gpt-oss family (OpenAI gpt-oss-20b and gpt-oss-120b): the harmony format.

Written exactly like a third-party plugin. The format is OpenAI's harmony format as the
published chat template (openai/gpt-oss-*, chat_template.jinja) renders it for a chat
without tool definitions; every message is ``<|start|>{role}<|message|>{text}<|end|>``:

    <|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
    Knowledge cutoff: 2024-06
    Current date: {YYYY-MM-DD}

    Reasoning: medium

    # Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>developer<|message|># Instructions

    {system}

    <|end|><|start|>user<|message|>{user}<|end|><|start|>assistant<|channel|>final<|message|>{answer}<|end|><|start|>assistant

The system block is fixed (``today()`` gives the date; tests replace it); the caller's
system messages become the developer instructions (left out when there are none).
Earlier answers keep only their final channel (the template drops their reasoning too).

Tool calls and results use the harmony syntax the model writes itself (OpenAI's harmony
guide), not the published template's variant (recipient in the role, ``json`` without
``<|constrain|>``, results JSON-quoted)::

    <|start|>assistant<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{arguments}<|call|>
    <|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{result}<|end|>

The reasoning (``content``) of a tool-calling message is kept as an analysis message until
a final answer follows, as the template does. Tool definitions are not rendered: ggufd does
not pass ``tools`` to ``format_chat``.

Limitation: the model answers on two channels, and ggufd has no hook to take one apart::

    <|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{answer}<|return|>

``<|return|>`` and ``<|call|>`` end generation (they are end-of-generation tokens as
well as stop strings here). ``<|end|>`` must not be a stop: it ends the analysis message,
before the answer. So the returned content is the whole text, reasoning included. llama.cpp
renders ``<|channel|>``, ``<|message|>``, ``<|start|>`` and ``<|constrain|>`` as text but
not ``<|end|>``, so the client sees ``<|channel|>analysis<|message|>...<|start|>assistant
<|channel|>final<|message|>...``; :func:`split_channels` takes such a text apart, and
:func:`final_answer` gives the answer alone (used here for earlier answers sent back in the
history). Returning only the answer needs a post-processing hook in ggufd, for example
``split_answer(model, text) -> {"content": str, "reasoning_content": str | None} | None``
(firstresult; called on the completed text before ``parse_tool_calls``) together with a
streaming form of it.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid

import ggufd
from ggufd import ChatPrompt, InvalidRequest

FAMILY = "gpt-oss"
ARCHITECTURE = "gpt-oss"
START, MESSAGE, END, CHANNEL = "<|start|>", "<|message|>", "<|end|>", "<|channel|>"
RETURN, CALL = "<|return|>", "<|call|>"
STOPS = [RETURN, CALL]
SYSTEM = (
    "You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: {date}\n\n"
    "Reasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
# One message of generated text: an optional role header ("<|start|>assistant to=functions.x"),
# the channel header ("commentary to=functions.x <|constrain|>json") and the body.
HARMONY_MESSAGE = re.compile(
    r"(?P<role>(?:<\|start\|>)?[^<]*)<\|channel\|>(?P<header>.*?)<\|message\|>"
    r"(?P<body>.*?)(?=<\|end\|>|<\|start\|>|<\|return\|>|<\|call\|>|<\|channel\|>|\Z)",
    re.DOTALL,
)
RECIPIENT = re.compile(r"\bto=([^\s<]+)")
CHANNEL_NAME = re.compile(r"\s*(\w+)")


def today() -> str:
    """The "Current date" of the system message (a function, so tests can fix it)."""
    return datetime.date.today().isoformat()


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if metadata.architecture == ARCHITECTURE or (CHANNEL in template and MESSAGE in template):
        return FAMILY
    return None


def split_channels(text: str) -> list[dict]:
    """The harmony messages in generated text: ``{"channel", "recipient", "body"}`` each, in order."""
    found = []
    for match in HARMONY_MESSAGE.finditer(text):
        channel = CHANNEL_NAME.match(match["header"])
        recipient = RECIPIENT.search(match["role"] + " " + match["header"])
        found.append({
            "channel": channel[1] if channel else "",
            "recipient": recipient[1] if recipient else None,
            "body": match["body"],
        })
    return found


def final_answer(text: str) -> str:
    """The final channel of a harmony answer; text without channel markup as it is."""
    if CHANNEL not in text:
        return text
    finals = [m["body"] for m in split_channels(text) if m["channel"] == "final" and not m["recipient"]]
    return finals[-1] if finals else ""


def _tool_call_messages(message) -> str:
    parts = []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        parts.append(
            f"{START}assistant{CHANNEL}commentary to=functions.{function.get('name', '')} <|constrain|>json{MESSAGE}{arguments}{CALL}"
        )
    return "".join(parts)


def _reasoning(content: str) -> str:
    if CHANNEL not in content:
        return content
    return "".join(m["body"] for m in split_channels(content) if m["channel"] == "analysis")


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("A gpt-oss chat needs at least one user message.", param="messages")
    parts = [f"{START}system{MESSAGE}{SYSTEM.format(date=today())}{END}"]
    instructions = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if instructions:
        parts.append(f"{START}developer{MESSAGE}# Instructions\n\n{instructions}\n\n{END}")
    names_by_id = {}
    last_name = None
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "user":
            parts.append(f"{START}user{MESSAGE}{content}{END}")
        elif role == "assistant" and message.get("tool_calls"):
            answered_later = any(m["role"] == "assistant" and not m.get("tool_calls") for m in messages[index + 1:])
            reasoning = _reasoning(content)
            if reasoning and not answered_later:
                parts.append(f"{START}assistant{CHANNEL}analysis{MESSAGE}{reasoning}{END}")
            parts.append(_tool_call_messages(message))
            for call in message["tool_calls"]:
                last_name = (call.get("function") or {}).get("name")
                names_by_id[call.get("id")] = last_name
        elif role == "assistant":
            parts.append(f"{START}assistant{CHANNEL}final{MESSAGE}{final_answer(content)}{END}")
        elif role == "tool":
            name = message.get("name") or names_by_id.get(message.get("tool_call_id")) or last_name
            if not name:
                raise InvalidRequest("A tool message must follow an assistant message with tool_calls.", param=f"messages.{index}")
            parts.append(f"{START}functions.{name} to=assistant{CHANNEL}commentary{MESSAGE}{content}{END}")
    parts.append(f"{START}assistant")
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(text="".join(parts), stop=tuple(STOPS), add_bos=add_bos)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return list(STOPS)
    return None


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY or "to=functions." not in text:
        return None
    calls = []
    for message in split_channels(text):
        recipient = message["recipient"] or ""
        if not recipient.startswith("functions."):
            continue
        name, arguments = recipient[len("functions."):], message["body"].strip()
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return None  # a malformed call: the answer is returned as text
        if not name or not isinstance(parsed, dict):
            return None
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls or None
