"""Property tests (hypothesis): request parsing never fails with anything but a 400, the
daemon never answers a 5xx to any body, TextAssembler's output does not depend on how the
bytes were split, and the OpenAPI document's request schemas judge bodies like the committed
schemas. A last test pins a daemon crash found while fuzzing (now a 400).

No example database is written (``database=None``): the tree stays clean, and a failure
prints the example to reproduce it.
"""

from __future__ import annotations

import collections
import json
import math

import pytest

hypothesis = pytest.importorskip("hypothesis")

from http_helpers import request  # noqa: E402  (tests/ is on sys.path, see conftest.py)
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ggufd.engine.text_stream import TextAssembler  # noqa: E402
from ggufd.errors import InvalidRequest  # noqa: E402
from ggufd.protocol.body import decode_json_body  # noqa: E402
from ggufd.protocol.openai_chat import parse_chat_request  # noqa: E402
from ggufd.protocol.openai_completions import parse_completion_request  # noqa: E402

PURE = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
E2E = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- JSON documents --------------------------------------------------------------------

surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
#: any code point, lone surrogates included (they only exist as \udXXX escapes in JSON)
any_char = st.one_of(st.characters(), surrogate)
any_text = st.text(any_char, max_size=12)

#: integers around the limits of ctypes/C types and of JSON Schema ranges
edge_ints = st.sampled_from(
    [
        0,
        1,
        -1,
        2,
        4,
        127,
        128,
        255,
        256,
        2**15,
        2**16,
        2**31 - 1,
        2**31,
        2**32 - 1,
        2**32,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
        -(2**63) - 1,
        10**30,
        -(10**30),
    ]
)
edge_floats = st.sampled_from(
    [0.0, -0.0, 0.5, 1.0, 1.5, 2.0, 2.0000001, -2.0000001, 1e-320, 5e-324, 1e308, -1e308, 100.0, -100.0, 4.0, 1e20]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    edge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    edge_floats,
    any_text,
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(any_text, children, max_size=5)),
    max_leaves=25,
)

CHAT_FIELDS = (
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "stream_options",
    "n",
    "user",
    "logit_bias",
    "response_format",
    "tools",
    "functions",
    "logprobs",
    "top_logprobs",
)
COMPLETION_FIELDS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "stream_options",
    "n",
    "user",
    "prompt",
    "echo",
    "suffix",
    "best_of",
    "logit_bias",
    "logprobs",
)

plausible_values = st.one_of(
    json_values,
    edge_ints,
    edge_floats,
    st.sampled_from(["tiny", "tiny-alias", "missing", "", "../etc/passwd", "\x00", "\n"]),
    st.lists(st.text(max_size=4), max_size=6),  # stop lists (empty strings, too many)
    st.dictionaries(
        st.one_of(st.from_regex(r"\A[0-9]{1,9}\Z"), any_text), st.one_of(edge_floats, edge_ints, scalars), max_size=3
    ),  # logit_bias
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema", "xml", ""])},
        optional={"json_schema": st.one_of(json_values, st.fixed_dictionaries({"schema": json_values}))},
    ),
    st.fixed_dictionaries({"include_usage": scalars}),
)

text_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "", "TEXT"])}, optional={"text": st.one_of(any_text, scalars)}
)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), any_text, scalars)},
    optional={
        "content": st.one_of(st.text(max_size=40), any_text, st.none(), st.lists(text_part, max_size=3), json_values),
        "name": st.one_of(st.text(max_size=5), scalars),
        "tool_call_id": st.one_of(st.text(max_size=5), scalars),
        "tool_calls": st.one_of(st.none(), st.lists(json_values, max_size=2), scalars),
    },
)
valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]), "content": st.text(max_size=40)}
)
valid_messages = st.lists(valid_message, min_size=1, max_size=3)
messages = st.one_of(
    valid_messages,
    st.lists(st.one_of(valid_message, message), min_size=1, max_size=3),
    st.lists(st.one_of(message, json_values), max_size=4),
)
prompt = st.one_of(
    st.text(max_size=60),
    st.lists(st.text(max_size=10), min_size=1, max_size=1),
    any_text,
    st.lists(st.one_of(st.text(max_size=10), json_values), max_size=3),
    json_values,
)

