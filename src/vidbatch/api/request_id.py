"""Request ids: taken from the caller (the original's header aliases, then the body), or
generated; echoed in the ``x-request-id`` header of every response."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

HEADER_ALIASES = (
    "x-request-id",
    "request-id",
    "idempotency-key",
    "x-idempotency-key",
    "x-requestid",
)
MAX_LEN = 128


def clean(value: object) -> str | None:
    """A usable request id (trimmed, 1–128 characters), or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_LEN or not value.isprintable():
        return None
    return value


def from_headers(headers: Mapping[str, str]) -> str | None:
    for name in HEADER_ALIASES:
        value = clean(headers.get(name))
        if value:
            return value
    return None


def generate() -> str:
    return "req_" + uuid.uuid4().hex
