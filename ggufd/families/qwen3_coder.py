"""The qwen3-coder family: Qwen's XML tool-call format (Qwen3-Coder 30B-A3B and 480B-A35B,
Qwen3-Coder-Next, and Qwen3.5, which adopted it).

Written exactly like a third-party plugin. The turns are ChatML; a call names its function and
writes each argument as text between tags, one per line::

    <|im_start|>assistant
    {answer}
    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    <parameter=days>
    3
    </parameter>
    </function>
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    {tool result}
    </tool_response>
    <|im_end|>
    <|im_start|>assistant

Two published templates, told apart by the GGUF's template (``<think>`` in it: Qwen3.5):

- Qwen3-Coder (Qwen/Qwen3-Coder-30B-A3B-Instruct ``chat_template.jinja``): no reasoning; the
  offered tools are described in XML (``<function><name>...<parameters>``) after a default
  system prompt; contents are rendered as sent;
- Qwen3.5 (Qwen/Qwen3.5-*): the tools as JSON lines in ``<tools></tools>``, contents trimmed, a
  system message only first, and reasoning as in Qwen3: the generation prompt opens
  ``<think>\\n`` unless ``enable_thinking`` is false (or ``reasoning_effort`` is
  "none"/"minimal"), which gives the empty ``<think>\\n\\n</think>\\n\\n`` block; answers after
  the last user query keep their reasoning, earlier ones lose it.

Arguments are read as Qwen's own parser reads them: the value between the tags (one newline
trimmed on each side), converted by the tool's JSON-schema type for the parameter (a string
stays text; integer, number, boolean, object and array are parsed from it; text that does not
parse stays a string). While an answer streams, a call's name goes out once ``<function=NAME>``
is complete and each argument once its ``</parameter>`` arrives. Qwen3-Coder sometimes leaves out
``<tool_call>``; a ``<function=...>`` block on its own counts as a call too (as llama.cpp and
vLLM accept it).

Detection: a ChatML template with Qwen's XML call instructions (``<function=``,
``<parameter=``) on a Qwen architecture (or with Qwen3-Coder's default system prompt), a
Qwen3.5 architecture (``qwen35``, ``qwen35moe``), or a Qwen3-Coder name on a Qwen3 architecture
without a template. Other models using the XML syntax (Nemotron Nano 3, StepFun) are left alone.
"""

from __future__ import annotations

import json
import math
import re

import ggufd
from ggufd import ChatPrompt, ReasoningSyntax

FAMILY = "qwen3-coder"
CODER_ARCHITECTURES = {"qwen3", "qwen3moe", "qwen3next"}
QWEN35_ARCHITECTURES = {"qwen35", "qwen35moe"}
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK, THINK_END = "<think>", "</think>"
TOOL_CALL_BEGIN, TOOL_CALL_END = "<tool_call>", "</tool_call>"
FUNCTION_OPEN, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER_OPEN, PARAMETER_CLOSE = "<parameter=", "</parameter>"
XML_CALLS = (FUNCTION_OPEN, PARAMETER_OPEN)
OTHER_FORMATS = ("<|start_header_id|>", "[INST]", "<start_of_turn>", "<|im_sep|>", "<｜User｜>")
CODER_NAME = re.compile(r"qwen3(?:\.\d+)?[-_ ]?coder", re.IGNORECASE)
SWITCH = "enable_thinking"
EMPTY_THINK = "<think>\n\n</think>\n\n"
CODER_SYSTEM = "You are Qwen, a helpful AI assistant that can interact with a computer to solve tasks."
CALL_FORMAT = (
    "\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested "
    "within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language BEFORE the function call, "
    "but NOT after\n"
    "- If there is no function call available, answer the question like normal with your current knowledge and do "
    "not tell the user about function calls\n</IMPORTANT>"
)
STRING_TYPES = {"string", "str", "text", "varchar", "char", "enum"}
UNDECLARED = {"type": "string"}  # an argument the tool's schema does not declare stays text (as vLLM keeps it)


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    architecture = metadata.architecture
    if not template:
        if architecture in QWEN35_ARCHITECTURES:
            return FAMILY
        name = f"{metadata.name or ''} {spec.path.name}"
        return FAMILY if architecture in CODER_ARCHITECTURES and CODER_NAME.search(name) else None
    if IM_START not in template or any(marker in template for marker in OTHER_FORMATS):
        return None
    if not all(marker in template for marker in XML_CALLS):
        return None
    if architecture in CODER_ARCHITECTURES | QWEN35_ARCHITECTURES or CODER_SYSTEM in template:
        return FAMILY
    return None


