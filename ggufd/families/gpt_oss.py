"""The gpt-oss family (OpenAI gpt-oss-20b and gpt-oss-120b): the harmony format.

Written exactly like a third-party plugin. The format is OpenAI's harmony format as the
published chat template (openai/gpt-oss-*, chat_template.jinja) renders it; every message is
``<|start|>{role}<|message|>{text}<|end|>``:

    <|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
    Knowledge cutoff: 2024-06
    Current date: {YYYY-MM-DD}

    Reasoning: {low|medium|high}

    # Valid channels: analysis, commentary, final. Channel must be included for every message.
    Calls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|># Instructions

    {system}

    # Tools

    ## functions

    namespace functions {

    // Get the weather
    type get_weather = (_: {
    city: string,
    }) => any;

    } // namespace functions<|end|><|start|>user<|message|>{user}<|end|><|start|>assistant<|channel|>final<|message|>{answer}<|end|><|start|>assistant

The system block is fixed (``today()`` gives the date; tests replace it) but for what the
template takes as variables (``template_kwargs``): ``reasoning_effort`` ("low", "medium" (the
default), "high"; "minimal" and "none", which gpt-oss does not know, are its lowest level,
"low": the model cannot be kept from reasoning, so that is the closest ggufd can honour them)
and ``model_identity`` (the first line). The line about tools and the ``# Tools`` section are
there when tools are offered: each function as the template's TypeScript-like type, with its
spacing (a function without a description gets no comment line, and a default that is not a
string, where the template concatenates one, is written as JSON: there the template would fail).
The caller's system messages become the developer instructions. Earlier answers keep only their
final channel (the template drops their reasoning too).

Tool calls and results use the harmony syntax the model writes itself (OpenAI's harmony
guide), not the published template's variant (recipient in the role, ``json`` without
``<|constrain|>``, results JSON-quoted)::

    <|start|>assistant<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{arguments}<|call|>
    <|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{result}<|end|>

The reasoning (``content``) of a tool-calling message is kept as an analysis message until
a final answer follows, as the template does.

The model answers on several channels::

    <|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{answer}<|return|>

``<|return|>`` and ``<|call|>`` end generation (they are end-of-generation tokens as
well as stop strings here). ``<|end|>`` must not be a stop: it ends the analysis message,
before the answer. llama.cpp renders ``<|channel|>``, ``<|message|>``, ``<|start|>`` and
``<|constrain|>`` as text but not ``<|end|>``, so the generated text reads
``<|channel|>analysis<|message|>...<|start|>assistant<|channel|>final<|message|>...``.
The ``answer_filter`` hook (:class:`HarmonyFilter`) takes that stream apart while it is
generated: the final channel becomes ``content``, the analysis channel (and commentary
preambles) ``reasoning_content``, tool-call arguments neither (``parse_tool_calls`` reads
them from the raw text), and every marker is dropped. :func:`split_channels` and
:func:`final_answer` do the same on a whole text (the latter for earlier answers sent back
in the history, which older clients may still send with the markup).

The prompt's ``reasoning`` (:data:`ANALYSIS`) is the analysis message as it shows in the generated
text: opened by ``<|channel|>analysis<|message|>`` and ended by the ``<|start|>`` of the next
message (the ``<|end|>`` token before it is not rendered, so a reasoning budget would never see it).
When a budget is spent, ggufd makes the model write its ``close``,
``<|end|><|start|>assistant<|channel|>final<|message|>``: the end of the analysis message and the
header of the final one, as the model itself writes them (in the text only the header shows, which
the answer filter reads as the start of the final channel), so that what the model writes next is
the answer.
"""

from __future__ import annotations

import datetime
import json
import re

import ggufd
from ggufd import ChatPrompt, InvalidRequest, ReasoningSyntax

