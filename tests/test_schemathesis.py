"""Schemathesis against the real daemon, driven by ggufd's own OpenAPI document.

Every operation of :func:`ggufd.api.openapi.openapi_document` gets schema-valid and
schema-invalid requests (schemathesis' examples, coverage and fuzzing phases); each
response must not be a 5xx, must use a documented status code and content type, must
match the documented response schema, and every 4xx must be the OpenAI error object.
Generation stays short: request bodies get ``max_tokens`` <= 4 and no ``stream``.
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')")

from http_helpers import request  # noqa: E402  (tests/ is on sys.path, see conftest.py)
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ggufd.api.openapi import openapi_document  # noqa: E402

pytestmark = pytest.mark.e2e

MAX_TOKENS = 4
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")

schema = schemathesis.openapi.from_dict(openapi_document())

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def keep_short(case) -> None:
    """Bound the generation of a POST body: ``max_tokens`` (and ``max_completion_tokens``) at
    most ``MAX_TOKENS``, and no stream. Only values the schema accepts are changed, so a
    schema-invalid case stays invalid."""
    body = case.body
    if case.method.upper() != "POST" or not isinstance(body, dict) or case.path not in GENERATION_PATHS:
        return
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if key in body and (value is None or value == -1 or (type(value) is int and value > MAX_TOKENS)):
            body[key] = MAX_TOKENS
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_TOKENS
    if body.get("stream") is True:
        body["stream"] = False
        body.pop("stream_options", None)  # only allowed with a stream


def check_error_body(response) -> None:
    """Every 4xx is the OpenAI error object, served as application/json."""
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[
            0
        ]  # schemathesis: lower-case names, lists of values
        assert content_type.startswith("application/json"), (response.status_code, response.headers)
        doc = json.loads(response.content)
        assert set(doc) == {"error"}, doc
        error = doc["error"]
        assert set(error) == {"message", "type", "param", "code"}, doc
        assert isinstance(error["message"], str) and error["message"], doc
        assert isinstance(error["type"], str), doc
        assert error["param"] is None or isinstance(error["param"], str), doc
        assert error["code"] is None or isinstance(error["code"], str), doc


@pytest.fixture(scope="module")
def served_openapi(tiny_daemon) -> bool:
    """Whether the daemon serves GET /openapi.json (its route is added separately)."""
    status, _, body = request(tiny_daemon.url, "GET", "/openapi.json")
    return status == 200


@schema.parametrize()
@settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case, tiny_daemon, served_openapi):
    if case.path == "/openapi.json" and not served_openapi:
        pytest.skip("the daemon does not serve GET /openapi.json yet")
    keep_short(case)
    response = case.call(base_url=tiny_daemon.url, timeout=60)
    case.validate_response(response, checks=CHECKS)
    check_error_body(response)


def test_served_document_is_this_one(tiny_daemon, served_openapi):
    """Once GET /openapi.json exists, it returns exactly :func:`openapi_document`."""
    if not served_openapi:
        pytest.skip("the daemon does not serve GET /openapi.json yet")
    status, headers, body = request(tiny_daemon.url, "GET", "/openapi.json")
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == openapi_document()
