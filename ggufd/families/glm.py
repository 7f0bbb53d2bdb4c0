"""The glm family (Z.ai GLM-4.5, GLM-4.5-Air and GLM-4.6, architecture ``glm4moe``).

Written exactly like a third-party plugin. The format is Z.ai's published template
(zai-org/GLM-4.6 and zai-org/GLM-4.5-Air, ``chat_template.jinja``; GLM-4.5's is the same):

    [gMASK]<sop><|system|>
    {system}<|user|>
    {user}<|assistant|>
    <think></think>
    {answer}<|user|>
    {user}<|assistant|>
    <think></think>
    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call><|observation|>
    <tool_response>
    {tool result}
    </tool_response><|assistant|>

Offered tools are described in a ``<|system|>`` turn right after ``[gMASK]<sop>`` (the
template's ``# Tools`` text, one JSON line per tool) and the prompt says so
(``tools_rendered``). Answers are stripped. Earlier reasoning (``reasoning_content``, or a
``<think>`` block in the content) is kept only for the answers after the last user message
(the steps of the current tool-calling turn); every other answer gets an empty
``<think></think>``. A call's arguments are rendered one ``<arg_key>``/``<arg_value>`` pair
each, strings as they are and other values as JSON; arguments that are not a JSON object are
refused (the template cannot render them).

Thinking: the models think by default, writing ``<think>…</think>`` after the generation
prompt. ``enable_thinking`` (a template variable, as in the template) false appends
``/nothink`` to every user message and opens the answer with an empty ``<think></think>``;
``reasoning_effort`` ``"none"``/``"minimal"`` does the same, other efforts leave thinking on
(``enable_thinking`` wins when both are given). The answer filter splits ``<think>`` off when
the model thinks, and drops the newline the model starts its answer with.

Tool calls, as the model writes them::

    <tool_call>{name}
    <arg_key>{key}</arg_key>
    <arg_value>{value}</arg_value>
    </tool_call>

The arguments become a JSON object as GLM's own parsers (vLLM's ``glm45``, llama.cpp) make
it: a value stays a string when the tool's schema says the argument is a string, else it is
parsed as JSON (or a Python literal), and kept as a string when it is neither. They stream
one argument at a time, as each ``</arg_value>`` arrives. ``parse_tool_calls`` gets no tool
schemas, so there every value that parses is parsed.

``[gMASK]`` is the BOS token of GLM vocabularies, which llama.cpp does not add (its ``glm4``
pre-tokenizer sets none): the prompt text starts with it unless the GGUF says
``tokenizer.ggml.add_bos_token`` is true. Detection: a template with the GLM-4.5 markers
(``[gMASK]<sop>``, ``<|assistant|>``, ``<arg_key>``, the ``\\n<think></think>`` of earlier
answers), on any architecture, or a ``glm4moe`` GGUF without a template. GLM-4.7's template
(no newlines around the arguments, ``</think>`` and ``clear_thinking``), GLM-4.5V's (image
tokens) and the older GLM-4 / ChatGLM formats are left to the GGUF's own template.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ggufd
from ggufd import ChatPrompt, InvalidRequest, ReasoningSyntax

FAMILY = "glm"
GLM_ARCHITECTURES = {"glm4moe"}
PREFIX = "[gMASK]<sop>"
SYSTEM, USER, ASSISTANT, OBSERVATION = "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"
END_OF_TEXT = "<|endoftext|>"
THINK, END_THINK = "<think>", "</think>"
NO_THINK = "/nothink"
CALL_BEGIN, CALL_END = "<tool_call>", "</tool_call>"
KEY_BEGIN, KEY_END = "<arg_key>", "</arg_key>"
VALUE_BEGIN, VALUE_END = "<arg_value>", "</arg_value>"
# what a GLM-4.5/4.6 template has: the markers, and the empty think block of earlier answers
# ('\n<think></think>' as a Jinja string literal)
TEMPLATE_MARKERS = (PREFIX, ASSISTANT, KEY_BEGIN, OBSERVATION, "\\n<think></think>")
# templates of other GLM formats: GLM-4.7 (clear_thinking), GLM-4.5V (image tokens)
OTHER_FORMATS = ("clear_thinking", "<|begin_of_image|>")
REASONING = ReasoningSyntax(THINK, END_THINK, close=END_THINK + "\n")
EFFORTS_WITHOUT_THINKING = {"none", "minimal"}
TOOLS_HEAD = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_TAIL = (
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)
CALL = re.compile(re.escape(CALL_BEGIN) + r"(.*?)(?:" + re.escape(CALL_END) + r"|\Z)", re.DOTALL)
# a function name: no spaces, quotes, brackets or markup (a JSON body is not a name)
NAME = re.compile(r"[^\s\"'<>{}\[\],]+")


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if template:
        if all(marker in template for marker in TEMPLATE_MARKERS) and not any(m in template for m in OTHER_FORMATS):
            return FAMILY
        return None
    if metadata.architecture in GLM_ARCHITECTURES:
        return FAMILY
    return None


def thinking(template_kwargs: Mapping[str, Any]) -> tuple[bool | None, frozenset[str]]:
    """Whether the request turns thinking on (True), off (False) or leaves it (None), and the
    template variables that decided it."""
    if "enable_thinking" in template_kwargs:
        return bool(template_kwargs["enable_thinking"]), frozenset({"enable_thinking"})
    effort = template_kwargs.get("reasoning_effort")
    if isinstance(effort, str):
        return effort.lower() not in EFFORTS_WITHOUT_THINKING, frozenset({"reasoning_effort"})
    return None, frozenset()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tools(tools: Sequence[Mapping[str, Any]]) -> str:
    return TOOLS_HEAD + "".join(_json(tool) + "\n" for tool in tools) + TOOLS_TAIL


def _reasoning_and_answer(message: Mapping[str, Any]) -> tuple[str, str]:
    """The template's split of an earlier answer: ``reasoning_content`` when sent, else the
    ``<think>`` block of its content."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str):
        return reasoning, content
    if END_THINK not in content:
        return "", content
    parts = content.split(END_THINK)
    return parts[0].rstrip("\n").split(THINK)[-1].lstrip("\n"), parts[-1].lstrip("\n")


