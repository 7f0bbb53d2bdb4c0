"""response_format (grammar-constrained JSON) and logit_bias, end to end on the tiny model."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from http_helpers import chat, error_of

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["happy", "sad"]}},
    "required": ["ok", "mood"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(tiny_daemon):
    return openai.OpenAI(base_url=tiny_daemon.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("seed", range(5))
def test_json_schema_output_parses_and_validates(client, seed):
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=100, temperature=1.0, seed=seed, response_format=response_format
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=100,
            temperature=1.0,
            seed=seed,
            response_format=response_format,
            stream=True,
        )
        if c.choices
    )
    assert streamed == choice.message.content


def test_json_object_output_is_an_object(client):
    finished = 0
    for seed in range(6):
        response = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=200,
            temperature=0.8,
            seed=seed,
            response_format={"type": "json_object"},
        )
        choice = response.choices[0]
        text = choice.message.content
        assert text.lstrip().startswith("{")
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
            finished += 1
    assert finished >= 1


def test_oversized_schema_is_refused_quickly(tiny_daemon):
    import time

    started = time.perf_counter()
    status, _, _ = response = chat(
        tiny_daemon.url,
        {
            "messages": MESSAGES,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1000000},
                },
            },
        },
    )
    assert status == 400 and error_of(response)["param"] == "response_format.json_schema.schema"
    assert time.perf_counter() - started < 1


def test_logit_bias_forces_and_bans_tokens(client, tiny_model):
    import llama_cpp

    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    forced = 400
    piece = vocab.detokenize([forced]).decode()
    text = (
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, logit_bias={str(forced): 100}
        )
        .choices[0]
        .message.content
    )
    assert text.strip() == (piece * 5).strip()

    plain = (
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1, temperature=0)
        .choices[0]
        .message.content
    )
    # ban every token that spells the greedy answer's first token on its own
    same = [t for t in range(vocab.n_vocab()) if vocab.detokenize([t]).decode("utf-8", "replace") == plain]
    assert same
    banned = (
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=1, temperature=0, logit_bias={str(t): -100 for t in same}
        )
        .choices[0]
        .message.content
    )
    assert banned != plain


def test_logit_bias_with_a_token_outside_the_vocabulary_is_400(tiny_daemon):
    status, _, _ = response = chat(tiny_daemon.url, {"messages": MESSAGES, "logit_bias": {"999999": 5}})
    assert status == 400 and error_of(response)["param"] == "logit_bias"