FAMILY = "gpt-oss"
ARCHITECTURE = "gpt-oss"
START, MESSAGE, END, CHANNEL = "<|start|>", "<|message|>", "<|end|>", "<|channel|>"
RETURN, CALL = "<|return|>", "<|call|>"
STOPS = [RETURN, CALL]
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
SYSTEM = (
    "{identity}\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: {date}\n\n"
    "Reasoning: {effort}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
TOOLS_CHANNEL = "\nCalls to these tools must go to the commentary channel: 'functions'."
#: reasoning_effort -> the system block's "Reasoning:" level (gpt-oss has no lower one than "low")
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "minimal": "low", "none": "low"}
DEFAULT_EFFORT = "medium"
#: the analysis message, up to the next message's <|start|> (its <|end|> is not rendered); a spent
#: reasoning budget ends it and opens the final one
ANALYSIS = ReasoningSyntax(f"{CHANNEL}analysis{MESSAGE}", START, close=f"{END}{START}assistant{CHANNEL}final{MESSAGE}")
# One message of generated text: an optional role header ("<|start|>assistant to=functions.x"),
# the channel header ("commentary to=functions.x <|constrain|>json") and the body.
HARMONY_MESSAGE = re.compile(
    r"(?P<role>(?:<\|start\|>)?[^<]*)<\|channel\|>(?P<header>.*?)<\|message\|>"
    r"(?P<body>.*?)(?=<\|end\|>|<\|start\|>|<\|return\|>|<\|call\|>|<\|channel\|>|\Z)",
    re.DOTALL,
)
RECIPIENT = re.compile(r"\bto=([^\s<]+)")
CHANNEL_NAME = re.compile(r"\s*(\w+)")


def today() -> str:
    """The "Current date" of the system message (a function, so tests can fix it)."""
    return datetime.date.today().isoformat()


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if metadata.architecture == ARCHITECTURE or (CHANNEL in template and MESSAGE in template):
        return FAMILY
    return None


def split_channels(text: str) -> list[dict]:
    """The harmony messages in generated text: ``{"channel", "recipient", "body"}`` each, in order."""
    found = []
    for match in HARMONY_MESSAGE.finditer(text):
        channel = CHANNEL_NAME.match(match["header"])
        recipient = RECIPIENT.search(match["role"] + " " + match["header"])
        found.append(
            {
                "channel": channel[1] if channel else "",
                "recipient": recipient[1] if recipient else None,
                "body": match["body"],
            }
        )
    return found


def final_answer(text: str) -> str:
    """The final channel of a harmony answer; text without channel markup as it is."""
    if CHANNEL not in text:
        return text
    finals = [m["body"] for m in split_channels(text) if m["channel"] == "final" and not m["recipient"]]
    return finals[-1] if finals else ""


def _tool_call_messages(message) -> str:
    parts = []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        parts.append(
            f"{START}assistant{CHANNEL}commentary to=functions.{function.get('name', '')} <|constrain|>json{MESSAGE}{arguments}{CALL}"
        )
    return "".join(parts)


def _reasoning(content: str) -> str:
    if CHANNEL not in content:
        return content
    return "".join(m["body"] for m in split_channels(content) if m["channel"] == "analysis")