def is_qwen35(model) -> bool:
    """Qwen3.5's template (it reasons) rather than Qwen3-Coder's."""
    template = model.metadata.chat_template or ""
    return THINK in template if template else model.metadata.architecture in QWEN35_ARCHITECTURES


# --------------------------------------------------------------------------- rendering


def _string(value) -> str:
    """Jinja's ``| string``: Python's ``str`` (``True``, ``None``, ``['a', 'b']``)."""
    return value if isinstance(value, str) else str(value)


def _is_container(value) -> bool:
    """Jinja's ``is mapping or (is sequence and is not string)``."""
    return isinstance(value, (dict, list, tuple))


def _value(value) -> str:
    """A value as the templates write it: containers as JSON, the rest with ``| string``."""
    return json.dumps(value, ensure_ascii=False) if _is_container(value) else _string(value)


def _extra_keys(fields, handled) -> str:
    """The templates' ``render_extra_keys``: the keys not rendered otherwise, one tag each."""
    if not isinstance(fields, dict):
        return ""
    return "".join(f"\n<{key}>{_value(value)}</{key}>" for key, value in fields.items() if key not in handled)


def _coder_tool(tool) -> str:
    function = tool.get("function", tool)
    parts = [f"\n<function>\n<name>{_string(function.get('name', ''))}</name>"]
    if "description" in function:
        parts.append(f"\n<description>{_string(function['description']).strip()}</description>")
    parts.append("\n<parameters>")
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if isinstance(properties, dict):
        for name, fields in properties.items():
            parts.append(f"\n<parameter>\n<name>{name}</name>")
            if isinstance(fields, dict):
                if "type" in fields:
                    parts.append(f"\n<type>{_string(fields['type'])}</type>")
                if "description" in fields:
                    parts.append(f"\n<description>{_string(fields['description']).strip()}</description>")
            parts.append(_extra_keys(fields, ("name", "type", "description")) + "\n</parameter>")
    parts.append(_extra_keys(parameters, ("type", "properties")) + "\n</parameters>")
    parts.append(_extra_keys(function, ("type", "name", "description", "parameters")) + "\n</function>")
    return "".join(parts)


def _call(call) -> tuple[str, str]:
    """A call's name and its ``<parameter=...>`` lines, as both templates write them."""
    function = call.get("function") or call
    arguments = ggufd.tool_arguments(function.get("arguments"))
    lines = "".join(
        f"{PARAMETER_OPEN}{key}>\n{_value(value)}\n{PARAMETER_CLOSE}\n"
        for key, value in (arguments.items() if isinstance(arguments, dict) else ())
    )
    return _string(function.get("name", "")), lines


def _tool_result(messages, index, opening: str, result: str) -> str:
    """A tool result; consecutive results share one user turn, which is opened only after another
    message (the templates test ``loop.previtem``)."""
    following = messages[index + 1] if index + 1 < len(messages) else None
    text = opening if index > 0 and messages[index - 1]["role"] != "tool" else ""
    return text + result + (f"{IM_END}\n" if following is None or following["role"] != "tool" else "")


