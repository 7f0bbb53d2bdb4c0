"""The one generation loop through the real application over a FakeEngine: SSE framing, streamed
equals plain, errors after the 200, tool calls, stop strings, usage, logprobs, echo, disconnects,
and the official openai client. No llama.cpp, no daemon."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import openai
import pytest
from http_helpers import chat, request, sse_events
from inprocess import InProcessServer

from ggufd.engine.fake import FakeEngine
from ggufd.errors import ApiError

HELLO = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}
PIECES = ["Hel", "lo", ", wor", "ld", "!"]
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def server():
    with InProcessServer(FakeEngine(reply=lambda request: list(PIECES))) as server:
        yield server


def prompt_tokens(server) -> int:
    """What the fake engine counted for the last request's rendered prompt (one token per word)."""
    return len(server.engine.requests[-1].prompt.text.split())


def streamed(server, body: dict) -> tuple[dict, list]:
    status, headers, raw = chat(server.url, {**body, "stream": True})
    assert status == 200, raw
    return headers, sse_events(raw)


def test_stream_framing(server):
    headers, events = streamed(server, {**HELLO, "stream_options": {"include_usage": True}})
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["id"].startswith("chatcmpl-") for c in chunks)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1 and finishes[0]["choices"][0]["finish_reason"] == "stop"
    n = prompt_tokens(server)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": n,
        "completion_tokens": 5,
        "total_tokens": n + 5,
    }
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello, world!"


def test_no_usage_chunk_unless_asked(server):
    _, events = streamed(server, HELLO)
    assert all("usage" not in c and c["choices"] for c in events[:-1])


def test_streamed_text_equals_plain_text(server):
    _, events = streamed(server, HELLO)
    status, _, raw = chat(server.url, HELLO)
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world!"}
    assert doc["choices"][0]["finish_reason"] == "stop"
    n = prompt_tokens(server)
    assert doc["usage"] == {"prompt_tokens": n, "completion_tokens": 5, "total_tokens": n + 5}
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
        == doc["choices"][0]["message"]["content"]
    )


def test_max_tokens_ends_with_length(server):
    doc = json.loads(chat(server.url, {**HELLO, "max_tokens": 2})[2])
    assert doc["choices"][0]["message"]["content"] == "Hello" and doc["choices"][0]["finish_reason"] == "length"


def test_stop_string_is_not_in_the_answer(server):
    doc = json.loads(chat(server.url, {**HELLO, "stop": ["wor"]})[2])
    assert doc["choices"][0]["message"]["content"] == "Hello, "


def test_request_goes_to_the_engine_with_the_formats_fields(server):
    chat(server.url, {**HELLO, "temperature": 0.3, "seed": 7, "max_tokens": 9, "stop": "x", "logit_bias": {"5": -100}})
    sent = server.engine.requests[-1]
    assert (sent.sampling.temperature, sent.sampling.seed, sent.max_tokens, sent.sampling.logit_bias) == (
        0.3,
        7,
        9,
        ((5, -100.0),),
    )
    assert sent.stop[0] == "x" and sent.stream is False
    assert "Hi" in sent.prompt.text


def test_failure_after_the_200_is_one_error_event_and_the_stream_ends():
    engine = FakeEngine(
        reply=lambda request: list(PIECES),
        fail_after=2,
        fail_with=ApiError(500, "The model failed.", type="server_error"),
    )
    with InProcessServer(engine) as server:
        status, _, raw = chat(server.url, {**HELLO, "stream": True})
    events = sse_events(raw)
    assert status == 200
    assert events[-1] == {
        "error": {"message": "The model failed.", "type": "server_error", "param": None, "code": None}
    }
    assert "[DONE]" not in events
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1]) == "Hello"


def test_an_answer_that_is_a_tool_call_becomes_tool_calls():
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    with InProcessServer(FakeEngine(reply=lambda request: [call[:10], call[10:]])) as server:
        body = {**HELLO, "tools": [WEATHER]}
        doc = json.loads(chat(server.url, body)[2])
        _, events = streamed(server, body)
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (called,) = choice["message"]["tool_calls"]
    assert called["type"] == "function" and called["function"]["name"] == "get_weather"
    assert json.loads(called["function"]["arguments"]) == {"city": "Paris"}
    deltas = [c["choices"][0]["delta"] for c in events[:-1]]
    assert not any(d.get("content") for d in deltas)  # the call's text never leaks as content
    headers = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert [h["function"]["name"] for h in headers] == ["get_weather"]
    arguments = "".join(d["tool_calls"][0]["function"].get("arguments", "") for d in deltas if "tool_calls" in d)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"][0]["finish_reason"]] == ["tool_calls"]


