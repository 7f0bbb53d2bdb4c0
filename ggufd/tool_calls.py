"""Finding tool calls in an answer while it streams (part of the plugin API).

A :class:`~ggufd.types.ToolCallStream` turns an answer's content, piece by piece, into content
and :class:`~ggufd.types.ToolCallDelta` pieces. Two are provided:

* :class:`OpenerGate`, the default: content streams up to the first opener of the family's
  syntax (``tool_call_openers``) or, for ggufd's generic syntax, an answer that starts with a
  JSON object or array; from there the text is held and parsed when the answer ends (each call
  is delivered whole, or the held text as content);
* :class:`MarkedCalls`, for syntaxes where each call sits between a begin and an end marker:
  content around the calls streams, and each call's arguments stream as the model writes them,
  as far as its ``parse_block`` can tell (:func:`json_call_block` for ``{"name": ..., "arguments":
  {...}}`` bodies).

Both depend only on the text, never on how it was split: a streamed answer and the same answer
not streamed have the same content and calls.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ggufd.reasoning import partial_suffix
from ggufd.types import ToolCallDelta

#: how a held text is parsed when the answer ends: OpenAI-shaped calls, or None (it is content)
ParseCalls = Callable[[str], "list[dict] | None"]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _split_trailing_space(text: str) -> tuple[str, str]:
    stripped = text.rstrip()
    return stripped, text[len(stripped) :]


class OpenerGate:
    """Content streams up to the first opener; the rest is parsed at the end (see the module).

    Whitespace right before an opener is held, and dropped when a call follows: the content of a
    "text, then call" answer does not end in the blank line that led to the call.
    """

    def __init__(self, openers: Sequence[str], parse: ParseCalls, json_at_start: bool = True) -> None:
        self.openers = tuple(o for o in openers if o)
        self.parse = parse
        self.json_at_start = json_at_start
        self._started = False  # some non-whitespace content was seen
        self._held: str | None = None  # from the opener on, once one was seen
        self._space = ""  # the whitespace before the held text: dropped if a call follows
        self._pending = ""  # whitespace and a partial opener, not yet decided on

    def feed(self, text: str) -> list[str | ToolCallDelta]:
        if self._held is not None:
            self._held += text
            return []
        self._pending += text
        if not self._started:
            starts_json = _json_start(self._pending.lstrip()) if self.json_at_start else False
            if starts_json is None:
                return []  # cannot tell yet
            self._started = True
            if starts_json:
                self._held, self._pending = self._pending, ""
                return []
        at = min((i for i in (self._pending.find(o) for o in self.openers) if i >= 0), default=-1)
        if at >= 0:
            before, self._space = _split_trailing_space(self._pending[:at])
            self._held, self._pending = self._pending[at:], ""
            return [before] if before else []
        keep = partial_suffix(self._pending, self.openers) if self.openers else len(self._pending)
        ready, space = _split_trailing_space(self._pending[:keep])
        self._pending = space + self._pending[keep:]
        return [ready] if ready else []

    def finish(self) -> list[str | ToolCallDelta]:
        if self._held is None:
            pending, self._pending = self._pending, ""
            return [pending] if pending else []
        held, self._held = self._held, None
        calls = self.parse(held)
        if not calls:
            return [self._space + held]
        return [
            ToolCallDelta(
                index, call["function"]["arguments"], call.get("id") or new_call_id(), call["function"]["name"]
            )
            for index, call in enumerate(calls)
        ]


def _json_start(text: str) -> bool | None:
    """Does an answer start with ggufd's generic JSON call (an object, an array, or one in a
    ``json`` code fence)? None: it cannot be told yet."""
    if not text or "```".startswith(text):
        return None
    if text[0] in "{[":
        return True
    if not text.startswith("```"):
        return False
    info = text[3:]
    if "json".startswith(info):
        return None
    if info.startswith("json"):
        return True
    rest = info.lstrip()
    if not rest:
        return None
    return rest[0] in "{["


@dataclass(frozen=True)
class Block:
    """What ``parse_block`` could read of one call: its name (None: not yet known) and the
    arguments' JSON text so far (complete once the block is)."""

    name: str | None
    arguments: str = ""


#: ``parse_block(text, complete)``: the call between the markers so far -> a :class:`Block`, or
#: None when the text is not a call (then, once complete, it is content). While incomplete, the
#: arguments it returns must only grow (each is a prefix of the next).
ParseBlock = Callable[[str, bool], "Block | None"]


