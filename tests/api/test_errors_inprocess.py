"""Every client-visible error through the real application (make_app over a FakeEngine): status,
OpenAI error shape, param, headers. No llama.cpp, no daemon."""

from __future__ import annotations

import json

import pytest
from http_helpers import chat, error_of, request
from inprocess import InProcessServer

from ggufd.engine.fake import FakeEngine
from ggufd.errors import ApiError

HELLO = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def server():
    with InProcessServer(FakeEngine(embedding_models=frozenset({"embedder"})), max_body_bytes=4096) as server:
        yield server


def assert_openai_error(response, status: int, *, code=None, param=None, type_=None) -> dict:
    got_status, headers, raw = response
    assert got_status == status, raw
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(raw)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    error = doc["error"]
    assert error["message"] and "Traceback" not in error["message"] and "/nonexistent" not in error["message"]
    assert error["code"] == code and error["param"] == param
    assert error["type"] == (type_ or ("invalid_request_error" if status < 500 else "server_error"))
    return error


def test_malformed_json_is_a_400(server):
    assert_openai_error(chat(server.url, b"{nope"), 400)


def test_schema_violation_names_the_json_path(server):
    body = {"model": "fake", "messages": [{"role": "robot", "content": "x"}]}
    assert_openai_error(chat(server.url, body), 400, param="messages.0.role")


def test_out_of_range_number_names_the_field(server):
    assert_openai_error(chat(server.url, {**HELLO, "temperature": 7}), 400, param="temperature")


def test_unknown_model_is_a_404_model_not_found(server):
    assert_openai_error(chat(server.url, {**HELLO, "model": "nope"}), 404, code="model_not_found", param="model")


def test_unknown_path_is_a_json_404(server):
    assert_openai_error(request(server.url, path="/v2/whatever"), 404, code="not_found")


def test_wrong_method_is_a_405_with_allow(server):
    status, headers, _ = response = request(server.url, "DELETE", "/v1/chat/completions")
    assert_openai_error(response, 405)
    assert headers["allow"] == "POST, OPTIONS"


def test_body_too_large_is_a_413(server):
    assert_openai_error(chat(server.url, {**HELLO, "pad": "x" * 5000}), 413)


def test_wrong_content_type_is_a_415(server):
    assert_openai_error(chat(server.url, json.dumps(HELLO), headers={"Content-Type": "text/plain"}), 415)


def test_context_length_exceeded_is_a_400_before_the_stream(server):
    body = {**HELLO, "max_tokens": 4000, "stream": True}
    error = assert_openai_error(chat(server.url, body), 400, code="context_length_exceeded", param="messages")
    assert "maximum context length is 2048 tokens" in error["message"]


def test_an_embedding_model_on_the_chat_route_is_wrong_model_type(server):
    assert_openai_error(chat(server.url, {**HELLO, "model": "embedder"}), 400, code="wrong_model_type", param="model")


def test_a_chat_model_on_the_embeddings_route_is_wrong_model_type(server):
    response = request(server.url, "POST", "/v1/embeddings", {"model": "fake", "input": "x"})
    assert_openai_error(response, 400, code="wrong_model_type", param="model")


def test_unsupported_n_is_refused_not_ignored(server):
    assert_openai_error(chat(server.url, {**HELLO, "n": 2}), 400, param="n")


def test_a_full_queue_is_a_503_with_retry_after():
    with InProcessServer(FakeEngine(queue_limit=0)) as server:
        status, headers, _ = response = chat(server.url, HELLO)
        assert_openai_error(response, 503, code="server_is_overloaded")
        assert headers["retry-after"] == "1"


def test_a_draining_server_answers_503_and_health_says_so():
    with InProcessServer(FakeEngine()) as server:
        server.call(lambda: setattr(server.state, "draining", True))
        for _ in range(100):
            status, headers, raw = request(server.url, path="/health")
            if status == 503:
                break
        assert json.loads(raw)["status"] == "draining" and headers["retry-after"] == "5"
        _, headers, _ = response = chat(server.url, HELLO)
        assert_openai_error(response, 503, code="server_is_overloaded")
        assert headers["retry-after"] == "5"


def test_missing_or_wrong_api_key_is_a_401():
    with InProcessServer(FakeEngine(), api_keys=("sekrit",)) as server:
        assert_openai_error(chat(server.url, HELLO), 401, code="invalid_api_key")
        assert_openai_error(
            chat(server.url, HELLO, headers={"Authorization": "Bearer nope"}), 401, code="invalid_api_key"
        )
        assert chat(server.url, HELLO, headers={"Authorization": "Bearer sekrit"})[0] == 200


def test_a_failure_before_the_first_token_is_a_generic_500():
    engine = FakeEngine(fail_after=0, fail_with=ApiError(500, "The model failed.", type="server_error"))
    with InProcessServer(engine) as server:
        error = assert_openai_error(chat(server.url, HELLO), 500)
        assert error["message"] == "The model failed."


def test_an_unexpected_exception_is_a_500_without_details():
    engine = FakeEngine(reply=lambda request: (_ for _ in ()).throw(RuntimeError("/secret/path exploded")))
    with InProcessServer(engine) as server:
        status, _, raw = response = chat(server.url, {**HELLO, "stream": False})
        assert status == 500
        assert "/secret" not in raw.decode() and "Traceback" not in raw.decode()
        assert error_of(response)["type"] == "server_error"


def test_a_path_of_an_api_ggufd_does_not_serve_is_named(server):
    for path, api in (("/v1/responses", "Responses API"), ("/v1/messages", "Messages API"), ("/api/chat", "Ollama")):
        status, _, raw = request(server.url, "POST", path, {"model": "fake"})
        message = json.loads(raw)["error"]["message"]
        assert status == 404 and api in message and "/v1/chat/completions" in message, message
    status, _, raw = request(server.url, "GET", "/nope")
    assert status == 404 and json.loads(raw)["error"]["message"].startswith("Unknown path '/nope'. This server serves")


def test_a_tool_of_another_type_is_named_by_its_type(server):
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}],
    }
    status, _, raw = request(server.url, "POST", "/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] == "tools.1.type" and "'web_search'" in error["message"]
