"""The deepseek family (DeepSeek V2.5, V3, R1 and the R1 distills that keep DeepSeek's template).

Written exactly like a third-party plugin. The format is DeepSeek's published template
(deepseek-ai/DeepSeek-R1, tokenizer_config.json; V3 uses it without the reasoning parts);
the markers use full-width bars (U+FF5C) and U+2581 "▁" in place of spaces:

    {system}<｜User｜>{user}<｜Assistant｜>{answer}<｜end▁of▁sentence｜><｜User｜>{user}<｜Assistant｜>

The system messages (joined by a blank line) open the prompt right after BOS, which the
tokenizer adds. R1 templates open the answer with ``<think>\\n``; this plugin does too when
the GGUF's template has that generation prompt. As in R1's template, the reasoning of
earlier answers is dropped: only the text after the last ``</think>`` is kept.

Tool calls (V3 syntax)::

    <｜Assistant｜>{content}<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}
    ```json
    {arguments}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>

and their results::

    <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{result}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>

after which the model answers (or calls again) with no new ``<｜Assistant｜>`` marker.
A deepseek/deepseek2 GGUF without a template gets this format, without ``<think>``. Two things differ from
the published template, both fixes: a user message right after tool results closes the
results block (the template leaves it open), and every tool-calling message opens its own
``<｜tool▁calls▁begin｜>`` / results block (the template only opens the first of a chat).
Several results are separated by a newline unless the GGUF's template joins them without one.

DeepSeek V3.1/V3.2 templates (``<｜Assistant｜></think>``, DSML tool calls) are another
format and are left to the GGUF's own template, as is a deepseek GGUF whose template is
not DeepSeek's (DeepSeek V2's ``User:``/``Assistant:`` format, other models on the
deepseek2 architecture).
"""

from __future__ import annotations

import json
import re

import ggufd
from ggufd import ChatPrompt, InvalidRequest

FAMILY = "deepseek"
DEEPSEEK_ARCHITECTURES = {"deepseek", "deepseek2"}
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
EOS = "<｜end▁of▁sentence｜>"
CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
OUTPUTS_BEGIN, OUTPUTS_END = "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>"
OUTPUT_BEGIN, OUTPUT_END = "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"
THINK_START, THINK_END = "<think>", "</think>"
# templates of later DeepSeek formats (V3.1 thinking switch, V3.2 DSML tool calls)
NEWER_FORMATS = ("<｜Assistant｜></think>", "｜DSML｜")
# tool-call markers as the models write them, also with "_" or " " in place of "▁" (the distills slip)
MARKER = re.compile(r"<｜tool[▁_ ](calls?|sep)(?:[▁_ ](begin|end))?｜>")
CALL = re.compile(re.escape(CALL_BEGIN) + r"(.*?)" + re.escape(CALL_END), re.DOTALL)
FENCED = re.compile(r"\A(?P<name>[^\n`]+?)[ \t]*\n```(?:json)?[ \t]*\n(?P<arguments>.*?)\n?```\s*\Z", re.DOTALL)


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if template:
        # the template decides, on any architecture (R1 distills are llama and qwen2 models)
        if USER in template and ASSISTANT in template and not any(marker in template for marker in NEWER_FORMATS):
            return FAMILY
        return None
    if metadata.architecture in DEEPSEEK_ARCHITECTURES:
        return FAMILY
    return None


def _without_reasoning(content: str) -> str:
    return content.split(THINK_END)[-1] if THINK_END in content else content


