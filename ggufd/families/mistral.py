"""The mistral family: Mistral and Mixtral Instruct v0.1-v0.3, Mistral Nemo, and Mistral's 2025 models
(Mistral Small 3.1/3.2, Devstral, Magistral, Ministral 3, Devstral 2, Mistral Large 3).

Written exactly like a third-party plugin. The format follows Mistral's reference
tokenizer (mistral-common) and the templates Mistral publishes with its models; the
spaces differ per tokenizer version, so the style is picked by a fingerprint of the
GGUF's template (or its ``tokenizer.ggml.pre``):

    v3 (default; v2/v3 SentencePiece, Mistral-7B-Instruct-v0.3, Mixtral-8x22B):
    <s>[INST] {user}[/INST] {answer}</s>[TOOL_CALLS] [{"name": "f", "arguments": {...}, "id": "..."}]</s>[TOOL_RESULTS] {"content": ..., "call_id": "..."}[/TOOL_RESULTS][AVAILABLE_TOOLS] [{tools}][/AVAILABLE_TOOLS][INST] {system}

    {user}[/INST]

    tekken (Mistral Nemo; template with "[INST]" directly followed by the message):
    <s>[INST]{user}[/INST]{answer}</s>[TOOL_CALLS][{...}]</s>[TOOL_RESULTS]{...}[/TOOL_RESULTS][AVAILABLE_TOOLS][{tools}][/AVAILABLE_TOOLS][INST]{user}[/INST]

    v1 (Mistral-7B-Instruct-v0.1, " [/INST]" in the template; llama.cpp's "mistral-v1"):
    <s> [INST] {system}

    {user} [/INST] {answer}</s> [INST] {user} [/INST]

The system prompt (all system messages, joined by a blank line) goes before the last
user message (before the first one in v1), as Mistral's templates do. v3 trims answers.
A tool result's content is JSON when it parses as JSON, else a JSON string, and tool
calls keep the ids the client sent (Mistral's templates insist on 9-character ids; this
plugin does not); text beside an answer's tool calls is dropped, as Mistral's templates
do. The offered tools go before the last user message in the templates' own hand-written
JSON (string values unescaped, ``return`` left out). v1 has no tool-call syntax: tool
messages are refused and tools are left to ggufd's generic instruction.

v7 and later (``[SYSTEM_PROMPT]`` in the template: Mistral Small 3.1/3.2, Devstral, Magistral,
Ministral 3, Devstral 2, Mistral Large 3) is one more style, whose details the template's markers
decide (:func:`profile`)::

    <s>[SYSTEM_PROMPT]{system or the template's default}[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{tools as JSON}][/AVAILABLE_TOOLS][INST]{user}[/INST]{answer}</s>[INST]{user}[/INST]{text}[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}</s>[TOOL_RESULTS]{result}[/TOOL_RESULTS][TOOL_RESULTS]{result}[/TOOL_RESULTS]

- the system prompt is the first message's when it is a system message, else the default one the
  template sets (``default_system_message``, with today's date where it has one); later system
  messages stay where they are, in their own ``[SYSTEM_PROMPT]`` block;
- tool calls: ``[TOOL_CALLS]name[ARGS]{arguments}`` per call (v13: Magistral 2509, Ministral 3,
  Devstral 2, unsloth's Devstral 2507), ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{arguments}`` (v11:
  Mistral Small 3.2), or v3's JSON list (v7: Mistral Small 3.1, as llama.cpp keeps its template);
  text beside the calls is kept by the ``[ARGS]`` templates and dropped by the others, as they do;
- tool results: ``[TOOL_RESULTS]{content}[/TOOL_RESULTS]``, ``[TOOL_RESULTS]{id}[TOOL_CONTENT]{content}[/TOOL_RESULTS]``
  (v11) or ``[TOOL_RESULTS] {"content": {content}, "call_id": "{id}"}[/TOOL_RESULTS]`` (the v7 template),
  the content as sent;
- the offered tools: ``[AVAILABLE_TOOLS]`` with the tools as JSON right after the system prompt (v13),
  or before the last user message (v7, v11; Small 3.1's template in the hand-written JSON of v3, its
  tool instruction put before the system prompt);
- ids, where the format has them, are the last 9 characters of the client's (Mistral's templates
  want 9; shorter ones are padded with zeros, a missing one is numbered);
- reasoning: Magistral and the Ministral 3 reasoning models think in ``[THINK]``...``[/THINK]`` before
  they answer (``<think>`` where the template teaches that instead, Magistral 2506); the answer filter
  splits it off as ``reasoning_content``, and a spent reasoning budget closes it with ``[/THINK]``.

Templates with ``[MODEL_SETTINGS]`` (mistral-common's v15, reasoning effort in the prompt) are not
reproduced: they are left to ggufd's rendering of the GGUF's own template.

Generated answers: ``[TOOL_CALLS]`` is where calls start (the opener). v1-v3 and tekken models answer
with one JSON list right at the start; v7 and later models write text, then one ``[TOOL_CALLS]name[ARGS]{json}``
per call (``[CALL_ID]id`` may sit before ``[ARGS]``), or a JSON list (Small 3.1); both are parsed, and
:class:`MistralCalls` streams each call's arguments while they are generated: a call ends where its
JSON value ends or at the next ``[TOOL_CALLS]``. New calls get 9-character ids, which Mistral's
templates accept when the client sends them back.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import string
from dataclasses import dataclass
from functools import lru_cache

import ggufd
from ggufd import ChatPrompt, InvalidRequest, ReasoningSyntax, ToolCallDelta

FAMILY = "mistral"
MISTRAL_ARCHITECTURES = {"llama", "mistral", "mistral3"}
#: v7+ templates also come with Mistral 4's and Mistral Large 3's (DeepSeek V3's) architectures
V7_ARCHITECTURES = MISTRAL_ARCHITECTURES | {"mistral4", "deepseek2"}
NAME_PATTERN = re.compile(r"mistral|mixtral", re.IGNORECASE)
INST, END_INST, EOS = "[INST]", "[/INST]", "</s>"
TOOL_CALLS, TOOL_RESULTS, END_TOOL_RESULTS = "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"
ARGS, CALL_ID, TOOL_CONTENT = "[ARGS]", "[CALL_ID]", "[TOOL_CONTENT]"
SYSTEM_PROMPT, END_SYSTEM_PROMPT = "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"
AVAILABLE_TOOLS, END_AVAILABLE_TOOLS = "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"
THINK = ReasoningSyntax("[THINK]", "[/THINK]", close="[/THINK]")
THINK_TAGS = ReasoningSyntax("<think>", "</think>")
# [INST] templates of another format (Llama 2), and v7+ ones this plugin does not reproduce
NOT_OURS = ("<<SYS>>",)
UNRENDERED = ("[MODEL_SETTINGS]",)
TEKKEN_TEMPLATE = re.compile(r"""\[INST\]["']""")
ALPHANUMERIC = string.ascii_letters + string.digits