#: values each field accepts (mostly), from the edges of its range
_numbers = st.one_of(edge_floats, edge_ints, st.floats(-3, 3), st.none())
VALID_VALUES = {
    "model": st.sampled_from(["tiny", "tiny-alias", None]),
    "max_tokens": st.sampled_from([None, -1, 1, 2, 2**31, 2**63]),
    "max_completion_tokens": st.sampled_from([None, -1, 1, 2, 2**31]),
    "temperature": _numbers,
    "top_p": _numbers,
    "min_p": _numbers,
    "repeat_penalty": _numbers,
    "presence_penalty": _numbers,
    "frequency_penalty": _numbers,
    "top_k": st.one_of(edge_ints, st.none()),
    "seed": st.one_of(edge_ints, st.integers(), st.none()),
    "n": st.sampled_from([None, 1, 2]),
    "best_of": st.sampled_from([None, 1, 2]),
    "stop": st.one_of(
        st.none(), st.text(min_size=1, max_size=4), st.lists(st.text(min_size=1, max_size=4), max_size=4)
    ),
    "stream_options": st.one_of(st.none(), st.fixed_dictionaries({"include_usage": st.booleans()})),
    "user": st.one_of(st.none(), st.text(max_size=5)),
    "echo": st.one_of(st.none(), st.booleans()),
    "suffix": st.one_of(st.none(), st.text(max_size=3)),
    "logit_bias": st.one_of(
        st.none(),
        st.dictionaries(st.from_regex(r"\A[0-9]{1,9}\Z"), st.one_of(edge_floats, st.floats(-100, 100)), max_size=3),
    ),
    "response_format": st.one_of(
        st.none(),
        st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
        st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {
                        "schema": st.one_of(
                            st.fixed_dictionaries(
                                {
                                    "type": st.sampled_from(
                                        ["object", "string", "integer", "array", "boolean", "null", "number"]
                                    )
                                }
                            ),
                            st.dictionaries(
                                st.sampled_from(
                                    [
                                        "type",
                                        "properties",
                                        "items",
                                        "enum",
                                        "const",
                                        "minLength",
                                        "maxItems",
                                        "pattern",
                                        "required",
                                        "anyOf",
                                        "$ref",
                                        "additionalProperties",
                                    ]
                                ),
                                json_values,
                                max_size=3,
                            ),
                        )
                    }
                ),
            }
        ),
    ),
    "tools": st.sampled_from([None, [], [{"type": "function"}]]),
    "functions": st.sampled_from([None, []]),
    "logprobs": st.sampled_from([None, False, True, 1]),
    "top_logprobs": st.sampled_from([None, 0, 2]),
}


def request_shaped(required_key: str, required: st.SearchStrategy, fields: tuple) -> st.SearchStrategy:
    """A dict that looks like a request, then mutated: keys dropped, values replaced, junk keys added."""
    field_values = st.sampled_from(fields).flatmap(
        lambda field: st.tuples(
            st.just(field),
            st.one_of(
                VALID_VALUES.get(field, plausible_values), VALID_VALUES.get(field, plausible_values), plausible_values
            ),
        )
    )
    base = st.builds(
        lambda req, extra: {required_key: req, **dict(extra)},
        required,
        st.lists(field_values, max_size=5),
    )
    valid_required = valid_messages if required_key == "messages" else st.text(max_size=60)
    valid = st.builds(
        lambda req, extra: {required_key: req, **extra},
        valid_required,
        st.dictionaries(st.sampled_from([f for f in fields if f in VALID_VALUES]), st.none(), max_size=4).flatmap(
            lambda keys: st.fixed_dictionaries({key: VALID_VALUES[key] for key in keys})
        ),
    )

    @st.composite
    def mutated(draw):
        doc = draw(base)
        for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
            action = draw(st.sampled_from(["drop", "replace", "add"]))
            if action == "drop" and doc:
                doc.pop(draw(st.sampled_from(sorted(doc))))
            elif action == "replace" and doc:
                doc[draw(st.sampled_from(sorted(doc)))] = draw(json_values)
            else:
                doc[draw(st.one_of(st.sampled_from(fields), any_text))] = draw(plausible_values)
        return doc

    return st.one_of(valid, mutated())


