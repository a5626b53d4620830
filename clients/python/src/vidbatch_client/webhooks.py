"""Verify the webhooks vidbatch sends.

Every delivery is signed three ways; :func:`verify` checks any of them:

- **Standard Webhooks** (``webhook-id``, ``webhook-timestamp`` in unix seconds,
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, space-separated
  entries while a secret is being rotated). The key is what the part of the secret after
  ``whsec_`` decodes to (base64), or its UTF-8 bytes when it is not base64; a secret without
  the prefix is used as its UTF-8 bytes.
- **The published scheme**: ``x-sora2-signature: sha256=<hex HMAC-SHA256 of the raw body>``
  with ``x-sora2-timestamp`` (ISO 8601 UTC), keyed with the secret string as you hold it.
- **The original code's header**: ``x-webhook-signature: <the same hex>``, with the same
  ``x-sora2-timestamp``.

``scheme="auto"`` (the default) uses Standard Webhooks when its headers are present, else the
published headers, else ``x-webhook-signature``. The signed time must be within ``tolerance``
seconds (5 minutes by default) of now, so an old delivery cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from vidbatch_client.errors import WebhookVerificationError

__all__ = ["DEFAULT_TOLERANCE", "WebhookVerificationError", "verify"]

DEFAULT_TOLERANCE = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
Scheme = Literal["auto", "standard", "sora2", "webhook"]


def _key_bytes(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        rest = secret[len(SECRET_PREFIX) :]
        try:
            return base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return rest.encode("utf-8")
    return secret.encode("utf-8")


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(
        _key_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _any_equal(offered: Iterable[str], expected: Iterable[str]) -> bool:
    expected = list(expected)
    matched = False
    for entry in offered:
        for candidate in expected:
            matched |= hmac.compare_digest(entry.encode(), candidate.encode())
    return matched


def _check_age(at: float, now: float, tolerance: float, header: str) -> None:
    if abs(now - at) > tolerance:
        raise WebhookVerificationError(
            f"{header} is {int(now - at)} s from now (tolerance {int(tolerance)} s)"
        )


def _iso_time(headers: Mapping[str, str]) -> float:
    stamp = _header(headers, "x-sora2-timestamp")
    if not stamp:
        raise WebhookVerificationError("missing x-sora2-timestamp header")
    try:
        at = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WebhookVerificationError("x-sora2-timestamp is not an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def _pick(headers: Mapping[str, str], scheme: Scheme) -> Scheme:
    if scheme != "auto":
        return scheme
    if _header(headers, "webhook-signature") is not None:
        return "standard"
    if _header(headers, "x-sora2-signature") is not None:
        return "sora2"
    if _header(headers, "x-webhook-signature") is not None:
        return "webhook"
    raise WebhookVerificationError("no signature header (webhook-signature, x-sora2-signature)")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
    scheme: Scheme = "auto",
) -> dict[str, Any]:
    """Check a webhook and return its parsed JSON body.

    ``body`` is the raw request body, exactly as received (before any JSON parsing);
    ``headers`` the request's headers (any case); ``secret`` your key's webhook secret, or
    several (e.g. the old and the new one while you switch). Raises
    :class:`~vidbatch_client.errors.WebhookVerificationError` when a header is missing, the
    signed time is more than ``tolerance`` seconds from ``now``, or no signature matches.
    Comparisons take constant time.
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    secrets = [secret] if isinstance(secret, str) else [s for s in secret if s]
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    current = time.time() if now is None else now
    chosen = _pick(headers, scheme)
    if chosen == "standard":
        msg_id = _header(headers, "webhook-id")
        stamp = _header(headers, "webhook-timestamp")
        signatures = _header(headers, "webhook-signature")
        if not msg_id or not stamp or not signatures:
            raise WebhookVerificationError(
                "missing webhook-id, webhook-timestamp or webhook-signature header"
            )
        try:
            timestamp = int(stamp)
        except ValueError:
            raise WebhookVerificationError("webhook-timestamp is not a whole number") from None
        _check_age(timestamp, current, tolerance, "webhook-timestamp")
        offered = [e for e in signatures.split(" ") if e.startswith("v1,")]
        matched = _any_equal(offered, (_standard(s, msg_id, timestamp, raw) for s in secrets))
    else:
        _check_age(_iso_time(headers), current, tolerance, "x-sora2-timestamp")
        if chosen == "sora2":
            offered = [_header(headers, "x-sora2-signature") or ""]
            matched = _any_equal(offered, (f"sha256={_hex(s, raw)}" for s in secrets))
        else:
            offered = [_header(headers, "x-webhook-signature") or ""]
            matched = _any_equal(offered, (_hex(s, raw) for s in secrets))
    if not matched:
        raise WebhookVerificationError("no signature matches the secret(s)")
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return parsed
