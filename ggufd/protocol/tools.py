"""Tool (function) calling: pure functions from the request's ``tools``/``tool_choice`` to a
prompt instruction and a grammar, and from the generated text back to OpenAI ``tool_calls``.

How a call comes about:

* the tools are described to the model in a system instruction (every family understands
  plain text; families with a native tool syntax still parse it through ``parse_tool_calls``);
* ``tool_choice = "required"`` or a named function: a grammar forces the answer to be one
  call ``{"name": ..., "arguments": {...}}`` whose arguments match that tool's parameters
  schema — so the arguments are always valid JSON;
* ``"auto"``: the model answers freely; the family's ``parse_tool_calls`` hook, else the
  generic parser (an answer that is a JSON call, optionally in a code fence), finds calls;
* ``"none"`` (or no tools): plain chat.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ggufd.errors import InvalidRequest
from ggufd.protocol.structured_output import grammar_for
from ggufd.tool_calls import OpenerGate
from ggufd.types import ChatPrompt, ToolCallStream

FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class ToolPolicy:
    tools: tuple[Mapping[str, Any], ...]  # the request's tools (type "function")
    choice: str  # "auto" | "required" | "named"
    name: str | None = None  # the function tool_choice names
    parallel: bool = True  # False: at most one call (``parallel_tool_calls: false``)

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]


def tool_policy(body: Mapping[str, Any]) -> ToolPolicy | None:
    """The request's tool policy, or None when no tool may be called."""
    tools = tuple(body.get("tools") or ())
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        if isinstance(choice, dict) or choice == "required":
            raise InvalidRequest("tool_choice names a tool, but the request has no tools.", param="tool_choice")
        return None
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        if name not in [t["function"]["name"] for t in tools]:
            raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools.", param="tool_choice")
        return ToolPolicy(tools, "named", name, parallel=body.get("parallel_tool_calls") is not False)
    return ToolPolicy(tools, choice or "auto", parallel=body.get("parallel_tool_calls") is not False)


def instruction(policy: ToolPolicy) -> str:
    """The system text that describes the tools and how to call one."""
    lines = ["You can call these functions:"]
    for tool in policy.tools:
        function = tool["function"]
        lines.append(
            json.dumps(
                {
                    "name": function["name"],
                    "description": function.get("description", ""),
                    "parameters": function.get("parameters", {}),
                },
                ensure_ascii=False,
            )
        )
    if policy.choice == "named":
        lines.append(
            f'Call the function "{policy.name}". Answer only with JSON: {{"name": "{policy.name}", "arguments": {{...}}}}.'
        )
    elif policy.choice == "required":
        lines.append('Call one of the functions. Answer only with JSON: {"name": <function name>, "arguments": {...}}.')
    else:
        lines.append(
            'To call a function, answer only with JSON: {"name": <function name>, "arguments": {...}}. '
            "Otherwise answer normally."
        )
    if policy.choice != "named":
        lines.append(
            "To call several functions at once, answer with a JSON list of such objects."
            if policy.parallel
            else "Call at most one function at a time."
        )
    return "\n".join(lines)


def with_instruction(messages: Sequence[Mapping[str, Any]], policy: ToolPolicy) -> tuple[dict, ...]:
    """The messages with the tool instruction added to the (first) system message."""
    text = instruction(policy)
    copied = [dict(m) for m in messages]
    if copied and copied[0]["role"] == "system":
        copied[0]["content"] = f"{copied[0]['content']}\n\n{text}"
    else:
        copied.insert(0, {"role": "system", "content": text})
    return tuple(copied)


def call_schema(policy: ToolPolicy) -> dict:
    """JSON schema of what a forced answer may be: one call to the allowed tool(s), or (unless
    ``parallel_tool_calls`` is false) a list of such calls."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in policy.tools
        if policy.choice != "named" or t["function"]["name"] == policy.name
    ]
    one = options[0] if len(options) == 1 else {"anyOf": options}
    if not policy.parallel:
        return one
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}  # one call, or several


def grammar(policy: ToolPolicy) -> str | None:
    """A grammar that forces a call, for "required" and a named function; None for "auto"."""
    if policy.choice == "auto":
        return None
    try:
        return grammar_for({"type": "json_schema", "json_schema": {"schema": call_schema(policy)}})
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.message.replace("The JSON schema", "A tool's parameters schema"), param="tools"
        ) from None


def tool_arguments(value: Any) -> Any:
    """Tool-call arguments as an object, for chat formats that render them: OpenAI sends a JSON
    string, templates expect a dict; text that is not JSON stays text, None becomes {}.
    Part of the public plugin API (``ggufd.tool_arguments``)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value if value is not None else {}


def tool_call(name: str, arguments: Any, call_id: str | None = None) -> dict:
    """One OpenAI-shaped tool call; ``arguments`` as a JSON string (objects are dumped), a fresh
    id unless one is given. Part of the public plugin API (``ggufd.tool_call``)."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call_id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def parse_generic(text: str, names: Sequence[str]) -> list[dict] | None:
    """An answer that is one JSON call (or a list of calls) to known tools, possibly fenced."""
    text = text.strip()
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text.startswith(("{", "[")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append(tool_call(item["name"], arguments))
    return calls or None


def find_calls(plugins, model, text: str, policy: ToolPolicy) -> list[dict] | None:
    """The tool calls in an answer: the family's syntax first, then the generic JSON form.
    Calls to functions that were not offered are not calls."""
    calls = plugins.parse_tool_calls(model, text)
    if calls:
        calls = [c for c in calls if c.get("function", {}).get("name") in policy.names]
        if calls:
            return [
                tool_call(c["function"]["name"], c["function"].get("arguments", "{}")) if not c.get("id") else c
                for c in calls
            ]
    return parse_generic(text, policy.names)


def call_stream(plugins, model, policy: ToolPolicy, prompt: ChatPrompt) -> ToolCallStream:
    """How the request's answer is searched for calls while it streams. The family's own stream
    when the prompt describes the tools in the family's syntax; otherwise (ggufd's JSON
    instruction, a forced call) the family's openers and ggufd's generic JSON call, parsed at the end."""
    if prompt.tools_rendered and policy.choice == "auto":
        stream = plugins.tool_call_stream(model, policy.tools, policy.parallel)
        if stream is not None:
            return stream
    openers = plugins.tool_call_openers(model) if policy.choice == "auto" else ()
    return OpenerGate(openers, lambda text: find_calls(plugins, model, text, policy))


def raw_calls(plugins, model, raw_text: str, policy: ToolPolicy) -> list[dict] | None:
    """The calls the family's ``parse_tool_calls`` finds in the whole generated text, markup
    included: for families whose answer filter takes calls out of the content (gpt-oss's harmony
    messages to ``functions.*``). Only calls to offered tools count."""
    calls = plugins.parse_tool_calls(model, raw_text) or []
    calls = [c for c in calls if c.get("function", {}).get("name") in policy.names]
    return [
        c if c.get("id") else tool_call(c["function"]["name"], c["function"].get("arguments", "{}")) for c in calls
    ] or None
