"""The gemma family (Gemma 2 and 3): turn markers, system prompt placement, stop markers.

Written exactly like a third-party plugin. Gemma GGUFs (such as the demo model
gemma-3-270m) often carry no chat template; this plugin supplies the format from
Google's published template:

    <bos><start_of_turn>user
    {system}

    {first user message}<end_of_turn>
    <start_of_turn>model
    {answer}<end_of_turn>
    <start_of_turn>model

Gemma has no system role: the system text is prepended to the first user turn.
"""

from __future__ import annotations

import re

import ggufd
from ggufd import ChatPrompt, InvalidRequest

GEMMA_ARCHITECTURES = {"gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding"}
NAME_PATTERN = re.compile(r"gemma", re.IGNORECASE)
END_OF_TURN = "<end_of_turn>"
ROLE_TAGS = {"user": "user", "assistant": "model", "tool": "user"}


@ggufd.hookimpl
def detect_family(metadata, spec):
    if metadata.architecture in GEMMA_ARCHITECTURES:
        return "gemma"
    if NAME_PATTERN.search(metadata.name or "") or NAME_PATTERN.search(spec.path.name):
        return "gemma"
    return None


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != "gemma":
        return None
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if not turns:
        raise InvalidRequest("A gemma chat needs at least one user message.", param="messages")
    parts = []
    for index, message in enumerate(turns):
        content = message["content"].strip()
        if index == 0 and system:
            content = f"{system}\n\n{content}" if message["role"] == "user" else content
        parts.append(f"<start_of_turn>{ROLE_TAGS[message['role']]}\n{content}{END_OF_TURN}\n")
    if system and turns[0]["role"] != "user":
        parts.insert(0, f"<start_of_turn>user\n{system}{END_OF_TURN}\n")
    parts.append("<start_of_turn>model\n")
    return ChatPrompt(text="".join(parts), stop=(END_OF_TURN,), add_bos=True)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == "gemma":
        return [END_OF_TURN, "<start_of_turn>"]
    return None