chat_docs = request_shaped("messages", messages, CHAT_FIELDS)
completion_docs = request_shaped("prompt", prompt, COMPLETION_FIELDS)
documents = st.one_of(json_values, chat_docs, completion_docs)

#: bodies that are not a JSON encoding of a Python value
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b"{",
            b"}",
            b'{"messages": NaN}',
            b'{"temperature": Infinity}',
            b'{"top_p": -Infinity}',
            b'{"temperature": 1e999, "messages": []}',
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1e999}',
            b'{"seed": ' + b"9" * 5000 + b"}",
            b"9" * 5000,
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b'{"messages": "\\ud800"}',
            b'{"\\udfff": 1}',
            b'{"prompt": "\\ud83d\\ude00"}',
            b'\xef\xbb\xbf{"prompt": "x"}',
            b'{"prompt": "x", "prompt": 1}',
            b'{"prompt": "\xff"}',
            b'{"prompt": "\xed\xa0\x80"}',
            b"\x00",
            b'"x"',
            b"1",
            b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": '
            + b'{"properties": ' * 40
            + b"{}"
            + b"}" * 40
            + b"}}}",
            b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": '
            b'{"type": "string", "minLength": -1e999}}}}',
        ]
    ),
    st.lists(st.text(max_size=8), max_size=4).map(
        lambda parts: ('{"prompt": "' + "".join(parts) + '"}').encode("utf-8", "surrogatepass")
    ),
)