def _tool_call(call: Mapping[str, Any]) -> str:
    function = call.get("function") or call
    arguments = ggufd.tool_arguments(function.get("arguments") or {})
    if not isinstance(arguments, Mapping):
        raise InvalidRequest(
            "A GLM tool call's arguments must be a JSON object.", param="messages.tool_calls.function.arguments"
        )
    pairs = "".join(
        f"{KEY_BEGIN}{key}{KEY_END}\n{VALUE_BEGIN}{value if isinstance(value, str) else _json(value)}{VALUE_END}\n"
        for key, value in arguments.items()
    )
    return f"\n{CALL_BEGIN}{function.get('name', '')}\n{pairs}{CALL_END}"


def _assistant(message: Mapping[str, Any], current_turn: bool) -> str:
    reasoning, answer = _reasoning_and_answer(message)
    text = ASSISTANT + (
        f"\n{THINK}{reasoning.strip()}{END_THINK}" if current_turn and reasoning else "\n<think></think>"
    )
    if answer.strip():
        text += "\n" + answer.strip()
    return text + "".join(_tool_call(call) for call in message.get("tool_calls") or ())


@ggufd.hookimpl
def format_chat(model, messages, tools, template_kwargs):
    if model.family != FAMILY:
        return None
    think, honoured = thinking(template_kwargs)
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    parts = [PREFIX, _tools(tools) if tools else ""]
    for index, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        if role == "user":
            parts.append(f"{USER}\n{content}" + (NO_THINK if think is False and not content.endswith(NO_THINK) else ""))
        elif role == "assistant":
            parts.append(_assistant(message, index > last_user))
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                parts.append(OBSERVATION)
            parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
        elif role == "system":
            parts.append(f"{SYSTEM}\n{content}")
    parts.append(ASSISTANT + ("\n<think></think>" if think is False else ""))
    text = "".join(parts)
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", False))
    bos = model.metadata.bos_token
    if add_bos and bos and text.startswith(bos):
        text = text[len(bos) :]  # the tokenizer adds it
    return ChatPrompt(
        text=text,
        stop=(USER, OBSERVATION),
        add_bos=add_bos,
        tools_rendered=bool(tools),
        honoured=honoured,
        reasoning=None if think is False else REASONING,
    )


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [USER, OBSERVATION, END_OF_TEXT]
    return None


class GlmAnswer:
    """:class:`ggufd.ReasoningFilter` for the prompt's reasoning syntax (none: all text is
    content), and the whitespace the answer starts with dropped (the model opens its answer with
    a newline, after its reasoning or after the prompt's empty ``<think></think>``)."""

    def __init__(self, reasoning: ReasoningSyntax | None) -> None:
        self._filter = ggufd.ReasoningFilter(reasoning) if reasoning is not None else None
        self._started = False  # some content was given

    def _trimmed(self, content: str, reasoning: str) -> tuple[str, str]:
        if not self._started:
            content = content.lstrip()
            self._started = bool(content)
        return content, reasoning

    def feed(self, text: str) -> tuple[str, str]:
        return self._trimmed(*self._filter.feed(text)) if self._filter else self._trimmed(text, "")

    def finish(self) -> tuple[str, str]:
        return self._trimmed(*self._filter.finish()) if self._filter else ("", "")


@ggufd.hookimpl
def answer_filter(model, prompt):
    if model.family != FAMILY:
        return None
    return GlmAnswer(prompt.reasoning)


# --------------------------------------------------------------------------- tool calls