def today() -> str:
    """The date some v7 templates put in their default system prompt (a function, so tests can fix it)."""
    return datetime.date.today().isoformat()


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template
    if template and SYSTEM_PROMPT in template:
        if metadata.architecture not in V7_ARCHITECTURES or INST not in template:
            return None
        return None if any(marker in template for marker in UNRENDERED) else FAMILY
    if metadata.architecture not in MISTRAL_ARCHITECTURES:
        return None
    if template:
        if INST not in template or any(marker in template for marker in NOT_OURS):
            return None
        return FAMILY
    if NAME_PATTERN.search(metadata.name or "") or NAME_PATTERN.search(spec.path.name):
        return FAMILY
    return None


def style(metadata) -> str:
    """``"v1"``, ``"v3"``, ``"tekken"`` or ``"v7"`` (``[SYSTEM_PROMPT]`` and later): this model's format."""
    template = metadata.chat_template or ""
    if SYSTEM_PROMPT in template:
        return "v7"
    if " [/INST]" in template:
        return "v1"
    if TEKKEN_TEMPLATE.search(template):
        return "tekken"
    if "[INST] " not in template and metadata.get("tokenizer.ggml.pre") == "tekken":
        return "tekken"
    return "v3"


# --------------------------------------------------------------------------- v7 and later: the template decides


