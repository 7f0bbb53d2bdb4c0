"""End to end on the real demo model, gemma-3-270m Q4_K_M, whose GGUF has no chat template.

The gemma family plugin (ggufd/families/gemma.py) supplies the turn format. The model is a small
base model, so the question is asked few-shot; it answers "Paris".
"""

from __future__ import annotations

import openai
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.gemma]

FEW_SHOT = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "What is the capital of Germany?"},
    {"role": "assistant", "content": "Berlin"},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def gemma_daemon(gemma_model, tmp_path_factory):
    from conftest import Daemon, write_config

    folder = tmp_path_factory.mktemp("gemma")
    (folder / "models").mkdir()
    config = write_config(
        folder / "ggufd.toml",
        {
            "models_dir": "models",  # relative to the config file
            # flash attention off: the greedy continuations asserted below were observed with it off
            # (with it on, float rounding changes a near-tie 17 tokens in and the base model rambles on)
            "llama": {"n_ctx": 1024, "flash_attn": False},
            "models": {"gemma-3-270m-q4_k_m": {"path": str(gemma_model), "aliases": ["gemma"]}},
        },
    )
    daemon = Daemon(config).start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def client(gemma_daemon):
    return openai.OpenAI(base_url=gemma_daemon.url + "/v1", api_key="unused", max_retries=0)


def test_gemma_is_served_with_its_family(client):
    model = client.models.retrieve("gemma")
    assert model.id == "gemma-3-270m-q4_k_m"
    assert model.model_extra["family"] == "gemma"
    assert model.model_extra["context_length"] == model.model_extra["max_model_len"] == 1024  # what a request may use
    assert model.model_extra["capabilities"]["training_context_length"] == 32768


def test_gemma_answers_a_chat_question(client):
    response = client.chat.completions.create(model="gemma", messages=FEW_SHOT, max_tokens=8, temperature=0)
    content = response.choices[0].message.content
    assert content.startswith("Paris"), content
    assert "<end_of_turn>" not in content and "<start_of_turn>" not in content
    # system + 3 turns in gemma's format: 40 tokens (BOS, <start_of_turn>, role, ... <start_of_turn>model\n)
    assert response.usage.prompt_tokens == 40


def test_gemma_streaming_equals_non_streaming(client):
    kwargs = dict(model="gemma", messages=FEW_SHOT, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full
    assert chunks[-1].usage.completion_tokens <= 24


def test_gemma_requests_stop_at_the_turn_markers_and_never_leak_them(client, pm, gemma_model):
    """The gemma family's turn markers are stop strings of every gemma request, and no marker reaches
    the content, whether the answer stops or runs to its length. Whether greedy gemma-3-270m ends its
    turn within 64 tokens depends on the llama.cpp build's numerics, so that is not asked."""
    from ggufd.gguf_metadata import read_metadata
    from ggufd.types import ModelInfo, ModelSpec

    messages = [{"role": "user", "content": "Complete the sentence: The capital of France is"}]
    spec = ModelSpec(id="gemma-3-270m-q4_k_m", path=gemma_model)
    metadata = read_metadata(gemma_model)
    info = ModelInfo(spec=spec, metadata=metadata, family=pm.detect_family(metadata, spec))
    stops = pm.format_chat(info, messages).stop + pm.stop_sequences(info)  # what the request's stop list gets
    assert info.family == "gemma" and {"<end_of_turn>", "<start_of_turn>"} <= set(stops)

    response = client.chat.completions.create(model="gemma", messages=messages, max_tokens=64, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 64
    if choice.finish_reason == "length":
        assert response.usage.completion_tokens == 64
    for marker in set(stops):
        assert marker not in choice.message.content, choice.message.content


def test_health_and_models_answer_fast_while_a_model_loads(gemma_daemon, client):
    import threading
    import time

    from http_helpers import request

    assert request(gemma_daemon.url, "POST", "/admin/models/gemma/unload", body=b"")[0] == 200
    loader = threading.Thread(
        target=lambda: client.chat.completions.create(model="gemma", messages=FEW_SHOT, max_tokens=2)
    )
    loader.start()
    gemma_daemon.wait_for_log("loading model", model="gemma-3-270m-q4_k_m", timeout=10)
    timings = []
    while loader.is_alive() and len(timings) < 40:
        for path in ("/health", "/v1/models"):
            started = time.perf_counter()
            assert request(gemma_daemon.url, path=path)[0] == 200
            timings.append(time.perf_counter() - started)
    loader.join(60)
    assert timings and max(timings) < 0.1, timings