def render_coder(messages, tools) -> str:
    """Qwen3-Coder's template, without the generation prompt."""
    parts = []
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = list(messages[1:] if system is not None else messages)
    if system is not None:
        parts.append(f"{IM_START}system\n{system}")
    elif tools:
        parts.append(f"{IM_START}system\n{CODER_SYSTEM}")
    if tools:
        parts.append("\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>")
        parts.extend(_coder_tool(tool) for tool in tools)
        parts.append("\n</tools>" + CALL_FORMAT)
    if system is not None or tools:
        parts.append(f"{IM_END}\n")
    for index, message in enumerate(turns):
        role, content = message["role"], message["content"]
        if role == "assistant" and message.get("tool_calls"):
            parts.append(f"{IM_START}assistant" + (f"\n{content.strip()}\n" if content.strip() else ""))
            for call in message["tool_calls"]:
                name, lines = _call(call)
                parts.append(f"\n{TOOL_CALL_BEGIN}\n{FUNCTION_OPEN}{name}>\n{lines}{FUNCTION_CLOSE}\n{TOOL_CALL_END}")
            parts.append(f"{IM_END}\n")
        elif role == "tool":
            parts.append(
                _tool_result(turns, index, f"{IM_START}user\n", f"<tool_response>\n{content}\n</tool_response>\n")
            )
        else:
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    return "".join(parts)