def test_text_with_tools_offered_streams_token_by_token(server):
    _, events = streamed(server, {**HELLO, "tools": [WEATHER]})
    contents = [c["choices"][0]["delta"]["content"] for c in events[:-1] if c["choices"][0]["delta"].get("content")]
    assert contents == PIECES  # as generated: nothing held back, since no call syntax began
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_in_chat_and_stream(server):
    doc = json.loads(chat(server.url, {**HELLO, "logprobs": True, "top_logprobs": 2})[2])
    content = doc["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == PIECES and len(content[0]["top_logprobs"]) == 2
    _, events = streamed(server, {**HELLO, "logprobs": True})
    tokens = [
        e["token"] for c in events[:-1] if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert tokens == PIECES


def test_text_completions_stream_and_echo(server):
    body = {"model": "fake", "prompt": "Say:", "echo": True, "logprobs": 1}
    status, _, raw = request(server.url, "POST", "/v1/completions", body)
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "text_completion" and doc["id"].startswith("cmpl-")
    assert doc["choices"][0]["text"] == "Say:Hello, world!"
    assert doc["choices"][0]["logprobs"]["text_offset"][0] == len("Say:")
    status, headers, raw = request(
        server.url, "POST", "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = sse_events(raw)
    assert headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Say:Hello, world!"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "stop"
    ]
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_the_official_openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert (
        client.chat.completions.create(model="fake-alias", messages=HELLO["messages"]).choices[0].message.content
        == "Hello, world!"
    )
    stream = client.chat.completions.create(model="fake", messages=HELLO["messages"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello, world!"
    assert client.completions.create(model="fake", prompt="x").choices[0].text == "Hello, world!"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=HELLO["messages"])
    assert err.value.code == "model_not_found"
    models = client.models.list()
    assert [m.id for m in models.data] == ["fake", "embedder"]
    assert models.data[0].model_extra["context_length"] == models.data[0].model_extra["max_model_len"] == 2048
    assert models.data[0].model_extra["capabilities"]["training_context_length"] == 4096


def test_embeddings_and_tokenize_go_through_the_engine_contract():
    engine = FakeEngine(embedding_models=frozenset({"embedder"}))
    with InProcessServer(engine) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        result = client.embeddings.create(model="embedder", input=["a", "bcd"])
        assert [d.embedding for d in result.data] == [[1.0, 1.0, 0.0], [1.0, 3.0, 0.0]]
        doc = json.loads(request(server.url, "POST", "/extras/tokenize", {"model": "fake", "input": "ab cde"})[2])
        assert doc == {"tokens": [1, 2, 3], "count": 3}
        doc = json.loads(request(server.url, "POST", "/extras/detokenize", {"model": "fake", "tokens": [2, 1]})[2])
        assert doc == {"text": "xx x"}


def test_a_client_that_disconnects_cancels_its_generation():
    engine = FakeEngine(reply=lambda request: ["tok "] * 10_000, delay=0.01)
    with InProcessServer(engine) as server:
        parts = urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps({**HELLO, "stream": True}),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200
        response.read1(64)  # the stream has started
        conn.close()
        for _ in range(500):  # the generation stops within a token: wait for the engine to see it
            if engine.cancelled:
                break
            time.sleep(0.01)
        assert engine.cancelled == 1 and engine.pending() == 0


def test_the_official_client_without_v1_in_its_base_url(server):
    """llama.cpp's server serves the OpenAI routes without /v1 too; clients configured that way work."""
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="fake", messages=HELLO["messages"]).choices[0].message.content == (
        "Hello, world!"
    )
    stream = client.chat.completions.create(model="fake", messages=HELLO["messages"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello, world!"
    assert client.completions.create(model="fake", prompt="x").choices[0].text == "Hello, world!"
    assert [m.id for m in client.models.list().data] == ["fake", "embedder"]
    assert client.models.retrieve("fake").id == "fake"
