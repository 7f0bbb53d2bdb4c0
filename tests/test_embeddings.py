"""POST /v1/embeddings with the official client: an embedding model, and refusals."""

from __future__ import annotations

import base64
import json
import math
import shutil
import struct

import openai
import pytest
from http_helpers import chat, error_of, request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tiny_model, tmp_path_factory):
    from conftest import Daemon, write_config

    folder = tmp_path_factory.mktemp("embed")
    shutil.copy(tiny_model, folder / "chat.gguf")
    shutil.copy(tiny_model, folder / "embed.gguf")
    config = write_config(
        folder / "ggufd.toml",
        {"models_dir": str(folder), "llama": {"n_ctx": 256, "n_threads": 1}, "models": {"embed": {"embedding": True}}},
    )
    d = Daemon(config).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def client(daemon):
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_unit_vectors_and_deterministic(client):
    response = client.embeddings.create(model="embed", input=["hello world", "hello world", "the weather in Paris"])
    vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == [0, 1, 2] and response.object == "list" and response.model == "embed"
    assert all(len(v) == 64 for v in vectors)  # the tiny model's width
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[1] and cosine(vectors[0], vectors[2]) < 0.9999
    assert response.usage.prompt_tokens == response.usage.total_tokens > 0


def test_a_single_string_and_token_ids(client, tiny_model):
    import llama_cpp

    text = "hello world"
    tokens = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False).tokenize(text.encode(), add_bos=True)
    one = client.embeddings.create(model="embed", input=text).data[0].embedding
    by_tokens = client.embeddings.create(model="embed", input=tokens).data[0].embedding
    assert one == by_tokens
    assert len(client.embeddings.create(model="embed", input=[tokens, tokens]).data) == 2


def test_base64_encoding(daemon):
    status, _, body = request(
        daemon.url, "POST", "/v1/embeddings", {"model": "embed", "input": "hello", "encoding_format": "base64"}
    )
    plain = json.loads(request(daemon.url, "POST", "/v1/embeddings", {"model": "embed", "input": "hello"})[2])["data"][
        0
    ]["embedding"]
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert status == 200 and all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, plain, strict=True)
    )


def test_chat_model_refuses_embeddings_and_embedding_model_refuses_chat(daemon):
    status, _, _ = response = request(daemon.url, "POST", "/v1/embeddings", {"model": "chat", "input": "hi"})
    assert status == 400 and error_of(response)["code"] == "wrong_model_type"
    status, _, _ = response = chat(daemon.url, {"model": "embed", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and error_of(response)["code"] == "wrong_model_type"
    capabilities = json.loads(request(daemon.url, path="/v1/models/embed")[2])["capabilities"]
    assert capabilities["embeddings"] is True and capabilities["chat"] is False and capabilities["parallel"] == 1


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "embed"}, "input"),
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": []}, "input"),
        ({"model": "embed", "input": "x", "dimensions": 8}, "dimensions"),
        ({"model": "embed", "input": "x " * 400}, "input"),
        ({"model": "embed", "input": [99999999]}, "input"),
    ],
)
def test_bad_embedding_requests_are_400(daemon, body, param):
    status, _, _ = response = request(daemon.url, "POST", "/v1/embeddings", body)
    assert status == 400 and error_of(response)["param"] == param
