"""JSON request bodies in, JSON bytes out: the hygiene every wire format shares.

A body must be one JSON object of strict UTF-8 text: no NaN/Infinity (they pass every range
check), no lone UTF-16 surrogates (they cannot be encoded again), bounded nesting.
"""

from __future__ import annotations

import json
from typing import Any

from ggufd.errors import InvalidRequest


def decode_json_body(raw: bytes, *, yielding: bool = False) -> dict:
    """Bytes -> JSON object; 400 for anything else (bad UTF-8, bad JSON, lone surrogates, non-objects).

    :param yielding: for a large body decoded in a worker thread: objects and numbers are built
        by Python hooks, so the thread lets the event loop run between them (the C parser holds
        the GIL for a whole body: 0.1 s and more for a few MB of small objects). About two times
        slower to decode, hence only there.
    """
    hooks: dict[str, Any] = {"object_pairs_hook": _object, "parse_int": _int, "parse_float": _float} if yielding else {}
    try:
        # ValueError also covers integers too long to convert (Python's int max-digits limit).
        doc = json.loads(raw, parse_constant=_reject_constant, **hooks)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        _check_strings(doc, [])
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None
    return doc


def _object(pairs: list) -> dict:
    return dict(pairs)


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _reject_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (and NaN passes every range check)."""
    raise ValueError(f"{name} is not a valid JSON value")


def _check_strings(value: Any, path: list) -> None:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates from ``\\ud800`` escapes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                "The request contains a lone UTF-16 surrogate, which is not valid text.",
                param=".".join(map(str, path)) or None,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path)
            _check_strings(item, path + [key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, path + [index])


def dumps(obj: Any) -> bytes:
    """Compact, strict UTF-8 JSON (the engine never produces unencodable text)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
