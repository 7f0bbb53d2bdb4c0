"""The qwen3 family (Qwen3, its 2507 Instruct and Thinking updates, Qwen3-Next).

Written exactly like a third-party plugin. The format is Qwen's published template
(Qwen/Qwen3-*, ``tokenizer_config.json``): ChatML turns, Hermes-style tool calls, and a
``<think>`` block the model opens itself::

    <|im_start|>system
    {system}<|im_end|>
    <|im_start|>user
    {user}<|im_end|>
    <|im_start|>assistant
    <think>
    {reasoning}
    </think>

    {answer}
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    {tool result}
    </tool_response><|im_end|>
    <|im_start|>assistant

As in the template, the reasoning of answers before the last user query is dropped (only
the text after ``</think>`` is kept), an answer after it keeps its reasoning, and offered
tools are described in the system turn (``# Tools`` ... ``<tools></tools>``).

Three variants, told apart by the GGUF's template (a qwen3 GGUF without one is hybrid):

- hybrid (Qwen3, the template reads ``enable_thinking``): the model thinks unless
  ``enable_thinking`` is false (or ``reasoning_effort`` is "none"/"minimal"), then the
  generation prompt carries the template's empty ``<think>\\n\\n</think>\\n\\n`` block;
- thinking (Qwen3-2507-Thinking, Qwen3-Next-Thinking): the generation prompt opens
  ``<think>\\n``, so the answer starts inside the reasoning;
- instruct (Qwen3-2507-Instruct): no reasoning.

Detection: the Qwen3 architectures (``qwen3``, ``qwen3moe``, ``qwen3next``) with a ChatML
template or none, or Qwen3's template on another architecture (fine-tunes). Templates that
call tools in Qwen's XML syntax (``<function=...>``: Qwen3-Coder, Qwen3.5) belong to the
qwen3-coder family, and Qwen2/2.5 and other ChatML models to chatml.
"""

from __future__ import annotations

import json
import re

import ggufd
from ggufd import ChatPrompt, ReasoningSyntax

FAMILY = "qwen3"
ARCHITECTURES = {"qwen3", "qwen3moe", "qwen3next"}
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK, THINK_END = "<think>", "</think>"
TOOL_CALL_BEGIN, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
# markers of other formats: a template with these is not Qwen3's
OTHER_FORMATS = ("<|start_header_id|>", "[INST]", "<start_of_turn>", "<|im_sep|>", "<｜User｜>")
XML_CALLS = ("<function=", "<parameter=")  # Qwen3-Coder's and Qwen3.5's tool calls: the qwen3-coder family
# what marks Qwen3's own template (on any architecture): ChatML, Hermes calls, the last-query scan
SIGNATURE = (IM_START, TOOL_CALL_BEGIN, THINK, "multi_step_tool")
CODER_NAME = re.compile(r"qwen3(?:\.\d+)?[-_ ]?coder", re.IGNORECASE)
OPENS_THINKING = "<|im_start|>assistant\\n<think>"  # as the template source writes it (2507-Thinking)
SWITCH = "enable_thinking"
EMPTY_THINK = "<think>\n\n</think>\n\n"
TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if not template:
        name = f"{metadata.name or ''} {spec.path.name}"
        return FAMILY if metadata.architecture in ARCHITECTURES and not CODER_NAME.search(name) else None
    if IM_START not in template or any(marker in template for marker in OTHER_FORMATS + XML_CALLS):
        return None
    if metadata.architecture in ARCHITECTURES or all(marker in template for marker in SIGNATURE):
        return FAMILY
    return None


def variant(model) -> tuple[bool, bool]:
    """(switch, opens): the template reads ``enable_thinking`` (a GGUF without a template is
    Qwen3 hybrid), and its generation prompt opens the reasoning."""
    template = model.metadata.chat_template or ""
    return (not template or SWITCH in template), OPENS_THINKING in template


def _arguments(value) -> str:
    arguments = ggufd.tool_arguments(value)
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _tool_call(call) -> str:
    function = call.get("function") or call
    return (
        '<tool_call>\n{"name": "'
        + str(function.get("name", ""))
        + '", "arguments": '
        + _arguments(function.get("arguments"))
        + "}\n</tool_call>"
    )


def _is_tool_response(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


def _split_reasoning(message) -> tuple[str, str]:
    """(reasoning, content) of an assistant message, as the template takes them apart."""
    content = message["content"]
    if isinstance(message.get("reasoning_content"), str):
        return message["reasoning_content"], content
    if THINK_END not in content:
        return "", content
    reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK)[-1].lstrip("\n")
    return reasoning, content.split(THINK_END)[-1].lstrip("\n")


def render_messages(messages, tools) -> str:
    """The template's system turn (with the tools) and turns, without the generation prompt."""
    parts = []
    first_is_system = bool(messages) and messages[0]["role"] == "system"
    if tools:
        parts.append(f"{IM_START}system\n" + (messages[0]["content"] + "\n\n" if first_is_system else ""))
        parts.append(TOOLS_INTRO + "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools))
        parts.append(TOOLS_OUTRO)
    elif first_is_system:
        parts.append(f"{IM_START}system\n{messages[0]['content']}{IM_END}\n")
    last_query = len(messages) - 1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "user" and not _is_tool_response(messages[index]["content"]):
            last_query = index
            break
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "user" or (role == "system" and index > 0):
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
        elif role == "assistant":
            reasoning, content = _split_reasoning(message)
            if index > last_query and (index == len(messages) - 1 or reasoning):
                thought, answer = reasoning.strip("\n"), content.lstrip("\n")
                parts.append(f"{IM_START}assistant\n{THINK}\n{thought}\n{THINK_END}\n\n{answer}")
            else:
                parts.append(f"{IM_START}assistant\n{content}")
            for number, call in enumerate(message.get("tool_calls") or ()):
                parts.append(("\n" if number or content else "") + _tool_call(call))
            parts.append(f"{IM_END}\n")
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                parts.append(f"{IM_START}user")
            parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if index == len(messages) - 1 or messages[index + 1]["role"] != "tool":
                parts.append(f"{IM_END}\n")
    return "".join(parts)


@ggufd.hookimpl
def format_chat(model, messages, tools, template_kwargs):
    if model.family != FAMILY:
        return None
    switch, opens = variant(model)
    on, honoured = ggufd.thinking_switch(template_kwargs or {}) if switch else (True, frozenset())
    generation = f"{IM_START}assistant\n"
    if not on:
        generation += EMPTY_THINK
    elif opens:
        generation += f"{THINK}\n"
    reasoning = ReasoningSyntax(THINK, THINK_END, opened=opens) if on and (switch or opens) else None
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", False))
    return ChatPrompt(
        text=render_messages(messages, tools or ()) + generation,
        stop=(IM_END,),
        add_bos=add_bos,
        tools_rendered=bool(tools),
        honoured=honoured,
        reasoning=reasoning,
    )


@ggufd.hookimpl
def answer_filter(model, prompt):
    if model.family != FAMILY or prompt.reasoning is None:
        return None
    return ggufd.ReasoningFilter(prompt.reasoning)


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
        block = ggufd.json_call_block(body, True)
        if block is None or not block.name:
            return None
        calls.append(ggufd.tool_call(block.name, block.arguments, f"call_{index}"))
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


@ggufd.hookimpl
def markup_tokens(model):
    """Qwen's call markers (added tokens; special in some conversions): rendered as text."""
    if model.family == FAMILY:
        return [TOOL_CALL_BEGIN, TOOL_CALL_END]
    return None
