"""Request limits and validation gaps (issue 24, part B), through the real application over a
FakeEngine: each array limit is a 400 ``limit_exceeded`` naming its config key; ``stream_options``
needs a stream; numeric bounds of a json_schema are enforced or refused; bad ``logit_bias`` ids
are named together; a path-like model id is never echoed; every SSE event matches the schema
``/openapi.json`` publishes for it."""

from __future__ import annotations

import json

import jsonschema
import pytest
from http_helpers import chat, error_of, request, sse_events
from inprocess import InProcessServer

from ggufd.api.openapi import openapi_document
from ggufd.engine.fake import FakeEngine
from ggufd.errors import InvalidRequest, ServerError
from ggufd.protocol.openai_chat import ChatOutput
from ggufd.protocol.structured_output import grammar_for

MSG = {"role": "user", "content": "hi"}
LIMITS = dict(max_messages=3, max_embedding_inputs=2, max_logit_bias=2, max_tools=2, max_content_parts=3)


@pytest.fixture(scope="module")
def server():
    with InProcessServer(FakeEngine(embedding_models=frozenset({"embedder"})), **LIMITS) as server:
        yield server


TOOL = {"type": "function", "function": {"name": "f"}}
PART = {"type": "text", "text": "a"}
OVER = {
    "max_messages": ("/v1/chat/completions", {"messages": [MSG] * 4}, "messages"),
    "max_logit_bias": (
        "/v1/chat/completions",
        {"messages": [MSG], "logit_bias": {"1": 1, "2": 1, "3": 1}},
        "logit_bias",
    ),
    "max_tools": ("/v1/chat/completions", {"messages": [MSG], "tools": [TOOL] * 3}, "tools"),
    "max_content_parts": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [PART] * 2}, {"role": "user", "content": [PART] * 2}]},
        "messages.1.content",
    ),
    "stop": ("/v1/completions", {"prompt": "x", "stop": ["a"] * 5}, "stop"),
    "max_embedding_inputs": ("/v1/embeddings", {"model": "embedder", "input": ["a", "b", "c"]}, "input"),
    "max_messages (tokenize)": ("/extras/tokenize", {"messages": [MSG] * 4}, "messages"),
}


@pytest.mark.parametrize("key", list(OVER))
def test_each_array_limit_is_a_400_naming_it(server, key):
    path, body, param = OVER[key]
    error = error_of(request(server.url, "POST", path, {"model": "fake", **body}))
    assert error["code"] == "limit_exceeded" and error["param"] == param, error
    assert key.split()[0] in error["message"], error


def test_arrays_at_their_limits_are_served(server):
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": [PART] * 3}, MSG, MSG],
        "logit_bias": {"1": 1, "2": 1},
        "tools": [TOOL] * 2,
        "stop": ["a"] * 4,
    }
    status, _, raw = chat(server.url, body)
    assert status == 200, raw
    status, _, raw = request(server.url, "POST", "/v1/embeddings", {"model": "embedder", "input": ["a", "b"]})
    assert status == 200, raw


def test_a_large_body_is_parsed_off_the_loop_with_the_same_answers(server):
    """Over 64 KiB the body is decoded and validated in a worker thread: same 200s and 400s."""
    long = {"role": "user", "content": "x" * 100_000}
    status, _, raw = chat(server.url, {"model": "fake", "messages": [long]})
    assert status == 200, raw
    error = error_of(chat(server.url, {"model": "fake", "messages": [long] * 4}))
    assert error["code"] == "limit_exceeded"
    error = error_of(chat(server.url, {"model": "fake", "messages": [long], "temperature": 9}))
    assert error["param"] == "temperature"
    error = error_of(chat(server.url, b'{"messages": [' + b'"x", ' * 20_000 + b"]"))
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_stream_options_need_a_stream(server, path):
    body = {"model": "fake", "messages": [MSG], "prompt": "x", "stream_options": {"include_usage": True}}
    error = error_of(request(server.url, "POST", path, body))
    assert error["param"] == "stream_options"
    status, _, raw = request(server.url, "POST", path, {**body, "stream": True})
    assert status == 200 and sse_events(raw)[-2]["usage"], raw


