"""Agent-grade chat through the real application over a FakeEngine, with a test family plugin that
renders tools in its own syntax, streams call arguments and reasons in ``<think>``: text streams
beside tools, calls arrive as deltas, streamed equals plain, ``parallel_tool_calls: false``, the
reasoning controls and ``X-Ggufd-Ignored``."""

from __future__ import annotations

import json
import textwrap

import pytest
from http_helpers import chat, sse_events
from inprocess import InProcessServer, fake_model, registry_of

from ggufd.engine.fake import FakeEngine

PLUGIN = textwrap.dedent(
    '''
    """A family for the tests: <role>text turns, tools listed natively, <tool_call> JSON calls, <think>."""
    import ggufd

    FAMILY = "agent-test"

    @ggufd.hookimpl
    def format_chat(model, messages, tools, template_kwargs):
        if model.family != FAMILY:
            return None
        thinks = template_kwargs.get("enable_thinking", True) and template_kwargs.get("reasoning_effort") != "none"
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        if tools:
            text += "<tools>" + ",".join(t["function"]["name"] for t in tools)
        text += "<assistant>" + ("<think>" if thinks else "")
        honoured = frozenset(k for k in ("enable_thinking", "reasoning_effort") if k in template_kwargs)
        reasoning = ggufd.ReasoningSyntax("<think>", "</think>", opened=True) if thinks else None
        return ggufd.ChatPrompt(text, tools_rendered=bool(tools), honoured=honoured, reasoning=reasoning)

    @ggufd.hookimpl
    def answer_filter(model, prompt):
        if model.family == FAMILY and prompt.reasoning is not None:
            return ggufd.ReasoningFilter(prompt.reasoning)
        return None

    @ggufd.hookimpl
    def tool_call_openers(model):
        return ["<tool_call>"] if model.family == FAMILY else None

    @ggufd.hookimpl
    def tool_call_stream(model, tools):
        if model.family != FAMILY:
            return None
        return ggufd.MarkedCalls("<tool_call>", "</tool_call>", ggufd.json_call_block, [t["function"]["name"] for t in tools])
    '''
)
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
REASONING = ["Think", "ing.", "</think>", "\n\n"]
TEXT = ["Let", " me", " check", ".", "\n\n"]
CALL = ["<tool_call>", '\n{"name": "get_weather", ', '"arguments": {"city": ', '"Paris"', "}}\n", "</tool_call>"]
SECOND_CALL = ["\n<tool_call>", '{"name": "get_time", "arguments": {}}', "</tool_call>"]


def script(request) -> list[str]:
    """The model's answers: text when no tools are offered, else text then one call (two when asked)."""
    thinking = REASONING if request.prompt.text.endswith("<think>") else []
    if "<tools>" not in request.prompt.text:
        return [*thinking, "Just", " text", "."]
    calls = [*CALL, *SECOND_CALL] if "two calls" in request.prompt.text else CALL
    return [*thinking, *TEXT, *calls]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "agent_test.py").write_text(PLUGIN)
    registry = registry_of(fake_model("agent", family="agent-test"), fake_model("plain"))
    with InProcessServer(FakeEngine(reply=script), registry=registry, plugins_dir=plugins) as server:
        yield server


def body(content: str = "Weather in Paris?", **extra) -> dict:
    return {"model": "agent", "messages": [{"role": "user", "content": content}], "tools": [WEATHER, TIME], **extra}


def streamed(server, request: dict) -> tuple[dict, list[dict]]:
    status, headers, raw = chat(server.url, {**request, "stream": True})
    assert status == 200
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    return headers, events[:-1]


def deltas(events: list[dict]) -> list[dict]:
    return [e["choices"][0]["delta"] for e in events if e["choices"]]


def calls_of(events: list[dict]) -> list[dict]:
    """The streamed tool calls put together the way clients do (by index)."""
    calls: dict[int, dict] = {}
    for delta in deltas(events):
        for part in delta.get("tool_calls", ()):
            call = calls.setdefault(part["index"], {"id": None, "name": None, "arguments": ""})
            if "id" in part:
                call.update(id=part["id"], name=part["function"]["name"])
            call["arguments"] += part["function"].get("arguments", "")
    return [calls[i] for i in sorted(calls)]


def test_text_streams_then_the_call_arguments_as_written(server):
    _, events = streamed(server, body())
    parts = deltas(events)
    contents = [d["content"] for d in parts if d.get("content")]
    assert contents == ["Let", " me", " check", "."]  # token by token, the blank line before the call dropped
    first_call = next(i for i, d in enumerate(parts) if d.get("tool_calls"))
    assert all("tool_calls" not in d for d in parts[:first_call]) and parts[first_call - 1]["content"] == "."
    fragments = [p["function"]["arguments"] for d in parts for p in d.get("tool_calls", ()) if "id" not in p]
    assert len(fragments) >= 3 and json.loads("".join(fragments)) == {"city": "Paris"}
    (call,) = calls_of(events)
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert "".join(d.get("reasoning_content", "") for d in parts) == "Thinking."
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]] == ["tool_calls"]


def test_the_joined_stream_equals_the_plain_answer(server):
    for request in (
        body(),
        body("two calls please"),
        body(tools=None),
        body(chat_template_kwargs={"enable_thinking": False}),
    ):
        request = {k: v for k, v in request.items() if v is not None}
        _, events = streamed(server, request)
        message = json.loads(chat(server.url, request)[2])["choices"][0]["message"]
        parts = deltas(events)
        assert "".join(d.get("content") or "" for d in parts) == (message["content"] or "")
        assert "".join(d.get("reasoning_content", "") for d in parts) == message.get("reasoning_content", "")
        plain_calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in message.get("tool_calls") or ()
        ]
        assert [{"name": c["name"], "arguments": c["arguments"]} for c in calls_of(events)] == plain_calls


