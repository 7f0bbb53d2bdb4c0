"""The kimi-k2 family (Moonshot AI Kimi K2 Instruct 0711/0905 and Kimi K2 Thinking).

Written exactly like a third-party plugin. The format is Moonshot's published templates
(moonshotai/Kimi-K2-Instruct and moonshotai/Kimi-K2-Thinking, as llama.cpp keeps them in
``models/templates/``)::

    <|im_system|>tool_declare<|im_middle|>[{"type": "function", ...}]<|im_end|><|im_system|>system<|im_middle|>{system}<|im_end|><|im_user|>user<|im_middle|>{user}<|im_end|><|im_assistant|>assistant<|im_middle|>{answer}<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|><|im_system|>tool<|im_middle|>## Return of functions.get_weather:0
    {tool result}<|im_end|><|im_assistant|>assistant<|im_middle|>

Offered tools are declared in the ``tool_declare`` turn (their JSON, as sent), and the prompt
says so (``tools_rendered``). A chat that does not open with a system message gets the
template's default one ("You are a helpful assistant" for the first Instruct release, "You are
Kimi, an AI assistant created by Moonshot AI." for the later ones and Thinking). Contents are
not trimmed; arguments are rendered as the client sent them.

Kimi K2 Thinking (a template with ``<think>``): every answer opens with its reasoning,
``<think>{reasoning_content}</think>`` for the answers after the last answer without tool
calls (the steps of the current turn) and an empty ``<think></think>`` for the ones before;
a message's ``name`` replaces its role name. The model writes ``<think>…</think>`` before its
answer: ``prompt.reasoning`` says so and the answer filter splits it off. The Instruct models
do not reason.

One departure from the first Instruct template (Kimi-K2-Instruct, July 2025): it drops the
tool calls of earlier answers and renders tool results bare; this plugin renders both as
Moonshot's later templates (and Thinking's) do, the calls in their section and each result
as ``## Return of {tool_call_id}``, so the model sees the calls it made. The later Instruct
templates (Kimi-K2-Instruct-0905) are rendered the same way; no verified copy of them was at
hand, and what secondary copies show of them differs in whitespace (a ``# Tools`` line in the
declaration, indented tool results), so their prompts may differ from this one there.

Tool calls: ``<|tool_call_begin|>functions.{name}:{index}<|tool_call_argument_begin|>{JSON}
<|tool_call_end|>``, inside ``<|tool_calls_section_begin|>`` … ``<|tool_calls_section_end|>``
(the section markers are dropped from the content). The arguments stream verbatim as they
grow. The call id is the model's own ``functions.{name}:{index}`` (vLLM's ``kimi_k2`` parser
returns it too): clients send it back as the call's ``id`` and the result's
``tool_call_id``, and the template renders both as they are, so the next prompt shows the
model exactly the ids it wrote. A repeated id in one answer is replaced by a fresh one.

Kimi K2 is a ``deepseek2`` model, so detection is by template only: the ``<|im_user|>``,
``<|im_assistant|>`` and ``<|im_middle|>`` markers (a ``deepseek2`` GGUF without a template
stays the deepseek family's). Kimi K2.5 templates (a ``thinking`` switch) and Kimi K3's
are other formats and are left to the GGUF's own template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import ggufd
from ggufd import ChatPrompt, ReasoningSyntax, ToolCallDelta

FAMILY = "kimi-k2"
IM_SYSTEM, IM_USER, IM_ASSISTANT = "<|im_system|>", "<|im_user|>", "<|im_assistant|>"
IM_MIDDLE, IM_END = "<|im_middle|>", "<|im_end|>"
EOS = "[EOS]"
SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_end|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
THINK, END_THINK = "<think>", "</think>"
TEMPLATE_MARKERS = (IM_USER, IM_ASSISTANT, IM_MIDDLE)
# templates of later Kimi formats: K2.5's thinking switch
OTHER_FORMATS = ("thinking is defined",)
KIMI_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."
DEFAULT_SYSTEM = re.compile(re.escape(IM_SYSTEM + "system" + IM_MIDDLE) + r"([^<>{}'\"]+)" + re.escape(IM_END))
REASONING = ReasoningSyntax(THINK, END_THINK, close=END_THINK)
# a call's head: functions.{name}:{index} (the prefix and the index are optional for the name)
CALL_ID = re.compile(r"(?:functions\.)?([^\s.:<>{}\"']+)(?::\d+)?")
CALL = re.compile(re.escape(CALL_BEGIN) + r"(.*?)(?:" + re.escape(CALL_END) + r"|\Z)", re.DOTALL)
SECTION_MARKERS = (SECTION_BEGIN, SECTION_END)


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if all(marker in template for marker in TEMPLATE_MARKERS) and not any(m in template for m in OTHER_FORMATS):
        return FAMILY
    return None


def thinks(model) -> bool:
    """Kimi K2 Thinking: its template opens every answer with ``<think>``."""
    return THINK in (model.metadata.chat_template or "")


def default_system(model) -> str:
    found = DEFAULT_SYSTEM.search(model.metadata.chat_template or "")
    return found.group(1) if found else KIMI_SYSTEM


def _role(message: Mapping[str, Any], named: bool) -> str:
    role = message["role"]
    name = (message.get("name") or role) if named else role
    opener = {"user": IM_USER, "assistant": IM_ASSISTANT}.get(role, IM_SYSTEM)
    return f"{opener}{name}{IM_MIDDLE}"


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {}, ensure_ascii=False)


def _tool_calls(message: Mapping[str, Any]) -> str:
    calls = "".join(
        f"{CALL_BEGIN}{call.get('id') or ''}{ARGUMENT_BEGIN}{_arguments((call.get('function') or {}).get('arguments'))}"
        f"{CALL_END}"
        for call in message["tool_calls"]
    )
    return f"{SECTION_BEGIN}{calls}{SECTION_END}"


@ggufd.hookimpl
def format_chat(model, messages, tools):
    if model.family != FAMILY:
        return None
    thinking = thinks(model)
    parts = []
    if tools:
        parts.append(f"{IM_SYSTEM}tool_declare{IM_MIDDLE}{json.dumps(list(tools), ensure_ascii=False)}{IM_END}")
    if (thinking or messages) and (not messages or messages[0]["role"] != "system"):
        parts.append(f"{IM_SYSTEM}system{IM_MIDDLE}{default_system(model)}{IM_END}")
    # Thinking keeps the reasoning of the answers after the last one without tool calls
    history = max(
        (i for i, m in enumerate(messages) if m["role"] == "assistant" and not m.get("tool_calls")), default=-1
    )
    for index, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        if role not in ("system", "user", "assistant", "tool"):
            continue
        parts.append(_role(message, named=thinking))
        if role == "assistant":
            if thinking:
                reasoning = message.get("reasoning_content") if index > history else ""
                parts.append(f"{THINK}{reasoning if isinstance(reasoning, str) else ''}{END_THINK}")
            parts.append(content)
            if message.get("tool_calls"):
                parts.append(_tool_calls(message))
        elif role == "tool":
            parts.append(f"## Return of {message.get('tool_call_id') or ''}\n{content}")
        else:
            parts.append(content)
        parts.append(IM_END)
    parts.append(f"{IM_ASSISTANT}assistant{IM_MIDDLE}")
    return ChatPrompt(
        text="".join(parts),
        stop=(IM_END,),
        add_bos=bool(model.metadata.get("tokenizer.ggml.add_bos_token", False)),
        tools_rendered=bool(tools),
        reasoning=REASONING if thinking else None,
    )


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [IM_END, EOS]
    return None


@ggufd.hookimpl
def answer_filter(model, prompt):
    if model.family != FAMILY or prompt.reasoning is None:
        return None
    return ggufd.ReasoningFilter(prompt.reasoning)


# --------------------------------------------------------------------------- tool calls


def call_head(text: str) -> tuple[str, str] | None:
    """(id, name) of a call's head ``functions.{name}:{index}``; None when it is not one."""
    call_id = text.strip()
    head = CALL_ID.fullmatch(call_id)
    return (call_id, head.group(1)) if head else None


