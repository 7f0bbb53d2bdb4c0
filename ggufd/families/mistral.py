"""The mistral family (Mistral and Mixtral Instruct v0.1-v0.3, Mistral Nemo and other tekken models).

Written exactly like a third-party plugin. The format follows Mistral's reference
tokenizer (mistral-common) and the templates Mistral publishes with its models; the
spaces differ per tokenizer version, so the style is picked by a fingerprint of the
GGUF's template (or its ``tokenizer.ggml.pre``):

    v3 (default; v2/v3 SentencePiece, Mistral-7B-Instruct-v0.3, Mixtral-8x22B):
    <s>[INST] {user}[/INST] {answer}</s>[TOOL_CALLS] [{"name": "f", "arguments": {...}, "id": "..."}]</s>[TOOL_RESULTS] {"content": ..., "call_id": "..."}[/TOOL_RESULTS][INST] {system}

    {user}[/INST]

    tekken (Mistral Nemo; template with "[INST]" directly followed by the message):
    <s>[INST]{user}[/INST]{answer}</s>[TOOL_CALLS][{...}]</s>[TOOL_RESULTS]{...}[/TOOL_RESULTS][INST]{user}[/INST]

    v1 (Mistral-7B-Instruct-v0.1, " [/INST]" in the template; llama.cpp's "mistral-v1"):
    <s> [INST] {system}

    {user} [/INST] {answer}</s> [INST] {user} [/INST]

The system prompt (all system messages, joined by a blank line) goes before the last
user message (before the first one in v1), as Mistral's templates do. v3 trims answers.
A tool result's content is JSON when it parses as JSON, else a JSON string, and tool
calls keep the ids the client sent (Mistral's templates insist on 9-character ids; this
plugin does not); text beside an answer's tool calls is dropped, as Mistral's templates
do. v1 has no tool-call syntax: tool messages are refused. Templates with
``[SYSTEM_PROMPT]`` (Mistral Small 3 and later, "v7") are left to ggufd's own rendering.
"""

from __future__ import annotations

import json
import re

import ggufd
from ggufd import ChatPrompt, InvalidRequest

FAMILY = "mistral"
MISTRAL_ARCHITECTURES = {"llama", "mistral", "mistral3"}
NAME_PATTERN = re.compile(r"mistral|mixtral", re.IGNORECASE)
INST, END_INST, EOS = "[INST]", "[/INST]", "</s>"
TOOL_CALLS, TOOL_RESULTS, END_TOOL_RESULTS = "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"
# [INST] templates of other formats: Llama 2 (<<SYS>>) and Mistral v7+ ([SYSTEM_PROMPT])
NOT_OURS = ("<<SYS>>", "[SYSTEM_PROMPT]")
TEKKEN_TEMPLATE = re.compile(r"""\[INST\]["']""")


@ggufd.hookimpl
def detect_family(metadata, spec):
    if metadata.architecture not in MISTRAL_ARCHITECTURES:
        return None
    template = metadata.chat_template
    if template:
        if INST not in template or any(marker in template for marker in NOT_OURS):
            return None
        return FAMILY
    if NAME_PATTERN.search(metadata.name or "") or NAME_PATTERN.search(spec.path.name):
        return FAMILY
    return None


def style(metadata) -> str:
    """``"v1"``, ``"v3"`` or ``"tekken"``: the spacing of this model's format."""
    template = metadata.chat_template or ""
    if " [/INST]" in template:
        return "v1"
    if TEKKEN_TEMPLATE.search(template):
        return "tekken"
    if "[INST] " not in template and metadata.get("tokenizer.ggml.pre") == "tekken":
        return "tekken"
    return "v3"


def _tool_calls(message) -> str:
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") or call
        entry = {"name": function.get("name", ""), "arguments": ggufd.tool_arguments(function.get("arguments"))}
        if call.get("id"):
            entry["id"] = call["id"]
        calls.append(entry)
    return json.dumps(calls, ensure_ascii=False)


def _tool_result(message) -> str:
    result = {"content": ggufd.tool_arguments(message["content"])}
    if message.get("tool_call_id"):
        result["call_id"] = message["tool_call_id"]
    return json.dumps(result, ensure_ascii=False)


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    variant = style(model.metadata)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    users = [index for index, m in enumerate(turns) if m["role"] == "user"]
    if not users:
        raise InvalidRequest("A mistral chat needs at least one user message.", param="messages")
    system_at = users[0] if variant == "v1" else users[-1]
    space = "" if variant == "tekken" else " "
    parts = []
    for index, message in enumerate(turns):
        role, content = message["role"], message["content"]
        if variant == "v1" and (role == "tool" or message.get("tool_calls")):
            raise InvalidRequest("This Mistral model's chat format (v1) has no tool calls.", param="messages")
        if role == "user":
            if index == system_at and system:
                content = f"{system}\n\n{content}"
            if variant == "v1":
                parts.append(f" {INST} {content} {END_INST}")
            else:
                parts.append(f"{INST}{space}{content}{END_INST}")
        elif message.get("tool_calls"):
            parts.append(f"{TOOL_CALLS}{space}{_tool_calls(message)}{EOS}")
        elif role == "tool":
            parts.append(f"{TOOL_RESULTS}{space}{_tool_result(message)}{END_TOOL_RESULTS}")
        else:
            parts.append(f"{space}{content.strip() if variant == 'v3' else content}{EOS}")
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(text="".join(parts), stop=(EOS,), add_bos=add_bos)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [EOS, INST]
    return None


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY:
        return None
    body = text.lstrip()
    if not body.startswith(TOOL_CALLS):
        return None
    body = body[len(TOOL_CALLS) :].lstrip()
    try:
        entries, _ = json.JSONDecoder().raw_decode(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entries, list) or not entries:
        return None
    calls = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            return None
        arguments = entry.get("arguments", {})
        if not isinstance(arguments, dict):
            return None
        call_id = entry.get("id")
        calls.append(
            ggufd.tool_call(
                entry["name"], arguments, call_id if isinstance(call_id, str) and call_id else f"call_{index}"
            )
        )
    return calls


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [TOOL_CALLS]
    return None
