"""API keys, the loopback check, and CORS — pure functions the handlers and start-up use."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from ggufd.errors import InvalidApiKey


def check_bearer(authorization: str | None, keys: Sequence[str]) -> None:
    """Raise :class:`InvalidApiKey` unless ``Authorization: Bearer <key>`` names one of ``keys``.

    Every key is compared (constant time per key, no early exit), so the timing says nothing
    about which key, or which prefix, came close. The message never repeats what was sent.
    """
    if not authorization:
        raise InvalidApiKey("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKey("Malformed Authorization header: use 'Bearer <key>'.")
    presented = token.strip().encode("utf-8", "replace")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode("utf-8"))
    if not matched:
        raise InvalidApiKey("Incorrect API key provided.")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cors_origin(origin: str | None, allowed: Sequence[str]) -> str | None:
    """The value for ``Access-Control-Allow-Origin``, or None when the origin is not allowed."""
    if not origin or not allowed:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None