@dataclass(frozen=True)
class Profile:
    """What a v7+ template does, read from its markers (see the module docstring)."""

    calls: str  # "args": name[ARGS]json; "call_id": name[CALL_ID]id[ARGS]json; "list": [{...}, ...]
    results: str  # "plain": content; "call_id": id[TOOL_CONTENT]content; "json": {"content": ..., "call_id": ...}
    tools: str | None  # where [AVAILABLE_TOOLS] goes: "start" or "last_user"; None: the template has none
    space: str  # " " after [TOOL_CALLS], [TOOL_RESULTS] and [AVAILABLE_TOOLS] in the v3-style JSON forms
    hand_written_tools: bool  # the tools in v3's hand-written JSON rather than as JSON
    keep_content: bool  # text beside tool calls is rendered
    default_system: str | None  # a format string ({today})
    tool_instruction: str | None  # put before the system prompt when tools are offered
    instruction_separator: str  # between the two
    reasoning: ReasoningSyntax | None


JINJA_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
TEMPLATE_VARIABLE = r"set\s+{name}\s*=\s*(?P<value>(?:{string}|today)(?:\s*\+\s*(?:{string}|today))*)\s*-?%\}}"


def _jinja_string(literal: str) -> str:
    """A Jinja string literal's value, unescaped as Jinja's lexer does."""
    body = literal[1:-1].replace("\r\n", "\n").replace("\r", "\n")
    return body.encode("ascii", "backslashreplace").decode("unicode-escape")


def _template_string(template: str, name: str) -> str | None:
    """The value a template gives ``name`` with ``{%- set name = '...' + today + '...' %}``, as a
    format string (``{today}``: the date); None when it sets none or sets it to ''."""
    found = re.search(TEMPLATE_VARIABLE.format(name=name, string=JINJA_STRING), template, re.DOTALL)
    if found is None:
        return None
    parts = []
    for token in re.findall(rf"{JINJA_STRING}|today", found["value"], re.DOTALL):
        if token == "today":
            parts.append("{today}")
        else:
            parts.append(_jinja_string(token).replace("{", "{{").replace("}", "}}"))
    return "".join(parts) or None


def _separator(template: str) -> str:
    """What the template puts between its tool instruction and the system prompt (Small 3.1's
    ``parallel_tool_prompt + "..." + system_message``)."""
    found = re.search(rf"parallel_tool_prompt\s*\+\s*({JINJA_STRING})\s*\+\s*system_message", template, re.DOTALL)
    return _jinja_string(found[1]) if found else "\n\n"


@lru_cache(maxsize=64)
def profile(template: str) -> Profile:
    """How a v7+ template renders a chat, from its markers. A template without tool calls gets the
    latest syntax, ``[ARGS]``, for the calls a client sends in the history."""
    if CALL_ID in template:
        calls = "call_id"
    elif ARGS in template or TOOL_CALLS not in template:
        calls = "args"
    else:
        calls = "list"
    if TOOL_CONTENT in template:
        results = "call_id"
    elif '"call_id"' in template:
        results = "json"
    else:
        results = "plain"
    if AVAILABLE_TOOLS not in template:
        tools = None
    elif "user_messages[-1]" in template or "max_idx_user" in template:
        tools = "last_user"
    else:
        tools = "start"
    if "[THINK]" in template:
        reasoning: ReasoningSyntax | None = THINK
    elif "<think>" in template:
        reasoning = THINK_TAGS
    else:
        reasoning = None
    return Profile(
        calls=calls,
        results=results,
        tools=tools,
        space=" " if re.search(r"\[(?:TOOL_CALLS|AVAILABLE_TOOLS)\] \[|\[TOOL_RESULTS\] \{", template) else "",
        hand_written_tools="""'{"type": "function", "function": {'""" in template,
        keep_content=calls == "args",
        default_system=_template_string(template, "default_system_message"),
        tool_instruction=_template_string(template, "parallel_tool_prompt"),
        instruction_separator=_separator(template),
        reasoning=reasoning,
    )


