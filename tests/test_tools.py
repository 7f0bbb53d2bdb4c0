"""Tool calling: tools/tool_choice through the official client on the tiny model, and the parsers."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from ggufd.errors import InvalidRequest
from ggufd.protocol.tools import call_schema, parse_generic, tool_policy

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Berlin"]},
                "unit": {"enum": ["C", "F"]},
                "tomorrow": {"type": "boolean"},
            },
            "required": ["city", "unit", "tomorrow"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    """The tool descriptions are long in the tiny model's small vocabulary: a 2k context."""
    import shutil

    from conftest import Daemon, write_config

    folder = tmp_path_factory.mktemp("tools")
    shutil.copy(tiny_model, folder / "tiny.gguf")
    config = write_config(folder / "ggufd.toml", {"models_dir": str(folder), "llama": {"n_ctx": 2048, "n_threads": 1}})
    daemon = Daemon(config).start()
    yield openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
    daemon.stop()


def schema_of(name: str) -> dict:
    return {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]


@pytest.mark.e2e
@pytest.mark.parametrize("seed", range(3))
def test_named_tool_choice_always_yields_a_valid_call(client, seed):
    response = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        tools=[WEATHER, TIME],
        max_tokens=120,
        temperature=1.0,
        seed=seed,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,  # exactly one call, by the grammar
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), schema_of("get_weather"))


@pytest.mark.e2e
def test_required_calls_one_of_the_tools(client):
    for seed in range(3):
        response = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            tools=[WEATHER, TIME],
            tool_choice="required",
            max_tokens=120,
            temperature=1.0,
            seed=seed,
            parallel_tool_calls=False,
        )
        (call,) = response.choices[0].message.tool_calls
        assert call.function.name in ("get_weather", "get_time")
        jsonschema.validate(json.loads(call.function.arguments), schema_of(call.function.name))


@pytest.mark.e2e
def test_required_with_parallel_calls_gives_one_or_more_valid_calls(client):
    answered = 0
    for seed in range(3):
        response = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            tools=[WEATHER, TIME],
            tool_choice="required",
            max_tokens=200,
            temperature=1.0,
            seed=seed,
        )
        choice = response.choices[0]
        if choice.finish_reason == "length":
            continue  # a list cut short by max_tokens is no call
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), schema_of(call.function.name))
        assert len({call.id for call in choice.message.tool_calls}) == len(choice.message.tool_calls)
        answered += 1
    assert answered, "every answer ran out of tokens"


@pytest.mark.e2e
def test_text_streams_while_tools_are_offered(client):
    """The real daemon and model: a text answer with tools offered streams as content and equals the plain
    answer. (That it arrives token by token, before the end, is proven without timing in-process:
    tests/api/test_agent_clients.py holds the engine until the first piece was received.)"""
    kwargs = dict(model="tiny", messages=MESSAGES, tools=[WEATHER, TIME], max_tokens=16, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0].message
    assert plain.tool_calls is None and plain.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents and "".join(contents) == plain.content
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


@pytest.mark.e2e
def test_streamed_tool_calls_arrive_as_openai_deltas(client):
    kwargs = dict(
        model="tiny", messages=MESSAGES, tools=[WEATHER], tool_choice="required", max_tokens=120, temperature=0
    )
    plain = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert calls[0].id and calls[0].function.name == "get_weather" and calls[0].type == "function"
    assert "".join(c.function.arguments or "" for c in calls) == plain.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert not any(d.content for d in deltas)


@pytest.mark.e2e
def test_auto_without_a_call_is_plain_content(client):
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=[WEATHER], max_tokens=12, temperature=0
    )
    choice = response.choices[0]
    assert choice.message.tool_calls is None and choice.message.content and choice.finish_reason == "length"


@pytest.mark.e2e
def test_tool_results_in_the_history_are_accepted(client):
    history = MESSAGES + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "C", "tomorrow": false}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    response = client.chat.completions.create(
        model="tiny", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=5, temperature=0
    )
    assert response.choices[0].message.content and response.choices[0].message.tool_calls is None


def test_generic_parser():
    names = ["get_weather"]
    call = parse_generic('{"name": "get_weather", "arguments": {"city": "Paris"}}', names)[0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert (
        parse_generic('```json\n{"name": "get_weather", "parameters": {"city": "Berlin"}}\n```', names)[0]["function"][
            "arguments"
        ]
        == '{"city": "Berlin"}'
    )
    assert (
        len(
            parse_generic(
                '[{"name": "get_weather", "arguments": {}}, {"name": "get_weather", "arguments": "{}"}]', names
            )
        )
        == 2
    )
    for text in (
        "It is sunny.",
        '{"name": "other", "arguments": {}}',
        '{"name": "get_weather", "arguments": [1]}',
        '{"name": "get_weather"',
        "",
    ):
        assert parse_generic(text, names) is None


def named_body() -> dict:
    return {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}


def test_tool_policy_and_call_schema():
    assert tool_policy({}) is None
    assert tool_policy({"tools": [WEATHER], "tool_choice": "none"}) is None
    assert tool_policy({"tools": [WEATHER]}).choice == "auto"
    named = tool_policy(
        {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}
    )
    one, several = call_schema(named)["anyOf"]  # parallel_tool_calls (default true): one call or a list
    assert named.choice == "named" and one["properties"]["name"] == {"const": "get_time"}
    assert several == {"type": "array", "items": one, "minItems": 1}
    single = tool_policy({**named_body(), "parallel_tool_calls": False})
    assert not single.parallel and call_schema(single)["properties"]["name"] == {"const": "get_time"}
    required = tool_policy({"tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False})
    assert len(call_schema(required)["anyOf"]) == 2
    with pytest.raises(InvalidRequest):
        tool_policy({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}})
