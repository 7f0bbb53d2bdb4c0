"""ggufd.validation: request bodies against schemas/chat_completions.json -> 400 with ``param`` = JSON path."""

from __future__ import annotations

from collections import deque

import pytest

from ggufd.errors import InvalidRequest
from ggufd.validation import first_error, inline_refs, json_path, validate, validator

USER = {"role": "user", "content": "Hello"}


def body(**fields) -> dict:
    return {"messages": [USER], **fields}


def refused(doc) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate(doc, "chat_completions")
    error = info.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.to_dict()["error"]["param"] == error.param
    return error


def test_json_path():
    assert json_path(deque(["messages", 0, "role"])) == "messages.0.role"
    assert json_path([]) == ""


@pytest.mark.parametrize("doc", [[], "text", 42, None, [{"messages": [USER]}]])
def test_non_object_body(doc):
    error = refused(doc)
    assert error.param is None
    assert "is not of type 'object'" in error.message
    assert error.message.startswith("Invalid request: ")


def test_missing_messages():
    error = refused({"model": "m"})
    assert error.param == "messages"
    assert error.message == "Invalid request at 'messages': 'messages' is required"


def test_empty_messages():
    error = refused({"messages": []})
    assert error.param == "messages"
    assert "should be non-empty" in error.message


def test_messages_not_an_array():
    assert refused({"messages": "hi"}).param == "messages"
    assert refused({"messages": [5]}).param == "messages.0"


def test_bad_role():
    error = refused({"messages": [{"role": "robot", "content": "x"}]})
    assert error.param == "messages.0.role"
    assert "'robot' is not one of" in error.message


def test_bad_role_in_a_later_message():
    assert refused({"messages": [USER, USER, {"role": "", "content": "x"}]}).param == "messages.2.role"


def test_missing_role():
    error = refused({"messages": [{"content": "x"}]})
    assert error.param == "messages.0.role"
    assert "'role' is required" in error.message


@pytest.mark.parametrize("role", ["user", "system", "developer", "tool"])
def test_missing_content_for_non_assistant_roles(role):
    error = refused({"messages": [{"role": role}]})
    assert error.param == "messages.0.content"
    assert "'content' is required" in error.message


@pytest.mark.parametrize("content", [None, 5, {"text": "x"}, True])
def test_bad_content_for_user(content):
    assert refused({"messages": [{"role": "user", "content": content}]}).param == "messages.0.content"


def test_content_part_with_non_string_text():
    error = refused({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
    assert error.param == "messages.0.content.0.text"
    assert "5 is not of type 'string'" in error.message


def test_content_part_without_type():
    assert refused({"messages": [{"role": "user", "content": [{"text": "x"}]}]}).param == "messages.0.content.0.type"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -2, -100, 1.5, "10", True])
def test_bad_max_tokens(field, value):
    assert refused(body(**{field: value})).param == field


@pytest.mark.parametrize("value", [-1, None, 1, 100000])
def test_accepted_max_tokens(value):
    validate(body(max_tokens=value, max_completion_tokens=value), "chat_completions")


@pytest.mark.parametrize(
    "value, fragment",
    [
        (2.5, "greater than the maximum of 2"),
        (-0.1, "less than the minimum of 0"),
        ("hot", "is not of type 'number', 'null'"),
        (True, "is not of type 'number', 'null'"),
        ([1], "is not of type 'number', 'null'"),
    ],
)
def test_bad_temperature(value, fragment):
    error = refused(body(temperature=value))
    assert error.param == "temperature"
    assert fragment in error.message
    assert error.message.startswith("Invalid request at 'temperature': ")