def test_a_path_like_model_id_is_never_echoed(server):
    for model in ("file:///etc/passwd", "C:\\models\\x", "~/models/x", "models/x.gguf", "../x"):
        error = error_of(chat(server.url, {"model": model, "messages": [MSG]}))
        assert error["code"] == "model_not_found"
        assert model not in error["message"] and "passwd" not in error["message"], error
    error = error_of(chat(server.url, {"model": "llama3.2:3b", "messages": [MSG]}))
    assert "'llama3.2:3b'" in error["message"]


# --- json_schema numeric bounds


def schema_format(properties: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": properties}}}


def test_a_small_integer_range_is_enforced_by_the_grammar():
    grammar = grammar_for(schema_format({"age": {"type": "integer", "minimum": 0, "maximum": 150}}))
    assert grammar is not None
    rule = next(line for line in grammar.splitlines() if line.startswith("age ::="))
    assert rule == "age ::= " + " | ".join(f'"{n}"' for n in range(151))
    grammar = grammar_for(schema_format({"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}}))
    assert grammar is not None and 'n ::= "1" | "2"' in grammar


def test_a_property_named_like_a_bound_is_no_bound():
    assert grammar_for(schema_format({"minimum": {"type": "integer"}, "maximum": {"type": "string"}}))


@pytest.mark.parametrize(
    "bounded",
    [
        {"type": "integer", "maximum": 150},
        {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "integer", "minimum": 0, "maximum": 10, "multipleOf": 2},
    ],
)
def test_bounds_the_grammar_cannot_enforce_are_refused(bounded):
    with pytest.raises(InvalidRequest) as caught:
        grammar_for(schema_format({"age": bounded}))
    assert "'/properties/age'" in caught.value.message
    assert caught.value.param == "response_format.json_schema.schema"


def test_an_unenforceable_bound_is_a_400_through_the_api(server):
    body = {
        "model": "fake",
        "messages": [MSG],
        "response_format": schema_format({"age": {"type": "integer", "maximum": 150}}),
    }
    error = error_of(chat(server.url, body))
    assert "maximum" in error["message"] and "/properties/age" in error["message"]


# --- logit_bias ids


def test_every_bad_logit_bias_id_is_named():
    pytest.importorskip("llama_cpp")
    from ggufd.engine.sampling import make_sampler
    from ggufd.types import SamplingParams

    bias = ((5, 1.0), (300, 1.0), (100, 1.0), (7, 1.0), (1000, -1.0))
    with pytest.raises(InvalidRequest) as caught:
        make_sampler(SamplingParams(logit_bias=bias), n_vocab=100)
    assert "100, 300, 1000" in caught.value.message and caught.value.param == "logit_bias"


# --- SSE events against /openapi.json


def event_validator(path: str):
    """The published per-event schema of ``path``'s stream, and a check of one event with it
    (``contentSchema`` is asserted here: jsonschema only annotates it)."""
    document = openapi_document()
    event = document["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    registry_root = {"components": document["components"]}

    def check(data: str) -> None:
        jsonschema.validate({"data": data}, {**event, **registry_root})
        if data != "[DONE]":
            content = event["properties"]["data"]["anyOf"][1]["contentSchema"]
            jsonschema.validate(json.loads(data), {**content, **registry_root})

    return check


def raw_events(raw: bytes) -> list[str]:
    return [block.removeprefix("data: ") for block in raw.decode().split("\n\n") if block]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_every_sse_event_matches_the_published_schema(path):
    check = event_validator(path)
    engine = FakeEngine(fail_after=1)
    body = {
        "model": "fake",
        "messages": [MSG],
        "prompt": "x",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with InProcessServer(FakeEngine()) as ok, InProcessServer(engine) as failing:
        for url in (ok.url, failing.url):
            status, _, raw = request(url, "POST", path, body)
            assert status == 200
            events = raw_events(raw)
            assert len(events) >= 2
            for data in events:
                check(data)
    assert '"error"' in events[-1]  # the failing stream ended with its error event, checked too
    with pytest.raises(jsonschema.ValidationError):
        check(json.dumps({"object": "chat.completion.chunk"}))


def test_the_error_event_alone_matches():
    event_validator("/v1/chat/completions")(ChatOutput("id", "m").error(ServerError()).decode()[6:-2])