def _typescript_type(spec, required) -> str:
    """A JSON Schema as the template's ``render_typescript_type`` macro writes it, spacing included."""
    if not isinstance(spec, dict):
        return "any"
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        if items:
            inner = items.get("type") if isinstance(items, dict) else None
            if inner == "string":
                text = "string[]"
            elif inner in ("number", "integer"):
                text = "number[]"
            elif inner == "boolean":
                text = "boolean[]"
            else:
                nested = _typescript_type(items, required)
                text = "any[]" if nested == "object | object" or len(nested) > 50 else nested + "[]"
        else:
            text = "any[]"
        return text + (" | null" if spec.get("nullable") else "")
    if isinstance(kind, list) and kind:
        return " | ".join(str(k) for k in kind)
    if spec.get("oneOf"):
        variants = spec["oneOf"]
        parts = []
        for index, variant in enumerate(variants):
            part = _typescript_type(variant, required)
            if isinstance(variant, dict) and variant.get("description"):
                part += "// " + str(variant["description"])
            if isinstance(variant, dict) and "default" in variant:
                part += " " * 20 + "// default: " + json.dumps(variant["default"], ensure_ascii=False)
            if index < len(variants) - 1:
                part += " | \n"
            parts.append(part)
        return "".join(parts)
    if kind == "string":
        if spec.get("enum"):
            return '"' + '" | "'.join(str(value) for value in spec["enum"]) + '"'
        return "string" + (" | null" if spec.get("nullable") else "")
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object":
        properties = spec.get("properties")
        if not properties:
            return "object"
        needed = spec.get("required") or []
        fields = [
            name + ("" if name in needed else "?") + ": \n" + " " * 16 + _typescript_type(value, needed)
            for name, value in properties.items()
        ]
        return "{\n" + ", ".join(fields) + "}"
    return "any"


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def tool_namespace(tools) -> str:
    """The developer message's ``# Tools`` section: the functions as the published template types them."""
    parts = ["# Tools\n\n## functions\n\nnamespace functions {\n\n"]
    for tool in tools:
        function = tool.get("function") or {}
        if function.get("description") is not None:
            parts.append(f"// {function['description']}\n")
        parts.append(f"type {function.get('name', '')} = ")
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if not properties:
            parts.append("() => any;\n\n")
            continue
        required = parameters.get("required") or []
        parts.append("(_: {\n")
        for name, spec in properties.items():
            spec = spec if isinstance(spec, dict) else {}
            if spec.get("description"):
                parts.append(f"// {spec['description']}\n")
            parts.append(name + ("" if name in required else "?") + ": " + _typescript_type(spec, required))
            if "default" in spec:
                if spec.get("enum"):
                    parts.append(", // default: " + _text(spec["default"]))
                elif spec.get("oneOf"):
                    parts.append("// default: " + _text(spec["default"]))
                else:
                    parts.append(", // default: " + json.dumps(spec["default"], ensure_ascii=False))
            parts.append(",\n")
        parts.append("}) => any;\n\n")
    parts.append("} // namespace functions")
    return "".join(parts)


def _settings(template_kwargs) -> tuple[str, str, frozenset[str]]:
    """(identity, reasoning level, honoured keys) from the request's template variables."""
    honoured = set()
    identity, effort = IDENTITY, DEFAULT_EFFORT
    given = template_kwargs.get("model_identity")
    if isinstance(given, str):
        identity = given
        honoured.add("model_identity")
    asked = template_kwargs.get("reasoning_effort")
    if isinstance(asked, str) and asked.strip().lower() in EFFORTS:
        effort = EFFORTS[asked.strip().lower()]
        honoured.add("reasoning_effort")
    return identity, effort, frozenset(honoured)


@ggufd.hookimpl
def format_chat(model, messages, tools, template_kwargs):
    if model.family != FAMILY:
        return None
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("A gpt-oss chat needs at least one user message.", param="messages")
    identity, effort, honoured = _settings(template_kwargs)
    system = SYSTEM.format(identity=identity, date=today(), effort=effort) + (TOOLS_CHANNEL if tools else "")
    parts = [f"{START}system{MESSAGE}{system}{END}"]
    instructions = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if instructions or tools:
        developer = f"# Instructions\n\n{instructions}\n\n" if instructions else ""
        parts.append(f"{START}developer{MESSAGE}{developer}{tool_namespace(tools) if tools else ''}{END}")
    names_by_id = {}
    last_name = None
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "user":
            parts.append(f"{START}user{MESSAGE}{content}{END}")
        elif role == "assistant" and message.get("tool_calls"):
            answered_later = any(m["role"] == "assistant" and not m.get("tool_calls") for m in messages[index + 1 :])
            reasoning = _reasoning(content)
            if reasoning and not answered_later:
                parts.append(f"{START}assistant{CHANNEL}analysis{MESSAGE}{reasoning}{END}")
            parts.append(_tool_call_messages(message))
            for call in message["tool_calls"]:
                last_name = (call.get("function") or {}).get("name")
                names_by_id[call.get("id")] = last_name
        elif role == "assistant":
            parts.append(f"{START}assistant{CHANNEL}final{MESSAGE}{final_answer(content)}{END}")
        elif role == "tool":
            name = message.get("name") or names_by_id.get(message.get("tool_call_id")) or last_name
            if not name:
                raise InvalidRequest(
                    "A tool message must follow an assistant message with tool_calls.", param=f"messages.{index}"
                )
            parts.append(f"{START}functions.{name} to=assistant{CHANNEL}commentary{MESSAGE}{content}{END}")
    parts.append(f"{START}assistant")
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(
        text="".join(parts),
        stop=tuple(STOPS),
        add_bos=add_bos,
        tools_rendered=bool(tools),
        honoured=honoured,
        reasoning=ANALYSIS,
    )


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return list(STOPS)
    return None


