"""``response_format`` -> a llama.cpp grammar (GBNF) that forces the output's shape.

``{"type": "json_object"}`` allows any JSON object; ``{"type": "json_schema", "json_schema":
{"schema": {...}}}`` uses llama-cpp-python's JSON-Schema-to-grammar converter. Schemas are
untrusted: before converting, ggufd bounds their size, nesting and repetition counts, so a
request cannot make the server build a huge grammar (it gets a 400 at once instead).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ggufd.errors import InvalidRequest

MAX_SCHEMA_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_REPEAT = 256  # minItems/maxItems/minLength/maxLength/minProperties/maxProperties above this are refused
MAX_GRAMMAR_BYTES = 256 * 1024
REPEAT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
#: escapes in a regex ``pattern`` that name a control character (\x00-\x1f, \u0000-\u001f, \0, \c.)
CONTROL_ESCAPE = re.compile(r"\\(x[01][0-9a-fA-F]|u00[01][0-9a-fA-F]|0|c[A-Za-z])")

JSON_OBJECT_GRAMMAR = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"""


def _check_text(text: str, path: str) -> None:
    """llama.cpp's grammar engine cannot match control characters: a grammar that requires one
    (U+0000 aborts the whole process inside llama.cpp) is refused here."""
    if any(ord(ch) < 0x20 for ch in text) or CONTROL_ESCAPE.search(text):
        raise InvalidRequest(
            f"The JSON schema requires a control character at '{path or '/'}', which constrained output cannot produce.",
            param="response_format.json_schema.schema",
        )


BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounded(node: Any, path: str) -> Any:
    """llama-cpp-python's converter ignores numeric bounds (``{"age": 10**15}`` passed
    ``maximum: 150``). An integer with a small closed range (at most ``MAX_REPEAT`` + 1 values)
    becomes an ``enum`` of its values, which the grammar enforces; any other bound is refused."""
    if isinstance(node, list):
        return [_bounded(item, f"{path}/{i}") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    node = {key: _bounded_member(key, value, f"{path}/{key}") for key, value in node.items()}
    present = [key for key in BOUND_KEYS if key in node]
    if not present:
        return node
    low, high = node.get("minimum"), node.get("maximum")
    if _is_number(node.get("exclusiveMinimum")):
        low = node["exclusiveMinimum"] + 1 if isinstance(node["exclusiveMinimum"], int) else None
    if _is_number(node.get("exclusiveMaximum")):
        high = node["exclusiveMaximum"] - 1 if isinstance(node["exclusiveMaximum"], int) else None
    if (
        node.get("type") == "integer"
        and "multipleOf" not in node
        and isinstance(low, int)
        and isinstance(high, int)
        and 0 <= high - low <= MAX_REPEAT
        and "enum" not in node
        and "const" not in node
    ):
        rest = {key: value for key, value in node.items() if key not in BOUND_KEYS and key != "type"}
        return {**rest, "enum": list(range(low, high + 1))}
    raise InvalidRequest(
        f"'{present[0]}' at '{path or '/'}' cannot be enforced by grammar-constrained output; "
        f"only integer ranges of at most {MAX_REPEAT + 1} values (with both minimum and maximum) are.",
        param="response_format.json_schema.schema",
    )


#: keywords whose value is a map of names to schemas (the names are no keywords)
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
#: keywords whose value is data, not a schema
DATA_KEYS = ("const", "enum", "default", "examples")


def _bounded_member(key: str, value: Any, path: str) -> Any:
    if key in DATA_KEYS:
        return value
    if key in SCHEMA_MAPS and isinstance(value, dict):
        return {name: _bounded(schema, f"{path}/{name}") for name, schema in value.items()}
    return _bounded(value, path)


def _check(node: Any, depth: int, path: str) -> None:
    if isinstance(node, str):
        _check_text(node, path)
        return
    if depth > MAX_DEPTH:
        raise InvalidRequest(
            f"The JSON schema is nested more than {MAX_DEPTH} levels deep.", param="response_format.json_schema.schema"
        )
    if isinstance(node, dict):
        for key in REPEAT_KEYS:
            value = node.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_REPEAT:
                raise InvalidRequest(
                    f"'{key}' = {value} at '{path or '/'}' is too large for grammar-constrained output (at most {MAX_REPEAT}).",
                    param="response_format.json_schema.schema",
                )
        for key, value in node.items():
            _check_text(key, f"{path}/{key}")
            _check(value, depth + 1, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check(value, depth + 1, f"{path}/{index}")


#: a NUL (U+0000) in a grammar, literal or escaped: llama.cpp aborts the process on one it must match
NUL = re.compile(r"\x00|\\x00|\\u0000|\\U00000000", re.IGNORECASE)


def _nul_outside_negated_classes(grammar: str) -> bool:
    """Whether the grammar names U+0000 anywhere but in a negated class (``[^...\x00-\x1f]``, as
    JSON string rules do, is harmless: it excludes it)."""
    at, negated_class = 0, None
    while at < len(grammar):
        char = grammar[at]
        if negated_class is None and char == '"':  # a string literal: up to its unescaped end quote
            end = at + 1
            while end < len(grammar) and grammar[end] != '"':
                end += 2 if grammar[end] == "\\" else 1
            if NUL.search(grammar, at, end):
                return True
            at = end + 1
            continue
        if negated_class is None and char == "[":
            negated_class = grammar.startswith("[^", at)
            start, end = at, at + 1
            while end < len(grammar) and grammar[end] != "]":
                end += 2 if grammar[end] == "\\" else 1
            if not negated_class and NUL.search(grammar, start, end):
                return True
            negated_class, at = None, end + 1
            continue
        if grammar.startswith("#", at):  # a comment, to the end of its line
            newline = grammar.find("\n", at)
            at = len(grammar) if newline < 0 else newline + 1
            continue
        if NUL.match(grammar, at):
            return True
        at += 1
    return False


def raw_grammar(grammar: Any, param: str = "grammar") -> str:
    """A GBNF grammar the client wrote (llama.cpp's ``grammar`` field): bounded in size; one that
    requires U+0000 is refused (llama.cpp aborts on it). llama.cpp compiles it when the request starts."""
    if not isinstance(grammar, str) or not grammar.strip():
        raise InvalidRequest("grammar must be a non-empty GBNF grammar.", param=param)
    if len(grammar.encode("utf-8")) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(f"The grammar is larger than {MAX_GRAMMAR_BYTES} bytes.", param=param)
    if _nul_outside_negated_classes(grammar):
        raise InvalidRequest("The grammar requires U+0000, which constrained output cannot produce.", param=param)
    return grammar


def request_grammar(body: dict) -> str | None:
    """The grammar a request constrains its output with: ``response_format`` (OpenAI), else llama.cpp's
    extensions ``json_schema`` (a schema at the top level) or ``grammar`` (raw GBNF). Two at once are a 400."""
    given = [key for key in ("response_format", "json_schema", "grammar") if _constrains(key, body.get(key))]
    if len(given) > 1:
        raise InvalidRequest(f"Give one of {' and '.join(given)}, not both.", param=given[1])
    if not given:
        return None
    key = given[0]
    if key == "grammar":
        return raw_grammar(body["grammar"])
    if key == "json_schema":
        schema = body["json_schema"]
        return schema_grammar(schema, "json_schema")
    return grammar_for(body["response_format"])


def _constrains(key: str, value: Any) -> bool:
    if value is None:
        return False
    if key == "response_format":
        return isinstance(value, dict) and value.get("type") not in (None, "text")
    return True


def grammar_for(response_format: dict | None) -> str | None:
    """The GBNF grammar for a request's ``response_format``, or None for plain text. ``json_object`` may
    carry a ``schema`` (llama.cpp's extension): then the object must match it."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    if response_format["type"] == "json_object":
        if response_format.get("schema") is not None:
            return schema_grammar(response_format["schema"], "response_format.schema")
        return JSON_OBJECT_GRAMMAR
    spec = response_format.get("json_schema") or {}
    return schema_grammar(spec.get("schema"), "response_format.json_schema.schema")


def schema_grammar(schema: Any, param: str) -> str:
    """The grammar for a JSON schema sent by a client, bounded (see the module)."""
    try:
        return _schema_grammar(schema)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=param) from None


def _schema_grammar(schema: Any) -> str:
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON schema object.",
            param="response_format.json_schema.schema",
        )
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(
            f"The JSON schema is larger than {MAX_SCHEMA_BYTES} bytes.", param="response_format.json_schema.schema"
        )
    _check(schema, 0, "")
    text = json.dumps(_bounded(schema, ""))
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(text)
    except Exception as exc:  # the converter raises plain exceptions for schemas it cannot express
        raise InvalidRequest(
            f"The JSON schema cannot be turned into a grammar: {exc}", param="response_format.json_schema.schema"
        ) from None
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(
            "The JSON schema leads to a grammar that is too large.", param="response_format.json_schema.schema"
        )
    return grammar
