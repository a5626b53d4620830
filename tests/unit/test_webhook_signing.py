"""Webhook signatures: what vidbatch signs verifies with its helper and with a receiver's
own few lines of hmac + base64; anything altered is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from datetime import datetime

import pytest

from vidbatch.domain.webhook_retry import CAP, SCHEDULE, next_delay
from vidbatch.services.accounts import new_webhook_secret
from vidbatch.webhooks import WebhookVerificationError, verify
from vidbatch.webhooks.delivery import refused_address
from vidbatch.webhooks.signing import encode_body, key_bytes, signature_headers

RAW_KEY = bytes(range(32))
B64_SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()  # a Standard Webhooks secret
URLSAFE_SECRET = "whsec_Ab-cd_efGhIjKlMnOpQrStUvWxYz0123456789-_xyz"  # not strict base64
PLAIN_SECRET = "the original's plain shared secret"


def receiver_key(secret: str) -> bytes:
    """A receiver's reading of the documented key rule, written without vidbatch."""
    if secret.startswith("whsec_"):
        rest = secret[len("whsec_") :]
        try:
            return base64.b64decode(rest, validate=True)
        except ValueError:
            return rest.encode()
    return secret.encode()


def receiver_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification done by hand: hmac + base64, nothing else."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(
        hmac.new(receiver_key(secret), signed, hashlib.sha256).digest()
    ).decode()
    return any(
        hmac.compare_digest(entry.split(",", 1)[1], expected)
        for entry in headers["webhook-signature"].split(" ")
        if entry.startswith("v1,")
    )


