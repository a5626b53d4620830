"""Request ids: taken from the caller (the original's header aliases, then the body), or
generated; echoed in the ``x-request-id`` header of every response.

One rule for headers and body: surrounding spaces are trimmed; a blank id counts as none
(one is generated, and the request has no idempotency); an id of more than 128 characters,
or with anything but printable ASCII, is refused with 400 ``INVALID_REQUEST_ID`` — never
replaced by a generated one, so a client's retry can never create a second batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from vidbatch.exceptions import FieldError, InvalidRequestId

HEADER_ALIASES = (
    "x-request-id",
    "request-id",
    "idempotency-key",
    "x-idempotency-key",
    "x-requestid",
)
MAX_LEN = 128
RULE = f"must be 1 to {MAX_LEN} printable ASCII characters"


def problem(value: str) -> str | None:
    """Why a (trimmed, non-blank) request id cannot be used, or None."""
    if len(value) > MAX_LEN:
        return f"{RULE} (got {len(value)})"
    if not (value.isascii() and value.isprintable()):
        return f"{RULE} (it has a control or non-ASCII character)"
    return None


def clean(value: object) -> str | None:
    """A usable request id, or None (for echoing: never raises)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return None if problem(value) else value


def _header(headers: Mapping[str, str]) -> tuple[str, str] | None:
    for name in HEADER_ALIASES:
        value = headers.get(name)
        if value is not None and value.strip():
            return name, value.strip()
    return None


def from_headers(headers: Mapping[str, str]) -> str | None:
    """The first request-id header's value when it is usable (for echoing)."""
    found = _header(headers)
    return clean(found[1]) if found else None


def requested(headers: Mapping[str, str], body: object) -> str | None:
    """The caller's request id: the first request-id header, else the body's ``request_id``;
    None when neither is given. Raises InvalidRequestId for one that breaks the rule."""
    found = _header(headers)
    if found is None and isinstance(body, dict) and body.get("request_id") is not None:
        raw = body["request_id"]
        if not isinstance(raw, str):
            raise _invalid("request_id", "must be a string")
        found = ("request_id", raw.strip()) if raw.strip() else None
    if found is None:
        return None
    where, value = found
    reason = problem(value)
    if reason:
        raise _invalid(where, reason)
    return value


def _invalid(where: str, reason: str) -> InvalidRequestId:
    return InvalidRequestId(f"{where} {reason}", details=[FieldError(field=where, message=reason)])


def generate() -> str:
    return "req_" + uuid.uuid4().hex
