"""The chatml family (Qwen 2, 2.5 and ChatML fine-tunes with Hermes-style tool calls).

Written exactly like a third-party plugin. The format is Qwen's published template
(Qwen/Qwen2.5-*-Instruct, tokenizer_config.json):

    <|im_start|>system
    {system}<|im_end|>
    <|im_start|>user
    {user}<|im_end|>
    <|im_start|>assistant
    {answer}
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    {tool result}
    </tool_response><|im_end|>
    <|im_start|>assistant

Contents are not trimmed. Consecutive tool results share one user turn. Qwen 2 and 2.5
templates open a chat without a system message with a default one ("You are Qwen,
created by Alibaba Cloud. ..."); when the GGUF's template carries such a literal default
system turn, this plugin uses it too. Contents are rendered as sent (no ``<think>`` handling).

ChatML is the most generic family, so detection is conservative: the Qwen 2 architectures
(unless the GGUF's template is in another format, as DeepSeek's Qwen distills are), a
Qwen name without a template, or a ChatML template that speaks the ``<tool_call>``
dialect. Any other plain ChatML template is left to ggufd's own rendering of it. Qwen3 and
later are not ChatML's: the Qwen3 architectures and Qwen3's templates (``<think>`` and the
last-query scan) are the qwen3 family's, templates with Qwen's XML tool calls (``<function=``:
Qwen3-Coder, Qwen3.5) and the Qwen3.5 architectures the qwen3-coder family's.
"""

from __future__ import annotations

import json
import re

import ggufd
from ggufd import ChatPrompt

FAMILY = "chatml"
QWEN_ARCHITECTURES = {"qwen2", "qwen2moe"}
# Qwen3 and later: the qwen3 and qwen3-coder families
NEWER_QWEN_ARCHITECTURES = {"qwen3", "qwen3moe", "qwen3next", "qwen35", "qwen35moe"}
NAME_PATTERN = re.compile(r"qwen", re.IGNORECASE)
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
# markers of more specific families: a template with these is not plain ChatML
OTHER_FORMATS = ("<|start_header_id|>", "[INST]", "<start_of_turn>", "<|im_sep|>")
QWEN3_TEMPLATE = ("<think>", "multi_step_tool")  # Qwen3's templates: reasoning and the last-query scan
XML_CALL = "<function="  # Qwen's XML tool calls (Qwen3-Coder, Qwen3.5)
TOOL_CALL_BEGIN, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
DEFAULT_SYSTEM = re.compile(r"""(['"])<\|im_start\|>system\\n([^'"{}\\]+)<\|im_end\|>\\n\1""")


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if template and (IM_START not in template or any(marker in template for marker in OTHER_FORMATS)):
        return None
    if metadata.architecture in NEWER_QWEN_ARCHITECTURES or XML_CALL in template:
        return None
    if all(marker in template for marker in QWEN3_TEMPLATE):
        return None
    if metadata.architecture in QWEN_ARCHITECTURES:
        return FAMILY
    if NAME_PATTERN.search(metadata.name or "") or NAME_PATTERN.search(spec.path.name):
        return FAMILY
    if "<tool_call>" in template:
        return FAMILY
    return None


def _tool_call(call) -> str:
    function = call.get("function") or call
    arguments = json.dumps(ggufd.tool_arguments(function.get("arguments")), ensure_ascii=False)
    return (
        '<tool_call>\n{"name": "' + str(function.get("name", "")) + '", "arguments": ' + arguments + "}\n</tool_call>"
    )


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    parts = []
    default_system = DEFAULT_SYSTEM.search(model.metadata.chat_template or "")
    if default_system and (not messages or messages[0]["role"] != "system"):
        parts.append(f"{IM_START}system\n{default_system.group(2)}{IM_END}\n")
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                parts.append(f"{IM_START}user")
            parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if index == len(messages) - 1 or messages[index + 1]["role"] != "tool":
                parts.append(f"{IM_END}\n")
        elif role == "assistant" and message.get("tool_calls"):
            calls = "\n".join(_tool_call(call) for call in message["tool_calls"])
            parts.append(f"{IM_START}assistant\n" + (f"{content}\n" if content else "") + f"{calls}{IM_END}\n")
        else:
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    default_bos = model.metadata.architecture not in QWEN_ARCHITECTURES | NEWER_QWEN_ARCHITECTURES
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", default_bos))
    return ChatPrompt(text="".join(parts), stop=(IM_END,), add_bos=add_bos)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [IM_END, IM_START, END_OF_TEXT]
    return None


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY:
        return None
    calls = []
    for index, body in enumerate(TOOL_CALL.findall(text)):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            return None
        arguments = data.get("arguments")
        if not isinstance(arguments, dict):
            return None
        calls.append(ggufd.tool_call(data["name"], arguments, f"call_{index}"))
    return calls or None


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [TOOL_CALL_BEGIN]
    return None


@ggufd.hookimpl
def tool_call_stream(model, tools):
    """Each ``<tool_call>`` block is a call whose arguments stream as they are written."""
    if model.family != FAMILY:
        return None
    names = [tool["function"]["name"] for tool in tools]
    return ggufd.MarkedCalls(TOOL_CALL_BEGIN, TOOL_CALL_END, ggufd.json_call_block, names)