def _is_tool_response(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


def render_qwen35(messages, tools) -> str:
    """Qwen3.5's template, without the generation prompt."""
    if not messages:
        raise ggufd.InvalidRequest("A Qwen3.5 chat needs at least one message.", param="messages")
    parts = []
    system = messages[0]["content"].strip() if messages[0]["role"] == "system" else None
    if tools:
        parts.append(f"{IM_START}system\n# Tools\n\nYou have access to the following functions:\n\n<tools>")
        parts.extend("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
        parts.append("\n</tools>" + CALL_FORMAT + (f"\n\n{system}" if system else "") + f"{IM_END}\n")
    elif system is not None:
        parts.append(f"{IM_START}system\n{system}{IM_END}\n")
    last_query = next(
        (
            index
            for index in range(len(messages) - 1, -1, -1)
            if messages[index]["role"] == "user" and not _is_tool_response(messages[index]["content"].strip())
        ),
        None,
    )
    if last_query is None:
        raise ggufd.InvalidRequest("A Qwen3.5 chat needs a user message.", param="messages")
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"].strip()
        if role == "system":
            if index:
                raise ggufd.InvalidRequest(
                    "Qwen3.5's format takes a system message only at the beginning.", param=f"messages.{index}"
                )
        elif role == "user":
            parts.append(f"{IM_START}user\n{content}{IM_END}\n")
        elif role == "assistant":
            reasoning = message.get("reasoning_content")
            if not isinstance(reasoning, str):
                reasoning = ""
                if THINK_END in content:
                    reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK)[-1].lstrip("\n")
                    content = content.split(THINK_END)[-1].lstrip("\n")
            if index > last_query:
                parts.append(f"{IM_START}assistant\n{THINK}\n{reasoning.strip()}\n{THINK_END}\n\n{content}")
            else:
                parts.append(f"{IM_START}assistant\n{content}")
            for number, call in enumerate(message.get("tool_calls") or ()):
                name, lines = _call(call)
                lead = "\n" if number else ("\n\n" if content.strip() else "")
                parts.append(
                    f"{lead}{TOOL_CALL_BEGIN}\n{FUNCTION_OPEN}{name}>\n{lines}{FUNCTION_CLOSE}\n{TOOL_CALL_END}"
                )
            parts.append(f"{IM_END}\n")
        elif role == "tool":
            parts.append(
                _tool_result(messages, index, f"{IM_START}user", f"\n<tool_response>\n{content}\n</tool_response>")
            )
        else:
            raise ggufd.InvalidRequest(f"Qwen3.5's format has no role '{role}'.", param=f"messages.{index}.role")
    return "".join(parts)


@ggufd.hookimpl
def format_chat(model, messages, tools, template_kwargs):
    if model.family != FAMILY:
        return None
    tools = list(tools or ())
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", False))
    if not is_qwen35(model):
        text = render_coder(messages, tools) + f"{IM_START}assistant\n"
        return ChatPrompt(text=text, stop=(IM_END,), add_bos=add_bos, tools_rendered=bool(tools))
    template = model.metadata.chat_template or ""
    switch = not template or SWITCH in template
    on, honoured = ggufd.thinking_switch(template_kwargs or {}) if switch else (True, frozenset())
    generation = f"{IM_START}assistant\n" + (f"{THINK}\n" if on else EMPTY_THINK)
    return ChatPrompt(
        text=render_qwen35(messages, tools) + generation,
        stop=(IM_END,),
        add_bos=add_bos,
        tools_rendered=bool(tools),
        honoured=honoured,
        reasoning=ReasoningSyntax(THINK, THINK_END, opened=True) if on else None,
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


# --------------------------------------------------------------------------- reading calls


def _schema_types(schema) -> list[str]:
    """The JSON-schema type names a parameter allows, lower-cased, in order."""
    if not isinstance(schema, dict):
        return []
    kinds = schema.get("type")
    if isinstance(kinds, str):
        return [kinds.strip().lower()]
    if isinstance(kinds, list):
        return [str(kind).strip().lower() for kind in kinds]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return [kind for option in schema[key] for kind in _schema_types(option)]
    return ["string"] if "enum" in schema else []


def _json(text: str):
    """JSON text's value; ValueError for anything else (NaN and Infinity included)."""

    def refuse(constant):
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise ValueError("too deep") from None


def _guess(raw: str):
    """A value with no schema to go by: JSON when it is a JSON number, boolean, null, object or
    array; else the text."""
    try:
        value = _json(raw.strip())
    except ValueError:
        return raw
    return raw if isinstance(value, str) else value


def convert(raw: str, schema):
    """An argument's text as the parameter's schema types it (``schema`` None: not declared, or
    no schema known; then see :func:`_guess`)."""
    if schema is None:
        return _guess(raw)
    kinds = _schema_types(schema)
    text = raw.strip()
    if "null" in kinds and text.lower() in ("null", "none"):
        return None
    kind = next((k for k in kinds if k != "null"), None)
    if kind is None:
        return _guess(raw)
    if kind in STRING_TYPES:
        return raw
    if text.lower() in ("null", "none"):
        return None
    try:
        if kind.startswith(("int", "uint", "long", "short", "unsigned")):
            return int(text)
        if kind.startswith(("num", "float", "double", "decimal")):
            try:
                return int(text)
            except ValueError:
                number = float(text)
                return number if math.isfinite(number) else raw
        if kind.startswith("bool"):
            return {"true": True, "false": False}.get(text.lower(), raw)
        if kind.startswith(("object", "dict", "array", "list", "arr")):
            value = _json(text)
            return value if isinstance(value, (dict, list)) else raw
    except ValueError:
        return raw
    return _guess(raw)


def _trim_newline(value: str) -> str:
    """The text between a parameter's tags, without the newline after the opening tag and the
    one before the closing tag."""
    value = value[1:] if value.startswith("\n") else value
    return value[:-1] if value.endswith("\n") else value


def read_call(body: str, complete: bool):
    """(name, [(key, text)]) of a call's body (what follows ``<tool_call>``) so far: name None
    while ``<function=NAME>`` is incomplete; the arguments whose ``</parameter>`` arrived (once
    complete, an unclosed last one runs to ``</function>`` or the end). None: not a call."""
    text = body.lstrip()
    if not text.startswith(FUNCTION_OPEN):
        return (None, []) if not complete and FUNCTION_OPEN.startswith(text) else None
    end = text.find(">", len(FUNCTION_OPEN))
    if end < 0:
        return None if complete else (None, [])
    name = text[len(FUNCTION_OPEN) : end].strip()
    if not name or "\n" in name or "<" in name:
        return None
    rest, at, arguments = text[end + 1 :], 0, []
    while True:
        start = rest.find(PARAMETER_OPEN, at)
        stop = rest.find(FUNCTION_CLOSE, at)
        if start < 0 or 0 <= stop < start:
            break
        key_end = rest.find(">", start + len(PARAMETER_OPEN))
        if key_end < 0:
            break
        key = rest[start + len(PARAMETER_OPEN) : key_end].strip()
        close = rest.find(PARAMETER_CLOSE, key_end + 1)
        if close < 0:
            if complete and key:
                stop = rest.find(FUNCTION_CLOSE, key_end + 1)
                arguments.append((key, _trim_newline(rest[key_end + 1 : stop if stop >= 0 else len(rest)])))
            break
        if key:
            arguments.append((key, _trim_newline(rest[key_end + 1 : close])))
        at = close + len(PARAMETER_CLOSE)
    return name, arguments


def _arguments_json(arguments, schemas, complete: bool) -> str:
    """The arguments as JSON text, one fragment per argument: ``{"k": v`` then ``, "k2": v2``,
    closed by ``}`` once the call is complete (``{}`` for none). ``schemas``: the tool's parameter
    schemas by name, None when unknown (then values are guessed, see :func:`convert`)."""
    fragments = [
        json.dumps(key, ensure_ascii=False)
        + ": "
        + json.dumps(convert(raw, None if schemas is None else schemas.get(key, UNDECLARED)), ensure_ascii=False)
        for key, raw in arguments
    ]
    if not fragments:
        return "{}" if complete else ""
    return "{" + ", ".join(fragments) + ("}" if complete else "")


def call_block(tools):
    """``parse_block`` for :class:`ggufd.MarkedCalls`, typing arguments by the offered tools' schemas."""
    schemas = {}
    for tool in tools:
        function = tool.get("function") or {}
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        schemas[function.get("name")] = properties if isinstance(properties, dict) else {}

    def parse_block(text: str, complete: bool):
        call = read_call(text, complete)
        if call is None:
            return None
        name, arguments = call
        if name is None:
            return ggufd.Block(None)
        return ggufd.Block(name, _arguments_json(arguments, schemas.get(name, {}), complete))

    return parse_block


def _partial_at(text: str, markers) -> int:
    """Where the longest suffix of ``text`` that could grow into one of ``markers`` starts."""
    for start in range(max(0, len(text) - max(map(len, markers)) + 1), len(text)):
        if any(marker.startswith(text[start:]) for marker in markers):
            return start
    return len(text)


class BareFunctionCalls:
    """``<tool_call>`` blocks through :class:`ggufd.MarkedCalls`; a ``<function=...>`` block the
    model wrote without ``<tool_call>`` (Qwen3-Coder does, now and then) is handed to it as if
    wrapped. Such a block that is no call comes back as the model wrote it."""

    def __init__(self, calls) -> None:
        self.calls = calls
        self._state = "out"  # "in": inside <tool_call>; "bare": inside a <function=> without one
        self._pending = ""

    def feed(self, text: str) -> list:
        self._pending += text
        out: list = []
        while self._pending:
            markers = {
                "out": (TOOL_CALL_BEGIN, FUNCTION_OPEN),
                "in": (TOOL_CALL_END,),
                "bare": (FUNCTION_CLOSE, TOOL_CALL_END),
            }[self._state]
            found = [(at, marker) for marker in markers if (at := self._pending.find(marker)) >= 0]
            if not found:
                keep = _partial_at(self._pending, markers)
                if keep:
                    out += self.calls.feed(self._pending[:keep])
                self._pending = self._pending[keep:]
                return out
            at, marker = min(found)
            through, self._pending = self._pending[: at + len(marker)], self._pending[at + len(marker) :]
            if self._state == "out" and marker == FUNCTION_OPEN:
                out += self.calls.feed(through[:at])
                out += self.calls.feed(TOOL_CALL_BEGIN)
                out += self.calls.feed(marker)
                self._state = "bare"
            elif self._state == "bare" and marker == FUNCTION_CLOSE:
                out += self.calls.feed(through)
                out += self._unwrap(self.calls.feed(TOOL_CALL_END), injected_end=True)
                self._state = "out"
            elif self._state == "bare":
                out += self._unwrap(self.calls.feed(through), injected_end=False)
                self._state = "out"
            else:
                out += self.calls.feed(through)
                self._state = "in" if marker == TOOL_CALL_BEGIN else "out"
        return out

    def finish(self) -> list:
        pending, self._pending = self._pending, ""
        out = self.calls.feed(pending) if pending else []
        rest = self.calls.finish()
        return out + (self._unwrap(rest, injected_end=False) if self._state == "bare" else rest)

    @staticmethod
    def _unwrap(pieces: list, injected_end: bool) -> list:
        """A bare block that was no call comes back as content with the markers added for it."""
        result = []
        for piece in pieces:
            if isinstance(piece, str):
                rest = piece.lstrip()  # MarkedCalls gives back the whitespace it held before the block
                lead = piece[: len(piece) - len(rest)]
                if rest.startswith(TOOL_CALL_BEGIN + FUNCTION_OPEN):
                    rest = rest[len(TOOL_CALL_BEGIN) :]
                    if injected_end and rest.endswith(TOOL_CALL_END):
                        rest = rest[: -len(TOOL_CALL_END)]
                    piece = lead + rest
            result.append(piece)
        return result


def call_bodies(text: str, bare: bool) -> list[str]:
    """The bodies of the calls in a whole answer, as the streaming parser sees them: after each
    ``<tool_call>`` up to its ``</tool_call>`` (or the end); with ``bare``, a ``<function=...>``
    outside one up to and with its ``</function>`` (or up to a ``</tool_call>``, or the end)."""
    bodies: list[str] = []
    at = 0
    while True:
        begin = text.find(TOOL_CALL_BEGIN, at)
        function = text.find(FUNCTION_OPEN, at) if bare else -1
        if begin < 0 and function < 0:
            return bodies
        if begin >= 0 and (function < 0 or begin < function):
            start = begin + len(TOOL_CALL_BEGIN)
            end = text.find(TOOL_CALL_END, start)
            bodies.append(text[start : end if end >= 0 else len(text)])
            at = end + len(TOOL_CALL_END) if end >= 0 else len(text)
            continue
        close, end = text.find(FUNCTION_CLOSE, function), text.find(TOOL_CALL_END, function)
        if close >= 0 and (end < 0 or close < end):
            body_end = at = close + len(FUNCTION_CLOSE)
        elif end >= 0:
            body_end, at = end, end + len(TOOL_CALL_END)
        else:
            body_end = at = len(text)
        bodies.append(text[function:body_end])


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY:
        return None
    calls: list[dict] = []
    for body in call_bodies(text, bare=not is_qwen35(model)):
        call = read_call(body, complete=True)
        if call is not None and call[0]:
            calls.append(ggufd.tool_call(call[0], _arguments_json(call[1], None, True), f"call_{len(calls)}"))
    return calls or None


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family != FAMILY:
        return None
    return [TOOL_CALL_BEGIN] if is_qwen35(model) else [TOOL_CALL_BEGIN, FUNCTION_OPEN]


@ggufd.hookimpl
def tool_call_stream(model, tools):
    """Each call's arguments stream as their ``</parameter>`` arrives (see the module)."""
    if model.family != FAMILY:
        return None
    names = [tool["function"]["name"] for tool in tools]
    calls = ggufd.MarkedCalls(TOOL_CALL_BEGIN, TOOL_CALL_END, call_block(tools), names)
    return calls if is_qwen35(model) else BareFunctionCalls(calls)


@ggufd.hookimpl
def markup_tokens(model):
    """Qwen's call and reasoning markers (added tokens; special in some conversions): rendered as text."""
    if model.family == FAMILY:
        return [TOOL_CALL_BEGIN, TOOL_CALL_END, "<think>", "</think>"]
    return None