@pytest.mark.parametrize("value", [0, 0.0, 1, 2, 2.0, None])
def test_accepted_temperature(value):
    validate(body(temperature=value), "chat_completions")


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_p", 1.5),
        ("top_k", -1),
        ("top_k", 40.5),
        ("top_k", 40.0),  # an integer field: a float would reach llama.cpp's ctypes and fail with a 500
        ("seed", 1.0),
        ("min_p", 2),
        ("repeat_penalty", 11),
        ("presence_penalty", -2.5),
        ("frequency_penalty", 3),
        ("n", 0),
        ("stream", "yes"),
        ("stream_options", "yes"),
        ("model", 5),
        ("user", 5),
    ],
)
def test_other_bad_fields(field, value):
    assert refused(body(**{field: value})).param == field


def test_stream_options_include_usage_must_be_boolean():
    assert refused(body(stream_options={"include_usage": "yes"})).param == "stream_options.include_usage"


def test_stop_with_five_items():
    error = refused(body(stop=["a", "b", "c", "d", "e"]))
    assert error.param == "stop"
    assert "is too long" in error.message


def test_empty_stop_string():
    assert refused(body(stop="")).param == "stop"
    assert refused(body(stop=["a", ""])).param == "stop.1"


def test_stop_of_wrong_type():
    assert refused(body(stop=5)).param == "stop"
    assert refused(body(stop=["a", 5])).param == "stop.1"


@pytest.mark.parametrize(
    "doc",
    [
        body(unknown_field=1, another={"nested": [1, 2]}),  # clients send extra fields
        body(max_tokens=-1),
        body(max_tokens=None),
        body(stop="###"),
        body(stop=["a", "b", "c", "d"]),
        body(stop=None),
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
        {"messages": [USER, {"role": "assistant", "content": None}]},
        {"messages": [USER, {"role": "assistant"}]},
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
        {"messages": [{"role": "developer", "content": "be brief"}, USER]},
        {"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]},
        {"messages": [USER], "model": None, "stream": None, "stream_options": None, "n": 1, "seed": -1},
        body(stream=True, stream_options={"include_usage": True}),
    ],
)
def test_accepted(doc):
    validate(doc, "chat_completions")
    assert first_error(doc, "chat_completions") is None


def test_first_error_reports_the_shallowest_problem():
    # two problems: max_tokens (depth 1) and messages.0.role (depth 3)
    param, _ = first_error({"messages": [{"role": "x", "content": "y"}], "max_tokens": 0}, "chat_completions")
    assert param == "max_tokens"


def test_long_messages_are_shortened():
    error = refused(body(temperature="x" * 1000))
    assert len(error.message) < 400
    assert error.message.endswith("...")


def test_validator_is_cached_and_schema_is_valid():
    assert validator("chat_completions") is validator("chat_completions")
    assert validator("config") is not validator("chat_completions")


def test_config_schema_integers_are_strict():
    assert first_error({"port": 8000.0}, "config") == ("port", "8000.0 is not of type 'integer'")
    assert first_error({"port": True}, "config") == ("port", "True is not of type 'integer'")
    assert first_error({"port": 8000}, "config") is None


def test_definitions_are_inlined_so_validation_does_not_resolve_refs_per_request():
    import json

    for name in ("chat_completions", "completions", "config"):
        schema = dict(validator(name).schema)
        schema.pop("$defs", None)
        assert "$ref" not in json.dumps(schema), name
    assert (
        first_error(
            body(messages=[USER, {"role": "user", "content": [{"type": "text", "text": 5}]}]), "chat_completions"
        )[0]
        == "messages.1.content.0.text"
    )


def test_a_recursive_definition_keeps_its_ref():
    from jsonschema import Draft202012Validator

    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}}
    schema = {"type": "object", "properties": {"root": {"$ref": "#/$defs/tree"}}, "$defs": {"tree": tree}}
    inlined = inline_refs(schema, schema["$defs"])
    assert inlined["properties"]["root"]["properties"]["kids"]["items"] == {"$ref": "#/$defs/tree"}
    checker = Draft202012Validator(inlined)
    assert checker.is_valid({"root": {"kids": [{"kids": [{"kids": []}]}]}})
    assert not checker.is_valid({"root": {"kids": [{"kids": [{"kids": 3}]}]}})