def model_profile(model) -> Profile | None:
    template = model.metadata.chat_template or ""
    return profile(template) if SYSTEM_PROMPT in template else None


def _call_id(raw, number: int) -> str:
    """A 9-character id, as Mistral's formats want: the last 9 of the client's, padded, or numbered."""
    text = str(raw) if raw else f"{number:09d}"
    return text[-9:] if len(text) >= 9 else text.rjust(9, "0")


def _arguments_text(function, as_json: bool) -> str:
    arguments = ggufd.tool_arguments(function.get("arguments"))
    if arguments == "":
        return "{}"
    if isinstance(arguments, str) and not as_json:
        return arguments  # text that is not JSON, as the template writes a string
    return json.dumps(arguments, ensure_ascii=False)


def _hand_written_tools(opening: str, tools) -> str:
    """The offered tools as v3's templates write them: string values unescaped, ``return`` left out."""
    entries = []
    for tool in tools:
        function = tool.get("function") or {}
        fields = []
        for key, value in function.items():
            if key == "return":
                continue
            if isinstance(value, str):
                fields.append(f'"{key}": "{value}"')
            else:
                fields.append(f'"{key}": ' + json.dumps(value, ensure_ascii=False))
        entries.append('{"type": "function", "function": {' + ", ".join(fields) + "}}")
    return f"{opening}[" + ", ".join(entries) + f"]{END_AVAILABLE_TOOLS}"


def _tools_block(found: Profile, tools) -> str:
    if found.hand_written_tools:
        return _hand_written_tools(AVAILABLE_TOOLS + found.space, tools)
    return AVAILABLE_TOOLS + json.dumps(list(tools), ensure_ascii=False) + END_AVAILABLE_TOOLS


def _v7_calls(found: Profile, message, ids: list[str], numbered: int) -> str:
    """The calls of one answer; ``ids`` gets the id of each (for the results that follow)."""
    parts = []
    for index, call in enumerate(message["tool_calls"]):
        function = call.get("function") or call
        name = str(function.get("name", ""))
        call_id = _call_id(call.get("id"), numbered + index)
        ids.append(call_id)
        if found.calls == "list":
            entry = {"name": name, "arguments": ggufd.tool_arguments(function.get("arguments")), "id": call_id}
            parts.append(json.dumps(entry, ensure_ascii=False))
        elif found.calls == "call_id":
            parts.append(f"{TOOL_CALLS}{name}{CALL_ID}{call_id}{ARGS}{_arguments_text(function, as_json=True)}")
        else:
            parts.append(f"{TOOL_CALLS}{name}{ARGS}{_arguments_text(function, as_json=False)}")
    if found.calls == "list":
        return f"{TOOL_CALLS}{found.space}[" + ", ".join(parts) + "]"
    return "".join(parts)


def _v7_result(found: Profile, message, call_id: str) -> str:
    content = message["content"]
    if found.results == "call_id":
        return f"{TOOL_RESULTS}{call_id}{TOOL_CONTENT}{content}{END_TOOL_RESULTS}"
    if found.results == "json":
        return f'{TOOL_RESULTS}{found.space}{{"content": {content}, "call_id": "{call_id}"}}{END_TOOL_RESULTS}'
    return f"{TOOL_RESULTS}{content}{END_TOOL_RESULTS}"