def string_arguments(tools: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """For each offered tool, the arguments its schema types as strings."""
    result: dict[str, set[str]] = {}
    for tool in tools:
        function = tool.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        result[function.get("name", "")] = {
            key for key, schema in properties.items() if isinstance(schema, Mapping) and schema.get("type") == "string"
        }
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def argument_value(value: str, is_string: bool) -> Any:
    """An ``<arg_value>`` as GLM's parsers read it: as written for a string argument, else JSON,
    else a Python literal, else the stripped text."""
    if is_string:
        return value
    text = value.strip()
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    try:
        parsed = ast.literal_eval(text)
        json.dumps(parsed, allow_nan=False)  # only what JSON can hold
        return parsed
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def argument_field(key: str, value: str, is_string: bool) -> str:
    """``"key": value`` for the arguments' JSON."""
    return _json(key) + ": " + _json(argument_value(value, is_string))


class BlockParser:
    """``parse_block`` for :class:`ggufd.MarkedCalls`: the body of one ``<tool_call>`` block so far.

    The name is known once its line ends (a newline or the first ``<arg_key>``); the arguments
    grow by one ``"key": value`` each time an ``</arg_value>`` arrives, and are closed with ``}``
    when the block is. A key whose ``</arg_key>`` is not followed by ``<arg_value>`` is skipped.
    Each piece of a block is read once (a streamed block is handed over again at every piece:
    reading it all each time would take time quadratic in its length). ``strings``: the
    string-typed arguments of each tool."""

    def __init__(self, strings: Mapping[str, set[str]] | None = None) -> None:
        self.strings = strings or {}
        self._start()

    def _start(self) -> None:
        self._name: str | None = None  # the block's name, once its line ended
        self._read = ""  # the block's text up to the end of its last complete argument
        self._fields: list[str] = []

    def __call__(self, text: str, complete: bool) -> ggufd.Block | None:
        if not text.startswith(self._read):  # another block (one block's text only grows)
            self._start()
        try:
            return self._parse(text, complete)
        finally:
            if complete:
                self._start()  # MarkedCalls's next block is another one

    def _parse(self, text: str, complete: bool) -> ggufd.Block | None:
        if self._name is None:
            ends = [at for at in (text.find("\n"), text.find(KEY_BEGIN)) if at >= 0]
            if not ends and not complete:
                return ggufd.Block(None)
            cut = min(ends) if ends else len(text)
            name = text[:cut].strip()
            if not NAME.fullmatch(name):
                return None
            self._name, self._read = name, text[:cut]
        string_keys = self.strings.get(self._name, set())
        at = len(self._read)
        for key, value, end in arguments(text, at, complete):
            self._fields.append(argument_field(key, value, key in string_keys))
            at = end
        self._read = text[:at]
        fields = "{" + ", ".join(self._fields) if self._fields else ""
        return ggufd.Block(self._name, (fields or "{") + "}" if complete else fields)


def arguments(text: str, at: int, complete: bool) -> list[tuple[str, str, int]]:
    """The complete ``<arg_key>``/``<arg_value>`` pairs of ``text`` from ``at``: (key, value, where the
    pair ends). While the text may still grow, a pair not yet decided ends the list."""
    pairs = []
    while (key := text.find(KEY_BEGIN, at)) >= 0:
        key_end = text.find(KEY_END, key)
        if key_end < 0:
            break
        value = key_end + len(KEY_END)
        while value < len(text) and text[value].isspace():
            value += 1
        if not text.startswith(VALUE_BEGIN, value):
            if not complete and VALUE_BEGIN.startswith(text[value:]):
                break  # the value may still open
            at = value  # not a pair: skip the key
            continue
        value_end = text.find(VALUE_END, value)
        if value_end < 0:
            break
        at = value_end + len(VALUE_END)
        pairs.append((text[key + len(KEY_BEGIN) : key_end].strip(), text[value + len(VALUE_BEGIN) : value_end], at))
    return pairs


def parse_block(text: str, complete: bool, strings: Mapping[str, set[str]] | None = None) -> ggufd.Block | None:
    """One ``<tool_call>`` body read at once (see :class:`BlockParser`)."""
    return BlockParser(strings)(text, complete)


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY or CALL_BEGIN not in text:
        return None
    calls = []
    for body in CALL.findall(text):
        block = parse_block(body, complete=True)
        if block is not None and block.name:
            calls.append(ggufd.tool_call(block.name, block.arguments))
    return calls or None


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [CALL_BEGIN]
    return None


@ggufd.hookimpl
def tool_call_stream(model, tools):
    """Each ``<tool_call>`` block is a call; its arguments stream one at a time."""
    if model.family != FAMILY:
        return None
    parse = BlockParser(string_arguments(tools))
    return ggufd.MarkedCalls(CALL_BEGIN, CALL_END, parse, [tool["function"]["name"] for tool in tools])


@ggufd.hookimpl
def markup_tokens(model):
    """GLM's call and reasoning markers are special tokens of its vocabulary: rendered as text."""
    if model.family == FAMILY:
        return [CALL_BEGIN, CALL_END, KEY_BEGIN, KEY_END, VALUE_BEGIN, VALUE_END, THINK, END_THINK]
    return None
