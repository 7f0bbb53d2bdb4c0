"""llama.cpp server's POST /tokenize, /detokenize and /apply-template through the real application
over a FakeEngine: shapes, the optional model, errors, and /apply-template's prompt being exactly
the one a chat request generates from."""

from __future__ import annotations

import json

import pytest
from http_helpers import chat, error_of, request
from inprocess import InProcessServer

from ggufd.engine.fake import FakeEngine

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]}


@pytest.fixture(scope="module")
def server():
    with InProcessServer(FakeEngine()) as server:
        yield server


def post(server, path: str, body) -> tuple[int, dict]:
    status, _, raw = request(server.url, "POST", path, body)
    return status, json.loads(raw)


def test_tokenize_gives_ids_without_special_tokens_by_default(server):
    # the fake engine: one token per word (its length), BOS 1 when add_special
    assert post(server, "/tokenize", {"content": "hello big world"}) == (200, {"tokens": [5, 3, 5]})
    assert post(server, "/tokenize", {"content": "hello", "add_special": True}) == (200, {"tokens": [1, 5]})


def test_tokenize_with_pieces_gives_text_or_bytes(server):
    status, doc = post(server, "/tokenize", {"content": "ab " + "y" * 300, "with_pieces": True, "model": "fake"})
    assert status == 200
    # a piece that is not valid UTF-8 (the fake's lone 0xff for ids >= 255) comes as its bytes
    assert doc == {"tokens": [{"id": 2, "piece": "xx"}, {"id": 300, "piece": [255]}]}
    assert post(server, "/tokenize", {"content": "ab", "with_pieces": False}) == (200, {"tokens": [2]})


def test_detokenize_gives_content(server):
    assert post(server, "/detokenize", {"tokens": [2, 3]}) == (200, {"content": "xx xxx"})
    assert post(server, "/detokenize", {"tokens": [], "model": "fake-alias"}) == (200, {"content": ""})


@pytest.mark.parametrize(
    "body",
    [
        CHAT,
        {**CHAT, "model": "fake", "tools": [WEATHER], "tool_choice": "auto"},
        {**CHAT, "chat_template_kwargs": {"enable_thinking": False}, "stream": True},
    ],
    ids=["plain", "tools", "template_kwargs"],
)
def test_apply_template_is_the_prompt_a_chat_request_generates_from(server, body):
    status, doc = post(server, "/apply-template", body)
    assert status == 200 and set(doc) == {"prompt"}
    assert chat(server.url, {**body, "stream": False})[0] == 200
    assert doc["prompt"] == server.engine.requests[-1].prompt.text
    assert "Weather in Oslo?" in doc["prompt"]


def test_apply_template_does_not_generate(server):
    before = len(server.engine.requests)
    assert post(server, "/apply-template", CHAT)[0] == 200
    assert len(server.engine.requests) == before


def test_offered_tools_are_in_the_rendered_prompt(server):
    plain = post(server, "/apply-template", CHAT)[1]["prompt"]
    with_tools = post(server, "/apply-template", {**CHAT, "tools": [WEATHER]})[1]["prompt"]
    assert "get_weather" in with_tools and "get_weather" not in plain


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"content": "a", "with_pieces": "yes"}, "with_pieces"),
        ("/tokenize", {"content": "a", "add_special": 1}, "add_special"),
        ("/tokenize", {"content": "a" * 4_000_001}, "content"),
        ("/detokenize", {}, "tokens"),
        ("/detokenize", {"tokens": [-1]}, "tokens.0"),
        ("/detokenize", {"tokens": ["a"]}, "tokens.0"),
        ("/detokenize", {"tokens": [0] * 1_000_001}, "tokens"),
        ("/apply-template", {}, "messages"),
        ("/apply-template", {"messages": []}, "messages"),
        ("/apply-template", {"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_bodies_are_400_with_param(server, path, body, param):
    response = request(server.url, "POST", path, body)
    error = error_of(response)
    assert response[0] == 400 and error["param"] == param and error["type"] == "invalid_request_error", error


def test_messages_are_bounded_like_a_chat_request(server):
    many = {"messages": [{"role": "user", "content": "x"}] * (server.config.max_messages + 1)}
    response = request(server.url, "POST", "/apply-template", many)
    assert response[0] == 400 and error_of(response)["param"] == "messages"


@pytest.mark.parametrize(
    "path, body",
    [("/tokenize", {"content": "a"}), ("/detokenize", {"tokens": [1]}), ("/apply-template", CHAT)],
)
def test_unknown_model_is_404(server, path, body):
    response = request(server.url, "POST", path, {**body, "model": "nope"})
    error = error_of(response)
    assert response[0] == 404 and error["code"] == "model_not_found" and error["param"] == "model"


def test_not_json_is_400(server):
    response = request(server.url, "POST", "/tokenize", b"{not json")
    assert response[0] == 400 and error_of(response)["type"] == "invalid_request_error"
