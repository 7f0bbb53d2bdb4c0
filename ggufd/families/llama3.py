"""The llama3 family (Llama 3, 3.1, 3.2, 3.3 Instruct): header turns, ipython tool results, JSON tool calls.

Written exactly like a third-party plugin. The format is Meta's published template
(meta-llama/Llama-3.x-*-Instruct, tokenizer_config.json):

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>

    {system}<|eot_id|><|start_header_id|>user<|end_header_id|>

    {user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

    {"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

    {tool result}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

Every message is ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content|trim}<|eot_id|>``; the
tokenizer adds ``<|begin_of_text|>`` (the text never contains it). Tool results use the
``ipython`` role (Llama 3.1) and are not trimmed; an assistant tool call is the Llama 3.1
JSON tool-call object ``{"name": ..., "parameters": {...}}`` (several are joined with ``; ``).

Llama 3.1 and later templates open every chat with a system turn that carries
``Cutting Knowledge Date: December 2023\\nToday Date: {date}\\n\\n`` before the system prompt.
When the GGUF's own template has that preamble, so does this plugin's prompt (the date
is the template's ``date_string``, or today's date where the template calls
``strftime_now``, as Llama 3.2's does); a Llama 3.0 template or none gets the plain turns.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import ggufd
from ggufd import ChatPrompt

FAMILY = "llama3"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
END_OF_MESSAGE = "<|eom_id|>"
PYTHON_TAG = "<|python_tag|>"
NAME_PATTERN = re.compile(r"llama[-_ ]?3(?!\d)", re.IGNORECASE)
PREAMBLE_MARKER = "Cutting Knowledge Date"
DATE_STRING = re.compile(r"""set\s+date_string\s*=\s*["']([^"']+)["']""")
DEFAULT_DATE = "26 Jul 2024"


@ggufd.hookimpl
def detect_family(metadata, spec):
    if metadata.architecture != "llama":
        return None
    template = metadata.chat_template
    if template:
        # the model's own template decides: a fine-tune of Llama 3 in another format is not ours
        return FAMILY if START_HEADER in template else None
    if NAME_PATTERN.search(metadata.name or "") or NAME_PATTERN.search(spec.path.name):
        return FAMILY
    return None


def _turn(role: str, content: str) -> str:
    return f"{START_HEADER}{role}{END_HEADER}\n\n{content}{END_OF_TURN}"


def _tool_call(call) -> str:
    function = call.get("function") or call
    parameters = json.dumps(ggufd.tool_arguments(function.get("arguments")), ensure_ascii=False)
    return (
        '{"name": ' + json.dumps(function.get("name", ""), ensure_ascii=False) + ', "parameters": ' + parameters + "}"
    )


def _preamble_date(template: str) -> str:
    if "strftime_now" in template:
        return datetime.now().strftime("%d %b %Y")
    found = DATE_STRING.search(template)
    return found.group(1) if found else DEFAULT_DATE


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    messages = list(messages)
    parts = []
    template = model.metadata.chat_template or ""
    if PREAMBLE_MARKER in template:
        system = ""
        if messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"].strip()
        date = _preamble_date(template)
        parts.append(_turn("system", f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}"))
    for message in messages:
        if message.get("tool_calls"):
            parts.append(_turn("assistant", "; ".join(_tool_call(call) for call in message["tool_calls"])))
        elif message["role"] == "tool":
            parts.append(_turn("ipython", message["content"]))
        else:
            parts.append(_turn(message["role"], message["content"].strip()))
    parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(text="".join(parts), stop=(END_OF_TURN, END_OF_MESSAGE), add_bos=add_bos)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [END_OF_TURN, END_OF_MESSAGE, START_HEADER]
    return None


def _json_objects(text: str) -> list:
    """The JSON values of ``text``, separated by ``;`` (a trailing ``;`` is allowed); raises ValueError."""
    decoder = json.JSONDecoder()
    values = []
    position = 0
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        rest = text[position:].lstrip()
        if rest and not rest.startswith(";"):
            raise ValueError("text after a JSON value")
        rest = rest[1:].lstrip() if rest else rest
        position = len(text) - len(rest)
    return values


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY:
        return None
    body = text.strip()
    if body.startswith(PYTHON_TAG):
        body = body[len(PYTHON_TAG) :].lstrip()
    if not body.startswith("{"):
        return None
    try:
        objects = _json_objects(body)
    except (ValueError, RecursionError):
        return None
    calls = []
    for index, data in enumerate(objects):
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            return None
        arguments = data.get("parameters", data.get("arguments"))
        if not isinstance(arguments, dict):
            return None
        calls.append(ggufd.tool_call(data["name"], arguments, f"call_{index}"))
    return calls or None


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [PYTHON_TAG]  # a bare JSON call at the start is ggufd's generic opener
    return None