def published_receiver_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The original's published webhook spec done by hand: ``sha256=`` + hex HMAC of the raw
    body keyed with the secret string, and an ISO 8601 ``x-sora2-timestamp``."""
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    sent_at = datetime.fromisoformat(headers["x-sora2-timestamp"].replace("Z", "+00:00"))
    fresh = abs(time.time() - sent_at.timestamp()) <= 300
    return fresh and hmac.compare_digest(headers["x-sora2-signature"], expected)


def signed(secrets: list[str], body: bytes, *, at: int | None = None) -> dict[str, str]:
    return signature_headers(secrets, "evt_123", at if at is not None else int(time.time()), body)


BODY = encode_body(
    {"event": "batch.completed", "batch_id": "b1", "summary": {"total": 2}, "note": "crème brûlée"}
)


@pytest.mark.parametrize("secret", [B64_SECRET, URLSAFE_SECRET, PLAIN_SECRET])
def test_signature_verifies_with_the_helper_and_by_hand(secret: str) -> None:
    headers = signed([secret], BODY)
    assert verify(BODY, headers, secret)["batch_id"] == "b1"
    assert receiver_accepts(secret, headers, BODY)
    assert published_receiver_accepts(secret, headers, BODY)
    # the original code's header: the same hex, keyed with the secret string as held
    legacy = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert headers["x-webhook-signature"] == legacy


@pytest.mark.parametrize("secret", [B64_SECRET, URLSAFE_SECRET, PLAIN_SECRET])
def test_the_standard_webhooks_library_verifies(secret: str) -> None:
    from standardwebhooks.webhooks import Webhook

    headers = signed([secret], BODY)
    # The library takes a whsec_ + base64 secret as it is; for the other forms a receiver
    # hands it the documented key bytes, base64-encoded.
    library_secret = (
        secret if secret == B64_SECRET else base64.b64encode(receiver_key(secret)).decode()
    )
    assert Webhook(library_secret).verify(BODY, headers)["batch_id"] == "b1"


@pytest.mark.parametrize("secret", [B64_SECRET, URLSAFE_SECRET, PLAIN_SECRET])
def test_the_published_scheme_verifies_with_the_helper_alone(secret: str) -> None:
    headers = signed([secret], BODY)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        del headers[name]
    assert verify(BODY, headers, secret)["batch_id"] == "b1"
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY.replace(b'"total":2', b'"total":3'), headers, secret)
    stale = signed([secret], BODY, at=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(BODY, {k: v for k, v in stale.items() if k.startswith("x-")}, secret)


def test_key_bytes_follow_the_documented_rule() -> None:
    assert key_bytes(B64_SECRET) == RAW_KEY
    assert key_bytes(URLSAFE_SECRET) == URLSAFE_SECRET[len("whsec_") :].encode()
    assert key_bytes(PLAIN_SECRET) == PLAIN_SECRET.encode()
    rotated = new_webhook_secret()
    assert rotated.startswith("whsec_") and len(key_bytes(rotated)) == 32


def test_headers_are_read_in_any_case() -> None:
    headers = {k.upper(): v for k, v in signed([B64_SECRET], BODY).items()}
    assert verify(BODY, headers, B64_SECRET)["event"] == "batch.completed"


def test_tampered_body_is_refused() -> None:
    headers = signed([B64_SECRET], BODY)
    tampered = BODY.replace(b'"total":2', b'"total":3')
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(tampered, headers, B64_SECRET)
    assert not receiver_accepts(B64_SECRET, headers, tampered)


def test_changed_id_is_refused() -> None:
    headers = signed([B64_SECRET], BODY)
    headers["webhook-id"] = "evt_other"
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, B64_SECRET)


def test_old_or_future_timestamp_is_refused() -> None:
    now = int(time.time())
    old = signed([B64_SECRET], BODY, at=now - 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(BODY, old, B64_SECRET)
    future = signed([B64_SECRET], BODY, at=now + 400)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(BODY, future, B64_SECRET)
    # inside a wider tolerance, or judged at the time it was sent, it is fine
    assert verify(BODY, old, B64_SECRET, tolerance=600)
    assert verify(BODY, old, B64_SECRET, now=now - 300)


def test_a_forged_timestamp_breaks_the_signature() -> None:
    headers = signed([B64_SECRET], BODY, at=int(time.time()) - 3600)
    headers["webhook-timestamp"] = str(int(time.time()))
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, headers, B64_SECRET)


def test_wrong_secret_is_refused() -> None:
    headers = signed([B64_SECRET], BODY)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(BODY, headers, new_webhook_secret())
    assert not receiver_accepts(PLAIN_SECRET, headers, BODY)


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(drop: str) -> None:
    headers = {k: v for k, v in signed([B64_SECRET], BODY).items() if k.startswith("webhook-")}
    del headers[drop]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(BODY, headers, B64_SECRET)


def test_unsigned_headers_are_refused() -> None:
    headers = signed([], BODY)
    assert "webhook-signature" not in headers and "x-webhook-signature" not in headers
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, B64_SECRET)


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    new, old = new_webhook_secret(), B64_SECRET
    headers = signed([new, old], BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    for secret in (new, old):
        assert verify(BODY, headers, secret)["event"] == "batch.completed"
        assert receiver_accepts(secret, headers, BODY)
    assert verify(BODY, headers, [new_webhook_secret(), old])  # a list: any one may match
    # the hex headers follow the current secret only
    assert (
        headers["x-webhook-signature"] == hmac.new(new.encode(), BODY, hashlib.sha256).hexdigest()
    )
    assert published_receiver_accepts(new, headers, BODY)
    assert not published_receiver_accepts(old, headers, BODY)


def test_unknown_signature_versions_are_ignored() -> None:
    headers = signed([B64_SECRET], BODY)
    headers["webhook-signature"] = "v1a,AAAA " + headers["webhook-signature"]
    assert verify(BODY, headers, B64_SECRET)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, B64_SECRET)


def test_body_is_compact_utf8_json() -> None:
    assert json.loads(BODY)["note"] == "crème brûlée"
    assert BODY.startswith(b'{"event":"batch.completed","batch_id":"b1",')
    assert "crème".encode() in BODY


def test_retry_delays_grow_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempts, base in enumerate(SCHEDULE, start=1):
        delay = next_delay(attempts, rng)
        assert base <= delay <= min(base * 1.2, CAP)
    assert next_delay(50, rng) == CAP
    assert next_delay(1, rng, retry_after=300) == 300  # a receiver's Retry-After is believed
    assert next_delay(1, rng, retry_after=10**9) == CAP


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not refused_address(address)
