"""ggufd.protocol.body: strict JSON bodies in (UTF-8, no NaN, no lone surrogates, bounded nesting), compact JSON out."""

from __future__ import annotations

import sys
import types

import pytest

from ggufd.errors import InvalidRequest
from ggufd.protocol import body as body_module
from ggufd.protocol.body import decode_json_body, dumps
from ggufd.protocol.openai_chat import ChatOutput

# --- decode_json_body


def test_decode_valid_body():
    assert decode_json_body(b'{"messages": [{"role": "user", "content": "h\\u00e9 \xf0\x9f\x98\x80"}]}') == {
        "messages": [{"role": "user", "content": "hé 😀"}]
    }


def test_surrogate_pair_escape_is_valid_text():
    assert decode_json_body(b'{"a": "\\ud83d\\ude00"}') == {"a": "😀"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"messages": [}',
        b"{'single': 'quotes'}",
        b'{"a": 1} trailing',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": ' + b"1" * 5000 + b"}",  # beyond Python's int digit limit: a ValueError, not a JSONDecodeError
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_bad_json(raw):
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(raw)
    assert info.value.status == 400
    assert info.value.message.startswith("The request body is not valid JSON")


@pytest.mark.parametrize("depth", [500, 1500, 5000])
def test_deep_nesting_is_a_400_or_accepted_never_a_crash(depth):
    raw = b'{"a": ' + b"[" * depth + b'"x"' + b"]" * depth + b"}"
    try:
        doc = decode_json_body(raw)
    except InvalidRequest as exc:
        assert exc.status == 400
    else:
        assert depth == 500 and isinstance(doc["a"], list)


def test_nesting_too_deep_for_the_string_check_is_a_400(monkeypatch):
    # Python 3.13's C JSON decoder accepts deeper nesting than Python-level recursion allows;
    # simulate that decoder here so the guard around the surrogate check is exercised on any version.
    deep = "x"
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    monkeypatch.setattr(body_module, "json", types.SimpleNamespace(loads=lambda raw, **kwargs: {"a": deep}))
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(b"ignored")
    assert info.value.status == 400
    assert info.value.message == "The request body is nested too deeply."


@pytest.mark.parametrize("raw", [b'{"a": "\xff"}', b'{"a": "\xc3"}', b"\xfe\xff\x00{", b'{"a": "\xc0\xaf"}'])
def test_invalid_utf8(raw):
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(raw)
    assert info.value.status == 400
    assert info.value.message.startswith("The request body is not valid JSON")


def test_lone_surrogate_in_a_message_names_its_path():
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(b'{"messages": [{"role": "user", "content": "x\\ud800y"}]}')
    assert info.value.status == 400
    assert info.value.param == "messages.0.content"
    assert "surrogate" in info.value.message


def test_utf8_encoded_surrogate_is_refused_like_an_escaped_one():
    # json.loads decodes bytes with "surrogatepass", so ED A0 80 arrives as a lone surrogate
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}')
    assert info.value.status == 400
    assert info.value.param == "messages.0.content"


def test_lone_surrogate_in_a_key_or_at_top_level():
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(b'{"\\udfff": 1}')
    assert info.value.param is None
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(b'{"stop": ["ok", "\\udc00"]}')
    assert info.value.param == "stop.1"


@pytest.mark.parametrize("raw", [b"[]", b'[{"messages": []}]', b'"text"', b"42", b"null", b"true"])
def test_non_object_bodies(raw):
    with pytest.raises(InvalidRequest) as info:
        decode_json_body(raw)
    assert info.value.status == 400
    assert info.value.message == "The request body must be a JSON object."


def test_dumps_is_compact_strict_utf8_and_keeps_non_ascii():
    out = dumps({"text": "héllo 😀 日本", "n": [1, 2]})
    assert out == '{"text":"héllo 😀 日本","n":[1,2]}'.encode()
    assert b"\\u" not in out
    assert out.decode("utf-8", errors="strict")
    content = ChatOutput("id", "m", created=0).content("ünïcödé")
    assert "ünïcödé".encode() in content
    with pytest.raises(UnicodeEncodeError):
        dumps({"text": "\ud800"})  # strict: never writes invalid UTF-8