def _format_v7(model, found: Profile, messages, tools) -> ChatPrompt:
    turns = list(messages)
    users = [index for index, m in enumerate(turns) if m["role"] == "user"]
    if not users:
        raise InvalidRequest("A mistral chat needs at least one user message.", param="messages")
    system = None
    if turns[0]["role"] == "system":
        system, turns, users = turns[0]["content"], turns[1:], [index - 1 for index in users]
    elif found.default_system is not None:
        system = found.default_system.format(today=today())
    offered = bool(tools) and found.tools is not None
    if offered and found.tool_instruction is not None:
        instruction = found.tool_instruction.format(today=today())
        system = instruction if system is None else instruction + found.instruction_separator + system
    parts = [f"{SYSTEM_PROMPT}{system}{END_SYSTEM_PROMPT}"] if system is not None else []
    if offered and found.tools == "start":
        parts.append(_tools_block(found, tools))
    waiting: list[str] = []  # the ids of the calls whose results have not come yet
    numbered = 0
    for index, message in enumerate(turns):
        role, content = message["role"], message["content"]
        if role == "system":
            parts.append(f"{SYSTEM_PROMPT}{content}{END_SYSTEM_PROMPT}")
        elif role == "user":
            if offered and found.tools == "last_user" and index == users[-1]:
                parts.append(_tools_block(found, tools))
            parts.append(f"{INST}{content}{END_INST}")
        elif role == "tool":
            given = message.get("tool_call_id")
            if given:
                call_id = _call_id(given, 0)
                if call_id in waiting:
                    waiting.remove(call_id)
            else:
                call_id = waiting.pop(0) if waiting else _call_id(None, numbered)
            parts.append(_v7_result(found, message, call_id))
        elif message.get("tool_calls"):
            waiting = []
            text = content if found.keep_content else ""
            parts.append(text + _v7_calls(found, message, waiting, numbered) + EOS)
            numbered += len(message["tool_calls"])
        else:
            parts.append(content + EOS)
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(
        text="".join(parts),
        stop=(EOS,),
        add_bos=add_bos,
        tools_rendered=offered,
        reasoning=found.reasoning,
    )


# --------------------------------------------------------------------------- v1, v3 and tekken


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
def format_chat(model, messages, tools):
    if model.family != FAMILY:
        return None
    variant = style(model.metadata)
    if variant == "v7":
        return _format_v7(model, profile(model.metadata.chat_template), messages, tools)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    users = [index for index, m in enumerate(turns) if m["role"] == "user"]
    if not users:
        raise InvalidRequest("A mistral chat needs at least one user message.", param="messages")
    system_at = users[0] if variant == "v1" else users[-1]
    space = "" if variant == "tekken" else " "
    offered = bool(tools) and variant != "v1"
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
                if offered and index == users[-1]:
                    parts.append(_hand_written_tools(AVAILABLE_TOOLS + space, tools))
                parts.append(f"{INST}{space}{content}{END_INST}")
        elif message.get("tool_calls"):
            parts.append(f"{TOOL_CALLS}{space}{_tool_calls(message)}{EOS}")
        elif role == "tool":
            parts.append(f"{TOOL_RESULTS}{space}{_tool_result(message)}{END_TOOL_RESULTS}")
        else:
            parts.append(f"{space}{content.strip() if variant == 'v3' else content}{EOS}")
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(text="".join(parts), stop=(EOS,), add_bos=add_bos, tools_rendered=offered)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return [EOS, INST]
    return None


@ggufd.hookimpl
def answer_filter(model, prompt):
    """``[THINK]`` reasoning (or the syntax the prompt names) becomes ``reasoning_content``: for every
    Mistral model, as the marker is one of Mistral's control tokens and means the same for all."""
    if model.family != FAMILY:
        return None
    return ggufd.ReasoningFilter(prompt.reasoning or THINK)


# --------------------------------------------------------------------------- tool calls in answers


def new_call_id() -> str:
    """A fresh call id of 9 letters and digits, as Mistral's templates want them back."""
    return "".join(random.choices(ALPHANUMERIC, k=9))


def _list_calls(text: str, fresh_id) -> list[dict] | None:
    """v3's ``[TOOL_CALLS] [{"name": ..., "arguments": {...}, "id"?: ...}, ...]`` (``text``: what follows
    the marker); ``fresh_id(index)`` names a call that came without an id."""
    try:
        entries, _ = json.JSONDecoder().raw_decode(text.lstrip())
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
                entry["name"], arguments, call_id if isinstance(call_id, str) and call_id else fresh_id(index)
            )
        )
    return calls


def _numbered(index: int) -> str:
    return f"call_{index}"


