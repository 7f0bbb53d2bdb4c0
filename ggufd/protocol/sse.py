"""Server-sent events framing, shared by the formats that stream as SSE.

Every event is one line of compact, strict UTF-8 JSON (``data: {...}``), optionally named
(``event: <type>``, as Anthropic's and OpenAI's Responses streams do), ended by a blank line.
"""

from __future__ import annotations

from typing import Any

from ggufd.protocol.body import dumps

MEDIA_TYPE = "text/event-stream; charset=utf-8"
#: the end of an OpenAI-style stream (Chat Completions, Completions)
DONE = b"data: [DONE]\n\n"


def sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: " + event.encode("utf-8") + b"\n" if event else b""
    return head + b"data: " + dumps(data) + b"\n\n"