class MarkedCalls:
    """Calls between ``begin`` and ``end`` markers, their arguments streamed (see the module).

    A call's first delta (id, name) goes out when ``parse_block`` knows the name, then its
    arguments as they grow. A block that turns out not to be a call (malformed, or a tool that was
    not offered) before its name was delivered is content, markers included. An unclosed block
    at the end is parsed as complete.
    """

    def __init__(self, begin: str, end: str, parse_block: ParseBlock, names: Collection[str]) -> None:
        self.begin, self.end = begin, end
        self.parse_block = parse_block
        self.names = set(names)
        self._pending = ""  # outside a call: whitespace and a partial begin marker
        self._block: str | None = None  # inside a call: its text so far
        self._searched = 0  # the block was searched for the end marker up to here
        self._parse_at = 0  # parse the unfinished block again once it is this long
        self._space = ""  # the whitespace before the current block: dropped if it is a call
        self._index = 0
        self._sent: str | None = None  # the current call's arguments delivered so far (None: no header yet)

    def feed(self, text: str) -> list[str | ToolCallDelta]:
        out: list[str | ToolCallDelta] = []
        if self._block is None:
            self._pending += text
        else:
            self._block += text
        while True:
            if self._block is None:
                at = self._pending.find(self.begin)
                if at < 0:
                    keep = partial_suffix(self._pending, (self.begin,))
                    ready, space = _split_trailing_space(self._pending[:keep])
                    if ready:
                        out.append(ready)
                    self._pending = space + self._pending[keep:]
                    return out
                before, self._space = _split_trailing_space(self._pending[:at])
                if before:
                    out.append(before)
                self._block, self._pending = self._pending[at + len(self.begin) :], ""
                self._searched = self._parse_at = 0
                continue
            at = self._block.find(self.end, self._searched)
            if at < 0:
                self._searched = max(0, len(self._block) - len(self.end) + 1)
                if len(self._block) >= self._parse_at:
                    out.extend(self._progress(self._block[: partial_suffix(self._block, (self.end,))], complete=False))
                return out
            body, rest = self._block[:at], self._block[at + len(self.end) :]
            out.extend(self._close(body, self.end))
            self._pending = rest
            self._block = None

    def finish(self) -> list[str | ToolCallDelta]:
        if self._block is not None:
            body, self._block = self._block, None
            return self._close(body, "")
        pending, self._pending = self._pending, ""
        return [pending] if pending else []

    def _progress(self, body: str, complete: bool) -> list[str | ToolCallDelta]:
        # An unfinished block is parsed again once it grew by 1/32: a short call at every piece, a long
        # call's arguments still in small steps, and the parsing stays O(n log n), not O(n²).
        self._parse_at = len(body) + max(1, len(body) // 32)
        block = self.parse_block(body, complete)
        if block is None or block.name is None:
            return []
        if self._sent is None:
            if block.name not in self.names:
                return []
            self._sent, self._space = "", ""
            out: list[str | ToolCallDelta] = [ToolCallDelta(self._index, "", new_call_id(), block.name)]
        else:
            out = []
        if block.arguments.startswith(self._sent) and len(block.arguments) > len(self._sent):
            out.append(ToolCallDelta(self._index, block.arguments[len(self._sent) :]))
            self._sent = block.arguments
        return out

    def _close(self, body: str, end: str) -> list[str | ToolCallDelta]:
        out = self._progress(body, complete=True)
        if self._sent is None:
            return [self._space + self.begin + body + end]  # not a call: content, as written
        self._sent = None
        self._index += 1
        return out


JSON_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')


#: what matters for where a JSON value ends: a string (``close`` unset: unfinished) or a bracket
JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?P<close>")?|[{}\[\]]')


def _json_value_end(text: str) -> int | None:
    """Where the JSON value at the start of ``text`` ends, by brackets and strings (None: not yet).
    The regex skips string contents in C: a long string argument costs one match."""
    depth = 0
    for token in JSON_TOKEN.finditer(text):
        char = token[0][0]
        if char == '"':
            if token["close"] is None:
                return None  # an unfinished string
            if depth == 0:
                return token.end()
        elif char in "{[":
            depth += 1
        else:
            depth -= 1
            if depth <= 0:
                return token.end()
    return None


def _json_string(body: str) -> str | None:
    try:
        return json.loads(f'"{body}"')
    except ValueError:
        return None


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def json_call_block(text: str, complete: bool) -> Block | None:
    """``parse_block`` for bodies ``{"name": "f", "arguments": {...}}`` (Hermes, Qwen, ...).

    When the name comes first, the arguments stream as the model writes them, verbatim;
    otherwise the whole body is parsed once complete. A complete body must be valid JSON with an
    object as arguments (a string holding JSON is accepted too)."""
    head = JSON_CALL_HEAD.match(text)
    name = _json_string(head[1]) if head is not None else None
    if not complete:
        if name is None:
            return None
        raw = text[head.end() :]  # type: ignore[union-attr]  # name is set: head matched
        if not raw.lstrip().startswith("{"):
            return Block(None)
        end = _json_value_end(raw)
        return Block(name, raw[:end] if end else raw.rstrip())
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        if name is None:
            return None
        raw = text[head.end() :]  # type: ignore[union-attr]
        end = _json_value_end(raw)
        return Block(name, raw[:end]) if end and _is_json_object(raw[:end]) else None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    if head is not None:
        raw = text[head.end() :]
        end = _json_value_end(raw)
        if end is not None and raw[:end].lstrip().startswith("{"):
            return Block(data["name"], raw[:end])  # verbatim: what streamed is the whole
    return Block(data["name"], json.dumps(arguments, ensure_ascii=False))
