"""End to end on the tiny model: the real daemon as a subprocess, the official openai client, raw HTTP and curl."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import openai
import pytest
from http_helpers import chat, error_of, request, sse_events

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello in French."}]


@pytest.fixture(scope="module")
def client(tiny_daemon):
    return openai.OpenAI(base_url=tiny_daemon.url + "/v1", api_key="unused", max_retries=0)


def complete(client, **kwargs):
    kwargs.setdefault("model", "tiny")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(**kwargs)


def stream_text(client, **kwargs):
    chunks = list(complete(client, stream=True, **kwargs))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


# --- discovery endpoints


def test_health_reports_models_and_default(tiny_daemon):
    status, headers, body = request(tiny_daemon.url, path="/health")
    doc = json.loads(body)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert doc["status"] == "ok"
    assert doc["default_model"] == "tiny"
    assert doc["models"] == ["tiny"]
    assert doc["version"]
    assert headers["x-request-id"]


def test_models_list_and_retrieve(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    model = models.data[0]
    assert model.object == "model" and model.owned_by == "local" and model.created > 0
    assert model.model_extra["root"].endswith("tiny.gguf")
    assert client.models.retrieve("tiny").id == "tiny"
    assert client.models.retrieve("tiny-alias").id == "tiny"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("name", ["../tiny", "/etc/passwd", "..%2Ftiny", "tiny.gguf", "%00tiny"])
def test_model_ids_never_become_paths(tiny_daemon, name):
    error = error_of(request(tiny_daemon.url, path=f"/v1/models/{name}"))
    assert error["code"] == "model_not_found"


# --- chat completions


def test_non_streaming_shape_and_usage(client):
    response = complete(client, max_tokens=16)
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    assert response.model == "tiny"
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 16
    assert response.usage.prompt_tokens > 10
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16


def test_streaming_shape(client):
    text, chunks = stream_text(client, max_tokens=12, stream_options={"include_usage": True})
    assert text
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {"tiny"}
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client):
    _, chunks = stream_text(client, max_tokens=5)
    assert all(c.choices for c in chunks)


def test_raw_sse_wire_format_with_curl(tiny_daemon):
    body = json.dumps({"model": "tiny", "messages": MESSAGES, "max_tokens": 8, "stream": True, "temperature": 0})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "-D",
            "-",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            tiny_daemon.url + "/v1/chat/completions",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    head, _, payload = out.partition(b"\r\n\r\n")
    head = head.decode().lower()
    assert "content-type: text/event-stream" in head and "cache-control: no-cache" in head
    assert "content-encoding" not in head
    events = sse_events(payload)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[0]["object"] == "chat.completion.chunk"
    assert sum(1 for e in events[:-1] if e["choices"][0]["finish_reason"]) == 1
    assert events[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


def test_curl_non_streaming(tiny_daemon):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    out = subprocess.run(
        ["curl", "-sS", "-H", "Content-Type: application/json", "-d", body, tiny_daemon.url + "/v1/chat/completions"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    doc = json.loads(out)
    assert doc["model"] == "tiny" and doc["usage"]["completion_tokens"] == 4  # no model -> default model


@pytest.mark.parametrize("max_tokens", [1, 7, 40, 120])
def test_stream_equals_non_stream_at_temperature_zero(client, max_tokens):
    full = complete(client, max_tokens=max_tokens).choices[0].message.content
    streamed, _ = stream_text(client, max_tokens=max_tokens)
    assert streamed == full


def test_max_tokens_unset_runs_to_end_of_context(client):
    response = complete(client, max_tokens=None)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.total_tokens == 512  # n_ctx of the tiny daemon
    assert complete(client, max_tokens=-1).usage.total_tokens == 512


def test_max_completion_tokens_is_accepted(client):
    assert complete(client, max_completion_tokens=3).usage.completion_tokens == 3


def test_content_as_text_parts(client):
    parts = [{"type": "text", "text": "Say hello "}, {"type": "text", "text": "in French."}]
    a = complete(
        client,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": parts}],
        max_tokens=10,
    )
    b = complete(client, max_tokens=10)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_seed_makes_sampling_repeatable(client):
    texts = {complete(client, temperature=1.0, seed=1234, max_tokens=30).choices[0].message.content for _ in range(2)}
    assert len(texts) == 1
    other = complete(client, temperature=1.0, seed=99, max_tokens=30).choices[0].message.content
    assert other not in texts


def test_stop_strings_across_token_boundaries(client):
    reference = complete(client, max_tokens=80).choices[0].message.content
    checked = 0
    for start in range(5, len(reference) - 6, 7):
        stop = reference[start : start + 3]
        if not stop.strip():
            continue
        expected = reference[: reference.find(stop)]
        response = complete(client, max_tokens=80, stop=[stop, "\x00never"])
        assert response.choices[0].message.content == expected
        assert response.choices[0].finish_reason == "stop"
        streamed, chunks = stream_text(client, max_tokens=80, stop=stop)
        assert streamed == expected
        assert all(stop not in (c.choices[0].delta.content or "") for c in chunks)
        checked += 1
    assert checked >= 5


def test_stream_is_always_valid_utf8(tiny_daemon):
    """Sampling at temperature 1 makes the tiny model emit lone byte tokens; the wire stays valid UTF-8."""
    saw_non_ascii = saw_replacement = 0
    for seed in range(12):
        body = {
            "messages": MESSAGES,
            "max_tokens": 120,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0,
            "seed": seed,
            "stream": True,
        }
        status, _, raw = chat(tiny_daemon.url, body)
        assert status == 200
        events = sse_events(raw)  # decodes strictly
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        text.encode("utf-8")
        saw_non_ascii += any(ord(ch) > 127 and ch != "\ufffd" for ch in text)
        saw_replacement += "\ufffd" in text
        non_stream = json.loads(chat(tiny_daemon.url, {**body, "stream": False})[2])
        assert non_stream["choices"][0]["message"]["content"] == text
    assert saw_non_ascii and saw_replacement


def test_eight_concurrent_requests_all_complete(client):
    expected = complete(client, max_tokens=64).choices[0].message.content
    results: dict[int, str] = {}
    errors: list = []

    def run(i: int) -> None:
        try:
            if i % 2:
                results[i] = stream_text(client, max_tokens=64)[0]
            else:
                results[i] = complete(client, max_tokens=64).choices[0].message.content
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {i: expected for i in range(8)}


def test_health_answers_fast_while_generating(tiny_daemon):
    body = {"messages": MESSAGES, "max_tokens": None, "temperature": 0}
    worker = threading.Thread(target=chat, args=(tiny_daemon.url, body))
    worker.start()
    try:
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            assert request(tiny_daemon.url, path="/health")[0] == 200
            timings.append(time.perf_counter() - started)
        assert sorted(timings)[len(timings) // 2] < 0.1
    finally:
        worker.join(60)


# --- errors (DESIGN.md section 3)


def test_malformed_json(tiny_daemon):
    error = error_of(chat(tiny_daemon.url, b"{not json"))
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"]


@pytest.mark.parametrize("body", [b"[]", b"3", b'"x"', b"null"])
def test_non_object_body(tiny_daemon, body):
    status, _, _ = response = chat(tiny_daemon.url, body)
    assert status == 400 and error_of(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "patch, param",
    [
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 5}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"n": 3}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content.0",
        ),
    ],
)
def test_bad_parameters_are_400_with_param(tiny_daemon, patch, param):
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, **patch})
    error = error_of(response)
    assert status == 400 and error["param"] == param and error["type"] == "invalid_request_error"


def test_missing_messages(tiny_daemon):
    status, _, _ = response = chat(tiny_daemon.url, {"model": "tiny"})
    assert status == 400 and error_of(response)["param"] == "messages"


def test_lone_surrogate_is_400(tiny_daemon):
    raw = b'{"messages": [{"role": "user", "content": "bad \\ud800 text"}]}'
    status, _, _ = response = chat(tiny_daemon.url, raw)
    assert status == 400 and error_of(response)["param"] == "messages.0.content"


def test_unknown_fields_are_ignored(tiny_daemon):
    status, _, body = chat(
        tiny_daemon.url,
        {"messages": MESSAGES, "max_tokens": 2, "user": "u1", "x_custom": {"a": 1}, "parallel_tool_calls": False},
    )
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        complete(client, model="no-such-model")
    assert err.value.code == "model_not_found"
    assert err.value.body["param"] == "model"


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_exceeded_before_first_byte(tiny_daemon, stream):
    long_text = "hello " * 600
    status, headers, _ = response = chat(
        tiny_daemon.url, {"messages": [{"role": "user", "content": long_text}], "stream": stream}
    )
    error = error_of(response)
    assert status == 400 and error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "512" in error["message"]


def test_prompt_plus_max_tokens_over_context(tiny_daemon):
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, "max_tokens": 600})
    error = error_of(response)
    assert status == 400 and error["code"] == "context_length_exceeded"


def test_wrong_content_type_is_415(tiny_daemon):
    status, _, _ = response = chat(
        tiny_daemon.url, b"messages=hi", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415 and "application/json" in error_of(response)["message"]


def test_unknown_path_and_wrong_method_are_json(tiny_daemon):
    status, _, _ = response = request(tiny_daemon.url, path="/v2/nothing")
    assert status == 404 and error_of(response)["code"] == "not_found"
    status, headers, _ = response = request(tiny_daemon.url, path="/v1/chat/completions")
    assert status == 405 and error_of(response)["type"] == "invalid_request_error"
    assert headers["allow"] == "POST, OPTIONS"


def test_errors_never_leak_paths_or_tracebacks(tiny_daemon):
    for response in (chat(tiny_daemon.url, b"{"), chat(tiny_daemon.url, {"messages": MESSAGES, "model": "../../etc"})):
        text = response[2].decode()
        assert "Traceback" not in text and "/tmp" not in text and ".gguf" not in text


def test_request_id_is_echoed_and_logged(tiny_daemon):
    status, headers, _ = chat(
        tiny_daemon.url, {"messages": MESSAGES, "max_tokens": 3}, headers={"X-Request-ID": "abc-123"}
    )
    assert status == 200 and headers["x-request-id"] == "abc-123"
    line = tiny_daemon.wait_for_log("request", request_id="abc-123")
    assert line["model"] == "tiny" and line["status"] == 200
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] == 3
    assert line["ttft_ms"] >= 0 and line["duration_ms"] >= line["ttft_ms"]
    assert line["finish_reason"] == "length"


def test_every_output_line_is_structured_json(tiny_daemon, client):
    complete(client, max_tokens=2)  # the model is loaded by now
    stray = [line for line in tiny_daemon.lines if not isinstance(line, dict)]
    assert stray == []
    assert tiny_daemon.logs("model loaded", model="tiny")