def encodings(doc) -> list[bytes]:
    """``doc`` as JSON bytes: ASCII escapes (``\\ud800``, ``NaN``), and raw UTF-8 (lone surrogates as invalid bytes)."""
    try:
        ascii_form = json.dumps(doc, allow_nan=True).encode("ascii")
        raw_form = json.dumps(doc, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except ValueError:  # an int too long for str() (Python's int max-digits limit)
        return []
    return [ascii_form, raw_form]


bodies = st.one_of(documents.flatmap(lambda doc: st.sampled_from(encodings(doc) or [b"{}"])), raw_bodies)


def check_parse(raw: bytes) -> None:
    """decode + parse either succeeds or raises InvalidRequest (status 400); nothing else."""
    for parse in (parse_chat_request, parse_completion_request):
        try:
            parse(decode_json_body(raw))
        except InvalidRequest as exc:
            assert exc.status == 400
            assert isinstance(exc.message, str) and exc.message
            assert exc.param is None or isinstance(exc.param, str)
            json.dumps(exc.to_dict()).encode("utf-8")  # the error itself is always sendable


@PURE
@given(bodies)
def test_parsing_any_body_gives_a_request_or_a_400(raw):
    check_parse(raw)


@PURE
@given(documents)
def test_parsing_any_document_gives_a_request_or_a_400(doc):
    """Documents directly (skipping the JSON round trip): the dict-level checks alone."""
    for parse in (parse_chat_request, parse_completion_request):
        if not isinstance(doc, dict):
            continue
        try:
            parse(doc)
        except InvalidRequest as exc:
            assert exc.status == 400


@pytest.mark.parametrize("depth", [50, 500, 900, 990, 2000, 100_000])
@pytest.mark.parametrize("where", ["top", "messages", "content", "logit_bias", "schema", "unknown"])
def test_deep_nesting_is_a_400_or_accepted(depth, where):
    """Deeply nested values anywhere: json.loads, the UTF-8 check, the schema validator, the
    error message (repr of the instance) and the grammar check must all end in a 400."""
    inner = "[" * depth + "]" * depth
    bodies = {
        "top": inner,
        "messages": '{"messages": ' + inner + ', "prompt": ' + inner + "}",
        "content": '{"messages": [{"role": "user", "content": ' + inner + '}], "prompt": [' + inner + "]}",
        "logit_bias": '{"messages": [{"role": "user", "content": "x"}], "prompt": "x", "logit_bias": {"1": '
        + inner
        + "}}",
        "schema": '{"messages": [{"role": "user", "content": "x"}], "prompt": "x", "response_format": {"type": "json_schema", '
        '"json_schema": {"schema": {"a": ' + inner + "}}}}",
        "unknown": '{"messages": [{"role": "user", "content": "x"}], "prompt": "x", "whatever": ' + inner + "}",
    }
    check_parse(bodies[where].encode())


# --- the same against the real daemon ---------------------------------------------------


def bounded(doc):
    """Keep generations short: max_tokens 1 for request-shaped dicts, never a stream."""
    if isinstance(doc, dict) and ("messages" in doc or "prompt" in doc):
        doc = dict(doc)
        doc.pop("max_completion_tokens", None)
        doc["max_tokens"] = 1
        doc.pop("stream", None)
    return doc


def daemon_bodies(path: str) -> st.SearchStrategy:
    """Mostly documents shaped for ``path`` (so that many are valid and generate), some for the
    other route, some arbitrary JSON and raw bytes."""
    own, other = (chat_docs, completion_docs) if path == "/v1/chat/completions" else (completion_docs, chat_docs)
    docs = st.one_of(own, own, own, other, json_values)
    return st.one_of(
        docs.map(bounded).flatmap(lambda doc: st.sampled_from(encodings(doc) or [b"{}"])),
        raw_bodies.filter(lambda raw: b"stream" not in raw),
    )


def check_response(status: int, headers: dict, body: bytes, path: str) -> None:
    assert status < 500, (status, body[:500])
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    if status == 200:
        assert doc["object"] == ("chat.completion" if path == "/v1/chat/completions" else "text_completion"), doc
        assert isinstance(doc["choices"], list) and doc["choices"], doc
    else:
        assert status in (400, 404, 413, 415), (status, doc)
        assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}, doc
        error = doc["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_daemon_never_answers_5xx(tiny_daemon, path):
    statuses = collections.Counter()

    @E2E
    @given(daemon_bodies(path))
    def run(raw):
        status, headers, body = request(tiny_daemon.url, "POST", path, raw, timeout=60)
        statuses[status] += 1
        check_response(status, headers, body, path)

    run()
    # the strategies reach both the generation and the refusals
    assert statuses[200] >= 5 and statuses[400] >= 5, statuses
    assert tiny_daemon.proc.poll() is None, "the daemon died"
    assert not tiny_daemon.logs("unhandled error"), tiny_daemon.logs("unhandled error")


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", 2**32),
        ("seed", 2**63),
        ("seed", 2**64),
        ("seed", -1),
        ("seed", -(2**63) - 1),
        ("top_k", 2**31),
        ("top_k", 2**63),
        ("top_k", 2**64),
        ("logit_bias", {"999999999": 1}),
        ("logit_bias", {"000000001": -100}),
        ("temperature", 5e-324),
        ("min_p", 5e-324),
        ("repeat_penalty", 0),
        ("stop", ["\x00"]),
        ("model", "\x00"),
    ],
)
def test_daemon_edge_values(tiny_daemon, path, field, value):
    """Values the schemas accept that C types might not (seed/top_k beyond int32/uint32/int64)."""
    body = {"max_tokens": 1, "temperature": 1, field: value}  # temperature > 0: the seeded, top-k sampler chain
    body.update(
        {"messages": [{"role": "user", "content": "hi"}]} if path == "/v1/chat/completions" else {"prompt": "hi"}
    )
    status, headers, raw = request(tiny_daemon.url, "POST", path, body)
    check_response(status, headers, raw, path)


# --- TextAssembler --------------------------------------------------------------------

#: byte strings biased towards (possibly broken) UTF-8 with multi-byte characters
utf8ish = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda s: s.encode("utf-8")),
    st.lists(st.one_of(st.text(max_size=4).map(lambda s: s.encode("utf-8")), st.binary(max_size=3)), max_size=8).map(
        b"".join
    ),
)


