"""JSON Schema validation of request bodies and of the config file.

Schemas are committed files under ``ggufd/schemas/`` (Draft 2020-12), loaded once.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import jsonschema
from jsonschema import Draft202012Validator

from ggufd.errors import InvalidRequest

# JSON Schema counts 8000.0 as an "integer"; llama.cpp (ctypes) and the socket layer do not,
# so a float where an integer belongs is refused here instead of failing later with a 500.
_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool)
)
_StrictValidator = jsonschema.validators.extend(Draft202012Validator, type_checker=_TYPE_CHECKER)


def inline_refs(node, defs: dict, seen: tuple[str, ...] = ()):
    """Replace each bare ``{"$ref": "#/$defs/name"}`` by a copy of that definition.

    jsonschema resolves a ``$ref`` through its referencing registry on every descent, which
    was two thirds of the validation time of a chat request (about 140 of 280 µs here). A
    recursive definition keeps its ``$ref`` (and the ``$defs`` it points into)."""
    if isinstance(node, list):
        return [inline_refs(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in defs and name not in seen:
            return inline_refs(defs[name], defs, seen + (name,))
    return {key: inline_refs(value, defs, seen) for key, value in node.items()}


@cache
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    text = resources.files("ggufd.schemas").joinpath(f"{schema_name}.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return _StrictValidator(
        inline_refs(schema, schema.get("$defs", {})), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def json_path(path) -> str:
    """``deque(['messages', 0, 'role'])`` -> ``"messages.0.role"`` (the OpenAI ``param`` style)."""
    return ".".join(str(part) for part in path)


def describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """Return (param path, human message) for the most relevant error of a validation failure."""
    error = jsonschema.exceptions.best_match([error]) if error.context else error
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            path.append(extra[0])
            return json_path(path), f"unknown key '{extra[0]}'"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path.append(missing[0])
            return json_path(path), f"'{missing[0]}' is required"
    if error.validator == "not" and isinstance(error.instance, dict):
        return json_path(path), "the keys " + ", ".join(
            sorted(error.validator_value.get("required", []))
        ) + " exclude each other"
    message = error.message
    if len(message) > 300:
        message = message[:300] + "..."
    return json_path(path), message


def first_error(doc, schema_name: str) -> tuple[str, str] | None:
    errors = sorted(
        validator(schema_name).iter_errors(doc), key=lambda e: (len(e.absolute_path), str(list(e.absolute_path)))
    )
    if not errors:
        return None
    return describe(jsonschema.exceptions.best_match(errors))


def validate(doc, schema_name: str) -> None:
    """Raise :class:`InvalidRequest` (400) with ``param`` = JSON path of the first error."""
    problem = first_error(doc, schema_name)
    if problem is not None:
        param, message = problem
        where = f" at '{param}'" if param else ""
        raise InvalidRequest(f"Invalid request{where}: {message}", param=param or None)