def _arguments(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def _tool_call(call) -> str:
    function = call.get("function") or {}
    return (
        f"{CALL_BEGIN}{call.get('type') or 'function'}{SEP}{function.get('name', '')}\n"
        f"```json\n{_arguments(function.get('arguments'))}\n```{CALL_END}"
    )


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    template = model.metadata.chat_template or ""
    thinks = ASSISTANT + "<think>" in template  # R1: the generation prompt opens the reasoning
    output_separator = (
        ""
        if OUTPUT_BEGIN in template and ("\\n" + OUTPUT_BEGIN) not in template and ("\n" + OUTPUT_BEGIN) not in template
        else "\n"
    )
    turns = [m for m in messages if m["role"] != "system"]
    if not turns:
        raise InvalidRequest("A deepseek chat needs at least one user message.", param="messages")
    parts = ["\n\n".join(m["content"] for m in messages if m["role"] == "system")]
    in_outputs = False
    for message in turns:
        role, content = message["role"], message["content"]
        if role == "tool":
            parts.append((output_separator if in_outputs else OUTPUTS_BEGIN) + f"{OUTPUT_BEGIN}{content}{OUTPUT_END}")
            in_outputs = True
            continue
        if in_outputs:
            parts.append(OUTPUTS_END)
        if role == "user":
            parts.append(USER + content)
        elif message.get("tool_calls"):
            calls = "\n".join(_tool_call(call) for call in message["tool_calls"])
            opening = "" if in_outputs else ASSISTANT  # after results the model goes on without a new marker
            parts.append(f"{opening}{_without_reasoning(content)}{CALLS_BEGIN}{calls}{CALLS_END}{EOS}")
        elif in_outputs:
            parts.append(_without_reasoning(content) + EOS)  # the answer that continues after the results
        else:
            parts.append(f"{ASSISTANT}{_without_reasoning(content)}{EOS}")
        in_outputs = False
    if in_outputs:
        parts.append(OUTPUTS_END)  # the model goes on with its answer after the results
    else:
        parts.append(ASSISTANT + (THINK_START + "\n" if thinks else ""))
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    # R1 reasons in <think>; its generation prompt opens the block (after tool results it goes on without one)
    reasoning = ggufd.ReasoningSyntax(THINK_START, THINK_END, opened=thinks and not in_outputs) if thinks else None
    return ChatPrompt(text="".join(parts), stop=(EOS,), add_bos=add_bos, reasoning=reasoning)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [EOS, USER]
    return None


def _canonical_marker(match) -> str:
    kind, edge = match.group(1), match.group(2)
    return f"<｜tool▁{kind}▁{edge}｜>" if edge else f"<｜tool▁{kind}｜>"


def _parse_call(body: str) -> dict | None:
    if SEP not in body:
        return None
    head, rest = body.split(SEP, 1)
    fenced = FENCED.match(rest.strip("\n"))
    if fenced:  # V3/R1: {type}<｜tool▁sep｜>{name}\n```json\n{arguments}\n```
        name, arguments = fenced["name"].strip(), fenced["arguments"]
    elif rest.lstrip().startswith("{"):  # V3.1 style, which distills sometimes write: {name}<｜tool▁sep｜>{arguments}
        name, arguments = head.strip(), rest
    else:
        return None
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    if not name or not isinstance(parsed, dict):
        return None
    return ggufd.tool_call(name, arguments.strip())


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY or not MARKER.search(text):
        return None
    text = MARKER.sub(_canonical_marker, text)
    bodies = CALL.findall(text)
    if not bodies or len(bodies) != text.count(CALL_BEGIN):
        return None  # no call, or one cut short
    calls = [_parse_call(body) for body in bodies]
    if any(call is None for call in calls):
        return None  # one malformed call: the answer is returned as text, not half of its calls
    return calls


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        # the calls block, or (distills) a call without it; "_" or " " in place of "▁" too
        return [marker.replace("▁", space) for marker in (CALLS_BEGIN, CALL_BEGIN) for space in ("▁", "_", " ")]
    return None


@ggufd.hookimpl
def answer_filter(model, prompt):
    """R1's ``<think>`` block becomes ``reasoning_content``."""
    if model.family != FAMILY or prompt.reasoning is None:
        return None
    return ggufd.ReasoningFilter(prompt.reasoning)


@ggufd.hookimpl
def markup_tokens(model):
    """DeepSeek's tool-call markers (special tokens in its vocabulary): rendered as text."""
    if model.family == FAMILY:
        return [CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP, THINK_START, THINK_END]
    return None
