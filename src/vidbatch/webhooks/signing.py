"""Signing customer webhooks, and checking a signature (for receivers and for tests).

Every delivery carries three signatures, so receivers written for any of them verify:

- **The published scheme** (the original's webhook specification): ``x-sora2-signature:
  sha256=<lowercase hex HMAC-SHA256 of the raw body>`` and ``x-sora2-timestamp`` (the attempt's
  time, ISO 8601 UTC, e.g. ``2026-12-02T16:55:00Z``).
- **The original code's header**: ``x-webhook-signature: <lowercase hex HMAC-SHA256 of the raw
  body>`` (the same value without the ``sha256=`` prefix).
- **Standard Webhooks** (https://www.standardwebhooks.com), vidbatch's addition:
  ``webhook-id`` (the event's id, ``evt_...``, the same on every attempt of one event),
  ``webhook-timestamp`` (the attempt's time in unix seconds) and ``webhook-signature``:
  ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; while a key's secret is being
  rotated, one entry per secret, separated by a space.

**The key bytes.** The two hex signatures are keyed with the secret string exactly as the
customer holds it (its UTF-8 bytes, ``whsec_`` prefix included) and made with the current
secret only. The Standard Webhooks signature follows that standard: a secret ``whsec_<rest>``
signs with ``base64.b64decode(rest, validate=True)`` when that succeeds and with
``rest.encode("utf-8")`` when it does not; a secret without the prefix (e.g.
``ENTERPRISE_WEBHOOK_SECRET`` set to a plain string, as the original used) with its UTF-8
bytes. Secrets made by a rotation are ``whsec_`` + standard base64 of 32 random bytes, which
the official Standard Webhooks libraries accept as they are.
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
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
VERSION = "v1"
#: Seconds a receiver should accept between the signed timestamp and its clock.
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(Exception):
    """The webhook's signature does not check out; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key_bytes(secret: str) -> bytes:
    """The HMAC key a secret stands for (see the module docstring)."""
    if secret.startswith(SECRET_PREFIX):
        rest = secret[len(SECRET_PREFIX) :]
        try:
            return base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return rest.encode("utf-8")
    return secret.encode("utf-8")


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_bytes(secret), to_sign, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def legacy_signature(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of the body alone, keyed with the secret string as held
    (``x-webhook-signature``; ``x-sora2-signature`` is ``sha256=`` + this)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def iso_timestamp(timestamp: int) -> str:
    """A unix time as ``x-sora2-timestamp`` writes it: ISO 8601, UTC, ``Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def signature_headers(
    secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signature headers for a message: the first secret is the current one; every
    secret (current, then previous) adds one entry to ``webhook-signature``."""
    secrets = [s for s in secrets if s]
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "x-sora2-timestamp": iso_timestamp(timestamp),
    }
    if secrets:
        headers["webhook-signature"] = " ".join(sign(s, msg_id, timestamp, body) for s in secrets)
        hex_signature = legacy_signature(secrets[0], body)
        headers["x-sora2-signature"] = f"sha256={hex_signature}"
        headers["x-webhook-signature"] = hex_signature
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str | list[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook vidbatch sent and return its parsed JSON body.

    ``payload`` is the raw request body (bytes, before any JSON parsing); ``headers`` the
    request headers (any case); ``secret`` your key's webhook secret, or a list of secrets
    (e.g. old and new while you switch). The Standard Webhooks headers are checked when
    present, else the published ``x-sora2-signature`` / ``x-sora2-timestamp``. Raises
    :class:`WebhookVerificationError` when a header is missing, the timestamp is more than
    ``tolerance`` seconds from ``now``, or no signature matches any secret. Comparisons are
    constant-time.

    Example (any web framework; here aiohttp)::

        from vidbatch.webhooks import WebhookVerificationError, verify

        async def receive(request):
            body = await request.read()
            try:
                event = verify(body, request.headers, "whsec_...")
            except WebhookVerificationError as exc:
                return web.Response(status=400, text=exc.reason)
            if event["event"] == "batch.completed":
                ...
            return web.Response(status=204)
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    current = time.time() if now is None else now
    if _header(headers, "webhook-signature") is None and _header(headers, "x-sora2-signature"):
        matched = _published_matches(payload, headers, secrets, tolerance, current)
    else:
        matched = _standard_matches(payload, headers, secrets, tolerance, current)
    if not matched:
        raise WebhookVerificationError("no signature matches the secret(s)")
    try:
        body: dict[str, Any] = json.loads(payload)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    return body


def _check_age(timestamp: float, current: float, tolerance: int, header: str) -> None:
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"{header} is {int(current - timestamp)} s from now (tolerance {tolerance} s)"
        )


def _any_equal(offered: Iterable[str], expected: list[str]) -> bool:
    matched = False
    for entry in offered:
        for candidate in expected:
            # keep comparing after a match: the time taken does not tell which one matched
            matched |= hmac.compare_digest(entry.encode(), candidate.encode())
    return matched


def _standard_matches(
    payload: bytes, headers: Mapping[str, str], secrets: list[str], tolerance: int, current: float
) -> bool:
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
    offered = [e for e in signatures.split(" ") if e.startswith(f"{VERSION},")]
    return _any_equal(offered, [sign(s, msg_id, timestamp, payload) for s in secrets])


def _published_matches(
    payload: bytes, headers: Mapping[str, str], secrets: list[str], tolerance: int, current: float
) -> bool:
    stamp = _header(headers, "x-sora2-timestamp")
    if not stamp:
        raise WebhookVerificationError("missing x-sora2-timestamp header")
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise WebhookVerificationError("x-sora2-timestamp is not an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    _check_age(at.timestamp(), current, tolerance, "x-sora2-timestamp")
    offered = [_header(headers, "x-sora2-signature") or ""]
    return _any_equal(offered, [f"sha256={legacy_signature(s, payload)}" for s in secrets])
