"""/extras/tokenize, /extras/tokenize/count, /extras/detokenize and model capabilities."""

from __future__ import annotations

import json

import pytest
from http_helpers import chat, error_of, request

pytestmark = pytest.mark.e2e


def post(url, path, body):
    return request(url, "POST", path, body)


def test_tokenize_and_detokenize_round_trip(tiny_daemon, tiny_model):
    import llama_cpp

    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    text = "hello world, héllo 日本"
    doc = json.loads(post(tiny_daemon.url, "/extras/tokenize", {"input": text})[2])
    assert doc["tokens"] == vocab.tokenize(text.encode(), add_bos=True, special=True) and doc["count"] == len(
        doc["tokens"]
    )
    plain = json.loads(post(tiny_daemon.url, "/extras/tokenize", {"input": text, "add_special": False})[2])["tokens"]
    assert plain == doc["tokens"][1:]
    assert json.loads(post(tiny_daemon.url, "/extras/detokenize", {"tokens": plain})[2])["text"] == text
    assert json.loads(post(tiny_daemon.url, "/extras/tokenize/count", {"input": text})[2]) == {
        "count": len(doc["tokens"])
    }


def test_counting_a_chat_matches_the_request_usage(tiny_daemon):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count me."}]
    count = json.loads(post(tiny_daemon.url, "/extras/tokenize/count", {"messages": messages, "model": "tiny"})[2])[
        "count"
    ]
    usage = json.loads(chat(tiny_daemon.url, {"messages": messages, "max_tokens": 1})[2])["usage"]
    assert count == usage["prompt_tokens"]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/extras/tokenize", {}, "input"),
        ("/extras/tokenize", {"input": 5}, "input"),
        ("/extras/detokenize", {"tokens": [99999999]}, "tokens"),
        ("/extras/detokenize", {"tokens": [-1]}, "tokens.0"),
        ("/extras/detokenize", {}, "tokens"),
    ],
)
def test_bad_tokenize_requests_are_400(tiny_daemon, path, body, param):
    status, _, _ = response = post(tiny_daemon.url, path, body)
    assert status == 400 and error_of(response)["param"] == param


def test_models_report_their_capabilities(tiny_daemon):
    model = json.loads(request(tiny_daemon.url, path="/v1/models/tiny")[2])
    assert model["capabilities"] == {
        "chat": True,
        "completions": True,
        "embeddings": False,
        "tools": True,
        "json_schema": True,
        "logit_bias": True,
        "logprobs": True,
        "context_length": 512,
        "training_context_length": 2048,
        "parallel": 4,
    }


def test_models_report_the_context_a_request_may_use(tiny_daemon):
    """The top-level context_length (and vLLM's max_model_len) is the per-request context the
    daemon serves (n_ctx 512 here), not the model's training length (2048): clients size prompts by it."""
    model = json.loads(request(tiny_daemon.url, path="/v1/models/tiny")[2])
    listed = json.loads(request(tiny_daemon.url, path="/v1/models")[2])["data"][0]
    assert model["context_length"] == model["max_model_len"] == 512
    assert listed["context_length"] == listed["max_model_len"] == 512
    assert model["capabilities"]["training_context_length"] == 2048


def test_llama_server_tokenize_and_detokenize(tiny_daemon, tiny_model):
    """llama.cpp's shapes: no BOS by default; pieces are each token's own text (the real engine's
    ``token_pieces``), and their bytes put together are the text's."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    text = "hello world, héllo 日本"
    plain = json.loads(post(tiny_daemon.url, "/tokenize", {"content": text})[2])["tokens"]
    assert plain == vocab.tokenize(text.encode(), add_bos=False, special=True)
    with_bos = json.loads(post(tiny_daemon.url, "/tokenize", {"content": text, "add_special": True})[2])["tokens"]
    assert with_bos[1:] == plain and len(with_bos) == len(plain) + 1
    pieces = json.loads(post(tiny_daemon.url, "/tokenize", {"content": text, "with_pieces": True})[2])["tokens"]
    assert [p["id"] for p in pieces] == plain
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined.decode().strip() == text
    assert json.loads(post(tiny_daemon.url, "/detokenize", {"tokens": plain, "model": "tiny"})[2]) == {"content": text}


def test_llama_server_apply_template_matches_the_chat_usage(tiny_daemon):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count me."}]
    prompt = json.loads(post(tiny_daemon.url, "/apply-template", {"messages": messages})[2])["prompt"]
    assert "Count me." in prompt
    count = json.loads(post(tiny_daemon.url, "/extras/tokenize/count", {"input": prompt})[2])["count"]
    usage = json.loads(chat(tiny_daemon.url, {"messages": messages, "max_tokens": 1})[2])["usage"]
    assert count == usage["prompt_tokens"]