class CallParser:
    """Reads one ``<|tool_call_begin|>`` block at a time, as :class:`ggufd.MarkedCalls` hands it
    over: ``(block, id)`` for the text so far, the block as ``parse_block`` returns it.

    The arguments are a JSON object written out verbatim: they stream as they grow (trailing
    whitespace held) up to the object's end, found by brackets and strings; a complete block's
    must parse as a JSON object. Each piece is scanned once (a streamed block is handed over again
    at every piece: scanning it all each time would take time quadratic in its length)."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._head: tuple[str, str] | None = None  # (id, name), once the arguments marker came
        self._arguments = -1  # where the arguments' object opens (-1: not yet known)
        self._scanned = 0  # how far the object was scanned
        self._depth, self._in_string, self._escaped = 0, False, False
        self._end: int | None = None  # where the object ends

    def __call__(self, text: str, complete: bool) -> tuple[ggufd.Block | None, str | None]:
        if len(text) < self._scanned:  # another block (one block's text only grows)
            self._start()
        try:
            return self._parse(text, complete)
        finally:
            if complete:
                self._start()  # MarkedCalls's next block is another one

    def _parse(self, text: str, complete: bool) -> tuple[ggufd.Block | None, str | None]:
        if self._head is None:
            at = text.find(ARGUMENT_BEGIN)
            if at < 0:
                return (None if complete else ggufd.Block(None)), None
            head = call_head(text[:at])
            if head is None:
                return None, None
            self._head, self._scanned = head, at + len(ARGUMENT_BEGIN)
        call_id, name = self._head
        if self._arguments < 0:
            rest = text[self._scanned :]
            opening = len(rest) - len(rest.lstrip())
            if opening == len(rest):
                return (None if complete else ggufd.Block(None)), call_id  # the object has not opened yet
            if rest[opening] != "{":
                return None, call_id  # arguments that are not an object: not a call
            self._arguments = self._scanned = self._scanned + opening
        if self._end is None:
            self._scan(text)
        if not complete:
            arguments = text[self._arguments : self._end] if self._end else text[self._arguments :].rstrip()
            return ggufd.Block(name, arguments), call_id
        if self._end is None or not _is_object(text[self._arguments : self._end]):
            return None, call_id
        return ggufd.Block(name, text[self._arguments : self._end]), call_id

    def _scan(self, text: str) -> None:
        for at in range(self._scanned, len(text)):
            char = text[at]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._end = self._scanned = at + 1
                    return
        self._scanned = len(text)


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def parse_call(text: str, complete: bool) -> tuple[ggufd.Block | None, str | None]:
    """One whole ``<|tool_call_begin|>`` body read at once: (block, id) (see :class:`CallParser`)."""
    return CallParser()(text, complete)


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY or CALL_BEGIN not in text:
        return None
    calls, ids = [], set()
    for body in CALL.findall(text):
        block, call_id = parse_call(body, complete=True)
        if block is None or not block.name or call_id is None:
            continue
        calls.append(ggufd.tool_call(block.name, block.arguments, None if call_id in ids else call_id))
        ids.add(call_id)
    return calls or None


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [SECTION_BEGIN, CALL_BEGIN]
    return None


def _partial_marker(text: str, markers: Sequence[str]) -> int:
    """Where the longest suffix of ``text`` that could still grow into a marker starts."""
    first = max(0, len(text) - max(map(len, markers)) + 1)
    first = text.find("<", first)  # every marker starts with "<"
    if first < 0:
        return len(text)
    for start in range(first, len(text)):
        if any(marker.startswith(text[start:]) for marker in markers):
            return start
    return len(text)


class KimiCalls:
    """The tool-call stream for Kimi answers: the section markers are dropped, the calls between
    ``<|tool_call_begin|>`` and ``<|tool_call_end|>`` go through :class:`ggufd.MarkedCalls`, and
    each call gets the id the model wrote (see the module).

    MarkedCalls gives a call its first delta when ``parse_block`` first names an offered tool
    for the block, and calls ``parse_block`` with ``complete=True`` once at each block's end: so
    the ids of the blocks, queued at that moment, are those of the call headers, in order."""

    def __init__(self, names: Collection[str]) -> None:
        self.names = set(names)
        self._parser = CallParser()
        self._calls = ggufd.MarkedCalls(CALL_BEGIN, CALL_END, self._parse_block, self.names)
        self._pending = ""  # a partial section marker
        self._headed = False  # the current block was named (its call's header goes out)
        self._queued: list[str | None] = []  # the ids of the headers not delivered yet
        self._ids: set[str] = set()

    def _parse_block(self, text: str, complete: bool) -> ggufd.Block | None:
        block, call_id = self._parser(text, complete)
        if block is not None and block.name in self.names and not self._headed:
            self._headed = True
            self._queued.append(call_id)
        if complete:
            self._headed = False  # the next call is another block
        return block

    def _with_ids(self, pieces: list[str | ToolCallDelta]) -> list[str | ToolCallDelta]:
        result: list[str | ToolCallDelta] = []
        for piece in pieces:
            if isinstance(piece, ToolCallDelta) and piece.id is not None:
                wanted = self._queued.pop(0) if self._queued else None
                call_id = wanted if wanted and wanted not in self._ids else piece.id
                self._ids.add(call_id)
                piece = ToolCallDelta(piece.index, piece.arguments, call_id, piece.name)
            result.append(piece)
        return result

    def feed(self, text: str) -> list[str | ToolCallDelta]:
        text = self._pending + text
        for marker in SECTION_MARKERS:
            text = text.replace(marker, "")
        keep = _partial_marker(text, SECTION_MARKERS)
        text, self._pending = text[:keep], text[keep:]
        return self._with_ids(self._calls.feed(text)) if text else []

    def finish(self) -> list[str | ToolCallDelta]:
        pending, self._pending = self._pending, ""
        pieces = self._calls.feed(pending) if pending else []
        return self._with_ids(pieces + self._calls.finish())


@ggufd.hookimpl
def tool_call_stream(model, tools):
    """Each call's arguments stream as they are written; the calls keep Kimi's ids."""
    if model.family != FAMILY:
        return None
    return KimiCalls([tool["function"]["name"] for tool in tools])


@ggufd.hookimpl
def markup_tokens(model):
    """Kimi's call markers are special tokens: rendered as text so that the calls are seen."""
    if model.family == FAMILY:
        return [SECTION_BEGIN, SECTION_END, CALL_BEGIN, CALL_END, ARGUMENT_BEGIN, THINK, END_THINK]
    return None