def test_a_plain_answer_keeps_its_text_beside_the_call(server):
    doc = json.loads(chat(server.url, body())[2])
    message = doc["choices"][0]["message"]
    assert message["content"] == "Let me check." and message["reasoning_content"] == "Thinking."
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert doc["choices"][0]["finish_reason"] == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call(server):
    for stream in (False, True):
        request = body("two calls please", parallel_tool_calls=False)
        if stream:
            _, events = streamed(server, request)
            names = [c["name"] for c in calls_of(events)]
        else:
            names = [
                c["function"]["name"]
                for c in json.loads(chat(server.url, request)[2])["choices"][0]["message"]["tool_calls"]
            ]
        assert names == ["get_weather"]
    both = json.loads(chat(server.url, body("two calls please"))[2])["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in both] == ["get_weather", "get_time"]


def test_tools_reach_the_family_and_no_generic_instruction_is_added(server):
    chat(server.url, body())
    prompt = server.engine.requests[-1].prompt
    assert prompt.tools_rendered and "<tools>get_weather,get_time" in prompt.text
    assert "You can call these functions" not in prompt.text


def test_a_forced_call_uses_the_generic_instruction_and_grammar(server):
    chat(server.url, body(tool_choice="required"))
    request = server.engine.requests[-1]
    assert "You can call these functions" in request.prompt.text and "<tools>" not in request.prompt.text
    assert request.sampling.grammar is not None


def test_ignored_fields_are_named_in_a_header(server):
    status, headers, _ = chat(
        server.url,
        body(
            user="u1",
            metadata={"a": "b"},
            reasoning_effort="low",
            chat_template_kwargs={"enable_thinking": True, "x": 1},
        ),
    )
    assert status == 200
    assert headers["x-ggufd-ignored"] == "chat_template_kwargs.x, metadata, user"
    # the same controls on a model that does not reason and a template that reads none of them
    status, headers, _ = chat(
        server.url,
        {
            **body(reasoning_effort="low", max_reasoning_tokens=5, chat_template_kwargs={"enable_thinking": True}),
            "model": "plain",
            "tools": None,
        },
    )
    assert headers["x-ggufd-ignored"] == "chat_template_kwargs.enable_thinking, max_reasoning_tokens, reasoning_effort"
    status, headers, _ = chat(server.url, body(parallel_tool_calls=False, tools=None))
    assert headers["x-ggufd-ignored"] == "parallel_tool_calls"  # no tools: nothing to call in parallel
    status, headers, _ = chat(server.url, body())
    assert "x-ggufd-ignored" not in headers


def test_chat_template_kwargs_and_reasoning_effort_reach_the_family(server):
    doc = json.loads(chat(server.url, body(tools=None, chat_template_kwargs={"enable_thinking": False}))[2])
    assert not server.engine.requests[-1].prompt.text.endswith("<think>")
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "Just text."}
    chat(server.url, body(tools=None, reasoning_effort="none"))
    assert server.engine.requests[-1].prompt.text.endswith("<assistant>")
    chat(server.url, body(tools=None))
    assert server.engine.requests[-1].prompt.text.endswith("<assistant><think>")


def test_the_reasoning_budget_reaches_the_engine_only_where_it_applies(server):
    chat(server.url, body(tools=None, max_reasoning_tokens=3))
    assert server.engine.requests[-1].max_reasoning_tokens == 3
    chat(
        server.url,
        body(tools=None, max_reasoning_tokens=3, chat_template_kwargs={"enable_thinking": False}),
    )
    assert server.engine.requests[-1].max_reasoning_tokens is None  # the model does not reason here
    chat(server.url, body(tools=None, max_reasoning_tokens=3, response_format={"type": "json_object"}))
    assert server.engine.requests[-1].max_reasoning_tokens is None  # a grammar: forced tokens could break it


def test_bad_reasoning_controls_are_400s(server):
    for bad in ({"reasoning_effort": "extreme"}, {"max_reasoning_tokens": -1}, {"chat_template_kwargs": [1]}):
        status, _, raw = chat(server.url, body(**bad))
        error = json.loads(raw)["error"]
        assert status == 400 and error["type"] == "invalid_request_error", bad


def test_a_spent_reasoning_budget_closes_the_reasoning_and_the_answer_follows(server):
    for stream in (False, True):
        request = body(tools=None, max_reasoning_tokens=1)
        if stream:
            _, events = streamed(server, request)
            parts = deltas(events)
            reasoning = "".join(d.get("reasoning_content", "") for d in parts)
            content = "".join(d.get("content") or "" for d in parts)
        else:
            message = json.loads(chat(server.url, request)[2])["choices"][0]["message"]
            reasoning, content = message["reasoning_content"], message["content"]
        assert (reasoning, content) == ("Think", "Just text.")  # cut after one token, then the answer


def test_the_familys_markup_reaches_the_engine(server):
    chat(server.url, body())
    markup = server.engine.requests[-1].markup
    assert {"<think>", "</think>", "<tool_call>"} <= set(markup)  # reasoning markers and openers
    chat(server.url, body(tools=None, chat_template_kwargs={"enable_thinking": False}))
    assert server.engine.requests[-1].markup == ()  # no reasoning, no tools: nothing to preserve