@st.composite
def assembler_case(draw):
    data = draw(utf8ish)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=10))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    text = data.decode("utf-8", errors="replace")
    # stop strings: some taken from the text itself (so they match), some arbitrary
    from_text = st.builds(lambda i, n: text[i : i + n], st.integers(0, max(len(text) - 1, 0)), st.integers(0, 5))
    stops = draw(
        st.lists(
            st.one_of(from_text, st.text(max_size=4), st.sampled_from(["\ufffd", "\ufffd\ufffd", "a", "ab"])),
            max_size=4,
        )
    )
    return pieces, stops


def assemble(pieces, stops):
    assembler = TextAssembler(stops)
    released = [assembler.feed(piece) for piece in pieces]
    released.append(assembler.finish())
    if assembler.stopped:  # after a stop string nothing more comes out
        assert assembler.feed(b"more") == "" and assembler.finish() == ""
    return released, assembler.stopped


@settings(PURE, max_examples=1000)
@given(assembler_case())
def test_text_assembler_is_split_invariant(case):
    pieces, stops = case
    released, stopped = assemble(pieces, stops)
    whole, whole_stopped = assemble([b"".join(pieces)], stops)
    for piece in released:
        assert isinstance(piece, str)
        piece.encode("utf-8")  # strict: no lone surrogates
    text = "".join(released)
    assert text == "".join(whole)
    assert stopped == whole_stopped
    decoded = b"".join(pieces).decode("utf-8", errors="replace")
    if stopped:  # the text before the first stop string, nothing after it
        assert decoded.startswith(text)
        assert any(decoded[len(text) :].startswith(stop) for stop in stops if stop)
    else:  # nothing was lost: everything decodes to what one decode of all bytes gives
        assert text == decoded
    for stop in stops:
        if stop:
            assert stop not in text, (stop, text)  # never a leaked stop string


# --- the OpenAPI document describes the same requests as the committed schemas ------------


def test_openapi_components_validate_like_the_schemas():
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from ggufd.api.openapi import REQUEST_SCHEMAS, openapi_document
    from ggufd.validation import validator

    document = openapi_document()
    registry = Registry().with_resource("urn:ggufd-openapi", Resource(document, specification=DRAFT202012))
    embedded = {
        name: Draft202012Validator(
            {"$ref": f"urn:ggufd-openapi#/components/schemas/{component}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        for name, component in REQUEST_SCHEMAS.items()
    }

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(chat_docs, completion_docs, json_values))
    def same_verdict(doc):
        assume(not _has_integral_float(doc))  # ggufd's validator types integers strictly
        for name, embedded_validator in embedded.items():
            assert embedded_validator.is_valid(doc) == validator(name).is_valid(doc), (name, doc)

    same_verdict()


def _has_integral_float(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if isinstance(value, dict):
        return any(_has_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_integral_float(v) for v in value)
    return False


# --- found while fuzzing ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "schema",
    [
        {"const": "\u0000"},
        {"type": "string", "pattern": "^\\x00$"},
        {"enum": ["a\u0001b"]},
        {"type": "object", "properties": {"\u0000": {"type": "string"}}, "required": ["\u0000"]},
    ],
)
def test_grammar_requiring_nul_does_not_kill_the_daemon(make_daemon, tiny_model, tmp_path, schema):
    import shutil

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.gguf")
    daemon = make_daemon({"models_dir": str(folder), "llama": {"n_ctx": 512, "n_threads": 1}})
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }
    try:
        status, headers, raw = request(daemon.url, "POST", "/v1/chat/completions", body, timeout=60)
    except (ConnectionError, OSError) as exc:  # http.client.RemoteDisconnected: the daemon died mid-request
        pytest.fail(f"no response: {exc!r}; daemon exit code {daemon.proc.wait(10)}")
    assert daemon.proc.poll() is None, "the daemon died"
    check_response(status, headers, raw, "/v1/chat/completions")
    assert status == 400  # a grammar that requires a control character is refused up front
    # (found by fuzzing: llama.cpp aborted the whole process inside llama_sampler_sample)