@ggufd.hookimpl
def parse_tool_calls(model, text):
    if model.family != FAMILY or "to=functions." not in text:
        return None
    calls = []
    for message in split_channels(text):
        recipient = message["recipient"] or ""
        if not recipient.startswith("functions."):
            continue
        name, arguments = recipient[len("functions.") :], message["body"].strip()
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return None  # a malformed call: the answer is returned as text
        if not name or not isinstance(parsed, dict):
            return None
        calls.append(ggufd.tool_call(name, arguments))
    return calls or None


# --------------------------------------------------------------------------- answer filter

#: Every harmony marker that may reach the generated text (the control tokens too, in case
#: a backend renders them).
MARKERS = (START, MESSAGE, END, CHANNEL, "<|constrain|>", RETURN, CALL)
MARKER = re.compile("|".join(re.escape(m) for m in MARKERS))
#: Markers that end a message body; the others (``<|message|>``, ``<|constrain|>``) are dropped.
BODY_ENDS = (START, END, CHANNEL, RETURN, CALL)
LONGEST_MARKER = max(map(len, MARKERS))
#: The template's variant: the recipient in the role, right after ``<|start|>assistant``.
ROLE_RECIPIENT = re.compile(r"to=[^\s<]*\s*")
CONTENT, REASONING, DROP = "content", "reasoning", "drop"


def _partial_marker_at(text: str) -> int:
    """Where the longest suffix of ``text`` that could still grow into a marker starts (len(text) if none)."""
    for start in range(max(0, len(text) - LONGEST_MARKER + 1), len(text)):
        tail = text[start:]
        if any(m.startswith(tail) for m in MARKERS):
            return start
    return len(text)


def _opening(text: str) -> bool | None:
    """Does generated text open with harmony markup? ``None``: it cannot be told yet."""
    rest = text.lstrip()
    if not rest:
        return None
    if any(rest.startswith(m) for m in MARKERS):
        return True
    if any(m.startswith(rest) for m in MARKERS):
        return None
    if "to=".startswith(rest):
        return None
    if rest.startswith("to="):  # " to=functions.x<|channel|>commentary json<|message|>..."
        recipient = ROLE_RECIPIENT.match(rest)
        if recipient is None:
            return False
        tail = rest[recipient.end() :]
        if not tail or CHANNEL.startswith(tail):
            return None
        return tail.startswith(CHANNEL)
    return False


def _destination(header: str) -> str:
    """Where the body of a message with this header goes: content, reasoning, or nowhere (a tool call)."""
    if RECIPIENT.search(header):
        return DROP
    _, found, after = header.rpartition(CHANNEL)
    channel = CHANNEL_NAME.match(after) if found else None
    name = channel[1] if channel else ""
    if name in ("", "final"):
        return CONTENT
    return REASONING


