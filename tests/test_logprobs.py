"""logprobs / top_logprobs on chat and text completions, plain and streamed."""

from __future__ import annotations

import math

import openai
import pytest
from http_helpers import chat, error_of

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(tiny_daemon):
    return openai.OpenAI(base_url=tiny_daemon.url + "/v1", api_key="unused", max_retries=0)


def test_chat_logprobs_describe_the_generated_tokens(client):
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = response.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == 8
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob
        # greedy decoding picks the most likely token
        assert math.isclose(entry.logprob, entry.top_logprobs[0].logprob, abs_tol=1e-6)
    assert sum(math.exp(t.logprob) for t in entries[0].top_logprobs) <= 1.0 + 1e-6


def test_streamed_logprobs_equal_plain_ones(client):
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    plain = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [
        e
        for c in client.chat.completions.create(stream=True, **kwargs)
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in plain]


def test_no_logprobs_unless_asked(client):
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3).choices[0].logprobs is None


def test_completion_logprobs(client):
    response = client.completions.create(model="tiny", prompt="Once", max_tokens=6, temperature=0, logprobs=2)
    lp = response.choices[0].logprobs
    assert "".join(lp.tokens) == response.choices[0].text and len(lp.token_logprobs) == 6
    assert all(len(top) <= 2 for top in lp.top_logprobs) and lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]


def test_top_logprobs_without_logprobs_is_400(tiny_daemon):
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, "top_logprobs": 2})
    assert status == 400 and error_of(response)["param"] == "top_logprobs"
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, "logprobs": True, "top_logprobs": 50})
    assert status == 400 and error_of(response)["param"] == "top_logprobs"
