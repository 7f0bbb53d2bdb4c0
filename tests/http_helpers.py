"""Raw HTTP helpers for end-to-end tests (the openai client hides statuses and bytes)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def request(
    url: str, method: str = "GET", path: str = "/", body=None, headers: dict | None = None, timeout: float = 60
):
    """-> (status, headers dict (lower-case names), raw body bytes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def chat(url: str, body, headers: dict | None = None, timeout: float = 60):
    return request(url, "POST", "/v1/chat/completions", body, headers, timeout)


def sse_events(raw: bytes) -> list:
    """Split an SSE body into events; strict: every event is `data: ...` followed by a blank line."""
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    assert text.endswith("\n\n"), text[-200:]
    events = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def error_of(status_body) -> dict:
    status, headers, body = status_body
    assert headers["content-type"].startswith("application/json"), headers
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}, doc
    return doc["error"]