def _fresh(index: int) -> str:
    return new_call_id()


def _name_and_id(head: str) -> tuple[str, str | None] | None:
    """The name (and ``[CALL_ID]`` id) before a call's arguments; None if it is not one."""
    name, _, call_id = head.partition(CALL_ID)
    name = name.strip()
    if not name or any(c.isspace() or c in "[]{}" for c in name):
        return None
    return name, (call_id.strip() or None)


def _args_calls(text: str) -> list[dict] | None:
    """``[TOOL_CALLS]name[ARGS]{...}[TOOL_CALLS]...`` (``text`` starts at the first marker)."""
    calls = []
    for block in text.split(TOOL_CALLS)[1:]:
        head, found, arguments = block.partition(ARGS)
        if not found:  # the [ARGS] token may not have been rendered: the arguments start at "{"
            at = block.find("{")
            if at < 0:
                return None
            head, arguments = block[:at], block[at:]
        named = _name_and_id(head)
        if named is None:
            return None
        arguments = arguments.lstrip()
        try:
            value, end = json.JSONDecoder().raw_decode(arguments)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict):
            return None
        calls.append(ggufd.tool_call(named[0], arguments[:end], named[1] or new_call_id()))
    return calls or None


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY:
        return None
    found = model_profile(model)
    if found is None:  # v1-v3, tekken: one JSON list, right at the start
        body = text.lstrip()
        if not body.startswith(TOOL_CALLS):
            return None
        return _list_calls(body[len(TOOL_CALLS) :], _numbered)
    answer = text.rpartition((found.reasoning or THINK).end)[2]  # calls in the reasoning are not calls
    at = answer.find(TOOL_CALLS)
    if at < 0:
        return None
    body = answer[at:]
    if body[len(TOOL_CALLS) :].lstrip().startswith("["):
        return _list_calls(body[len(TOOL_CALLS) :], _fresh)
    return _args_calls(body)


@ggufd.hookimpl
def tool_call_openers(model):
    if model.family == FAMILY:
        return [TOOL_CALLS]
    return None


@ggufd.hookimpl
def tool_call_stream(model, tools):
    """v7+ models: each ``[TOOL_CALLS]name[ARGS]{json}`` call streams its arguments (:class:`MistralCalls`).
    Not where the template shows no tools: the model is then asked for ggufd's generic JSON call."""
    if model.family != FAMILY:
        return None
    found = model_profile(model)
    if found is None or found.tools is None:
        return None
    return MistralCalls([tool["function"]["name"] for tool in tools])


def _partial_at(text: str, marker: str) -> int:
    """Where the longest suffix of ``text`` that could grow into ``marker`` starts (len(text) if none)."""
    for start in range(max(0, len(text) - len(marker) + 1), len(text)):
        if marker.startswith(text[start:]):
            return start
    return len(text)


