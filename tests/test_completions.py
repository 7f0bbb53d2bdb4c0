"""POST /v1/completions (the legacy text completions API) end to end on the tiny model."""

from __future__ import annotations

import json

import openai
import pytest
from http_helpers import error_of, request, sse_events

pytestmark = pytest.mark.e2e

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def client(tiny_daemon):
    return openai.OpenAI(base_url=tiny_daemon.url + "/v1", api_key="unused", max_retries=0)


def post(url: str, body):
    return request(url, "POST", "/v1/completions", body)


def test_completion_shape_and_usage(client):
    response = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    assert response.object == "text_completion" and response.id.startswith("cmpl-")
    choice = response.choices[0]
    assert choice.text and choice.finish_reason == "length" and choice.index == 0
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_default_max_tokens_is_16_like_openai(client):
    assert client.completions.create(model="tiny", prompt=PROMPT, temperature=0).usage.completion_tokens == 16


def test_streaming_equals_plain_and_reports_usage(client):
    plain = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=PROMPT,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 40 and chunks[-1].choices == []
    assert len({c.id for c in chunks}) == 1


def test_raw_sse_format(tiny_daemon):
    status, headers, raw = post(tiny_daemon.url, {"prompt": PROMPT, "max_tokens": 5, "stream": True})
    events = sse_events(raw)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    assert all(
        e["object"] == "text_completion" and set(e["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
        for e in events[:-1]
    )


def test_echo_returns_the_prompt_first(client):
    plain = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    echoed = (
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, echo=True).choices[0].text
    )
    assert echoed == PROMPT + plain
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, echo=True, stream=True
        )
    )
    assert streamed == PROMPT + plain


def test_stop_strings_and_a_list_prompt(client):
    plain = client.completions.create(model="tiny", prompt=[PROMPT], max_tokens=40, temperature=0).choices[0].text
    stop = plain[10:13]
    stopped = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop])
    assert stopped.choices[0].text == plain[: plain.find(stop)] and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [[1, 2, 3]]}, "prompt"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "logprobs": 9}, "logprobs"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "temperature": 9}, "temperature"),
    ],
)
def test_bad_requests_are_400_with_param(tiny_daemon, body, param):
    status, _, _ = response = post(tiny_daemon.url, body)
    assert status == 400 and error_of(response)["param"] == param


def test_unknown_model_and_long_prompt(tiny_daemon):
    assert error_of(post(tiny_daemon.url, {"prompt": "x", "model": "nope"}))["code"] == "model_not_found"
    error = error_of(post(tiny_daemon.url, {"prompt": "hello " * 600, "max_tokens": 4}))
    assert error["code"] == "context_length_exceeded"


def test_the_prompt_is_not_chat_formatted(tiny_daemon):
    """The same text as a completion prompt uses fewer tokens than as a chat message (no turn markers)."""
    completion = json.loads(post(tiny_daemon.url, {"prompt": PROMPT, "max_tokens": 1})[2])["usage"]["prompt_tokens"]
    chat = json.loads(
        request(
            tiny_daemon.url,
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1},
        )[2]
    )
    assert completion < chat["usage"]["prompt_tokens"]
