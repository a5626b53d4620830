"""Signing customer webhooks, and checking a signature (for receivers and for tests).

vidbatch follows the Standard Webhooks scheme (https://www.standardwebhooks.com):

- ``webhook-id``: the event's id (``evt_...``), the same on every attempt of one event;
- ``webhook-timestamp``: the attempt's time, in unix seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; while a
  key's secret is being rotated, one such entry per secret, separated by a space.

For receivers written against the original system it also sends ``x-webhook-signature``:
the lowercase hex HMAC-SHA256 of the raw body alone (no timestamp, so no replay
protection), made with the current secret only.

**The key bytes.** A secret ``whsec_<rest>`` signs with ``base64.b64decode(rest,
validate=True)`` (standard alphabet, ``=`` padding, nothing else) when that succeeds, and
with ``rest.encode("utf-8")`` when it does not; a secret without the ``whsec_`` prefix
(e.g. ``ENTERPRISE_WEBHOOK_SECRET`` set to a plain string, as the original used) signs with
its UTF-8 bytes. Secrets made by a rotation are ``whsec_`` + standard base64 of 32 random
bytes, which the official Standard Webhooks libraries accept as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
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
    """The original's ``x-webhook-signature``: hex HMAC-SHA256 of the body alone."""
    return hmac.new(key_bytes(secret), body, hashlib.sha256).hexdigest()


def signature_headers(
    secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signature headers for a message: the first secret is the current one; every
    secret (current, then previous) adds one entry to ``webhook-signature``."""
    secrets = [s for s in secrets if s]
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secrets:
        headers["webhook-signature"] = " ".join(sign(s, msg_id, timestamp, body) for s in secrets)
        headers["x-webhook-signature"] = legacy_signature(secrets[0], body)
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
    (e.g. old and new while you switch). Raises :class:`WebhookVerificationError` when a
    header is missing, the timestamp is more than ``tolerance`` seconds from ``now``, or no
    signature matches any secret. Comparisons are constant-time.

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
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {int(current - timestamp)} s from now (tolerance {tolerance} s)"
        )
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    expected = [sign(s, msg_id, timestamp, payload).encode() for s in secrets]
    matched = False
    for entry in signatures.split(" "):
        if not entry.startswith(f"{VERSION},"):
            continue
        for candidate in expected:
            # keep comparing after a match: the time taken does not tell which one matched
            matched |= hmac.compare_digest(entry.encode(), candidate)
    if not matched:
        raise WebhookVerificationError("no signature matches the secret(s)")
    try:
        body: dict[str, Any] = json.loads(payload)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    return body