class MistralCalls:
    """A :class:`ggufd.ToolCallStream` for v7+ answers: content, then ``[TOOL_CALLS]name[ARGS]{json}``
    calls (``[CALL_ID]id`` may come before ``[ARGS]``) whose arguments stream as they are written.

    States: ``content`` (up to a ``[TOOL_CALLS]``; a partial marker is held), ``head`` (the name, up
    to ``[ARGS]`` or the ``{`` that opens the arguments; held), ``arguments`` (the JSON value, streamed;
    a ``[`` that may begin the next ``[TOOL_CALLS]`` is held) and ``list`` (a v3-style JSON list after
    the marker: held, parsed when the answer ends). A head that is not a call to an offered tool is
    content, marker included. The call ends where its JSON value ends, or at the next
    ``[TOOL_CALLS]``, or with the answer. The output depends only on the text, never on its split.
    """

    def __init__(self, names) -> None:
        self.names = set(names)
        self._state = "content"
        self._pending = ""
        self._index = 0
        self._depth = 0  # of the arguments' JSON value
        self._in_string = False
        self._escaped = False
        self._started = False  # the arguments' first character was seen

    def feed(self, text: str) -> list[str | ToolCallDelta]:
        self._pending += text
        out: list[str | ToolCallDelta] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[str | ToolCallDelta]:
        out: list[str | ToolCallDelta] = []
        while self._step(out):
            pass
        pending, self._pending = self._pending, ""
        state, self._state = self._state, "content"
        if state == "content" and pending:
            out.append(pending)
        elif state == "head":
            out.append(TOOL_CALLS + pending)
        elif state == "arguments" and pending:
            out.append(ToolCallDelta(self._index, pending))
        elif state == "list":
            calls = _list_calls(pending, _fresh)
            if not calls:
                out.append(TOOL_CALLS + pending)
            for call in calls or ():
                out.append(ToolCallDelta(self._index, "", call["id"], call["function"]["name"]))
                out.append(ToolCallDelta(self._index, call["function"]["arguments"]))
                self._index += 1
        return out

    # -- one step of the state machine; False when it needs more text

    def _step(self, out: list[str | ToolCallDelta]) -> bool:
        if self._state == "content":
            at = self._pending.find(TOOL_CALLS)
            if at < 0:
                keep = _partial_at(self._pending, TOOL_CALLS)
                if keep:
                    out.append(self._pending[:keep])
                self._pending = self._pending[keep:]
                return False
            if at:
                out.append(self._pending[:at])
            self._pending, self._state = self._pending[at + len(TOOL_CALLS) :], "head"
            return True
        if self._state == "head":
            return self._head(out)
        if self._state == "arguments":
            return self._arguments(out)
        return False  # list: held until the end

    def _head(self, out: list[str | ToolCallDelta]) -> bool:
        rest = self._pending.lstrip()
        if not rest:
            return False
        if rest.startswith("["):
            self._state = "list"
            return False
        args_at = self._pending.find(ARGS)
        brace_at = self._pending.find("{")
        next_at = self._pending.find(TOOL_CALLS)
        ends = [at for at in (args_at, brace_at, next_at) if at >= 0]
        if not ends:
            return False  # the name is not complete yet
        end = min(ends)
        head = self._pending[:end]
        named = _name_and_id(head) if end != next_at else None
        if named is None or named[0] not in self.names:
            out.append(TOOL_CALLS + head)  # not a call: content, as written
            self._pending, self._state = self._pending[end:], "content"
            return True
        out.append(ToolCallDelta(self._index, "", named[1] or new_call_id(), named[0]))
        skip = len(ARGS) if end == args_at else 0
        self._pending, self._state = self._pending[end + skip :], "arguments"
        self._depth, self._in_string, self._escaped, self._started = 0, False, False, False
        return True

    def _arguments(self, out: list[str | ToolCallDelta]) -> bool:
        if not self._started:
            stripped = self._pending.lstrip()
            if not stripped:
                self._pending = ""
                return False
            self._pending, self._started = stripped, True
        text, at = self._pending, 0
        ready: list[str] = []
        while at < len(text):
            char = text[at]
            if char == "[" and TOOL_CALLS.startswith(text[at : at + len(TOOL_CALLS)]):
                if text.startswith(TOOL_CALLS, at):
                    self._close(out, ready, text[at:])
                    return True
                break  # perhaps the next call's marker: wait
            ready.append(char)
            at += 1
            if self._depth == 0 and not self._in_string and char not in "{[":
                continue  # not a JSON object or array: everything up to the next call is its arguments
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
                    self._close(out, ready, text[at:])
                    return True
        if ready:
            out.append(ToolCallDelta(self._index, "".join(ready)))
        self._pending = text[at:]
        return False

    def _close(self, out: list[str | ToolCallDelta], ready: list[str], rest: str) -> None:
        if ready:
            out.append(ToolCallDelta(self._index, "".join(ready)))
        self._index += 1
        self._pending, self._state = rest, "content"


@ggufd.hookimpl
def markup_tokens(model):
    """Control tokens of the tekken vocabularies: rendered as text so that calls and reasoning are seen."""
    if model.family == FAMILY:
        return [TOOL_CALLS, ARGS, CALL_ID, THINK.start, THINK.end]
    return None