class HarmonyFilter:
    """Splits one generation in the harmony format into (content, reasoning), piece by piece.

    States: ``opening`` (not yet known whether the text is harmony at all), ``plain`` (it is
    not: everything is content), ``header`` (markup up to ``<|message|>``: held, then dropped),
    ``body`` (a message body going to ``self._to``; a suffix that may be the start of a marker
    is held back) and ``final`` (the final channel's body: content up to the end, verbatim).
    The output depends only on the text, never on how it was split.
    """

    def __init__(self) -> None:
        self._state = "opening"
        self._pending = ""  # text not yet decided on
        self._to = CONTENT
        self._reasoned = False  # some reasoning was given (a later reasoning message is set apart)
        self._separate = False  # the current reasoning message still owes its separator
        self._scanned = 0  # how much of a held header was searched for <|message|> already

    def feed(self, text: str) -> tuple[str, str]:
        try:
            return self._feed(text if isinstance(text, str) else str(text or ""))
        except Exception:  # pragma: no cover - never break a request over markup
            return self._give_up()

    def finish(self) -> tuple[str, str]:
        try:
            return self._finish()
        except Exception:  # pragma: no cover - defensive
            return self._give_up()

    # -- internals

    def _give_up(self) -> tuple[str, str]:
        text, self._pending, self._state = self._pending, "", "plain"
        return text, ""

    def _feed(self, text: str) -> tuple[str, str]:
        if self._state == "plain":
            return text, ""
        if self._state == "final":
            return text, ""
        self._pending += text
        content: list[str] = []
        reasoning: list[str] = []
        if self._state == "opening":
            harmony = _opening(self._pending)
            if harmony is None:
                return "", ""
            if not harmony:
                self._state = "plain"
                text, self._pending = self._pending, ""
                return text, ""
            self._state = "header"
        self._run(content, reasoning)
        return "".join(content), "".join(reasoning)

    def _run(self, content: list[str], reasoning: list[str]) -> None:
        while self._pending:
            if self._state == "final":
                content.append(self._pending)
                self._pending = ""
                return
            if self._state == "header":
                at = self._pending.find(MESSAGE, self._scanned)
                if at < 0:
                    self._scanned = max(0, len(self._pending) - len(MESSAGE) + 1)
                    return  # the whole header is held until its <|message|>
                self._scanned = 0
                header, self._pending = self._pending[:at], self._pending[at + len(MESSAGE) :]
                self._to = _destination(header)
                self._state = "final" if self._to == CONTENT else "body"
                self._separate = self._to == REASONING and self._reasoned
                continue
            # body
            match = MARKER.search(self._pending)
            if match is None:
                cut = _partial_marker_at(self._pending)
                self._emit(self._pending[:cut], content, reasoning)
                self._pending = self._pending[cut:]
                return
            self._emit(self._pending[: match.start()], content, reasoning)
            if match[0] in BODY_ENDS:
                # <|start|> and <|channel|> open the next header; <|end|>, <|return|>, <|call|> end the message
                keep = match.start() if match[0] in (START, CHANNEL) else match.end()
                self._pending = self._pending[keep:]
                self._state = "header"
            else:
                self._pending = self._pending[match.end() :]

    def _emit(self, text: str, content: list[str], reasoning: list[str]) -> None:
        if not text or self._to == DROP:
            return
        if self._to == CONTENT:
            content.append(text)
            return
        if self._separate:
            reasoning.append("\n\n")
            self._separate = False
        reasoning.append(text)
        self._reasoned = True

    def _finish(self) -> tuple[str, str]:
        pending, self._pending = self._pending, ""
        state, self._state = self._state, "plain"
        cut = _partial_marker_at(pending)
        if pending[cut:].startswith("<|"):
            pending = pending[:cut]  # never half a marker
        if state == "opening":
            return pending, ""  # too short to tell: content
        if state == "body":
            content: list[str] = []
            reasoning: list[str] = []
            self._emit(pending, content, reasoning)
            return "".join(content), "".join(reasoning)
        return "", ""  # an unfinished header


@ggufd.hookimpl
def answer_filter(model, prompt):
    if model.family != FAMILY:
        return None
    return HarmonyFilter()
