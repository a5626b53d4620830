"""``vidbatch_client.webhooks.verify`` against real deliveries of a real server: each of the
three signature schemes it sends verifies; a changed body, another secret, an old delivery
or a missing header do not."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from vbstack import Account, Receiver
from vidbatch_client import Client, WebhookVerificationError
from vidbatch_client.webhooks import verify


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def delivered(vb: Client, receiver: Receiver) -> list[tuple[dict[str, str], bytes]]:
    created = vb.create_batch(
        ["hooked one", "hooked two [sim:moderation]"], webhook_url=receiver.url
    )
    vb.wait(created.batch_id, poll_interval=0.1)
    wait_for(lambda: "batch.completed" in receiver.events(), "batch.completed")
    return receiver.deliveries


def test_every_scheme_verifies_real_deliveries(
    vb: Client, account: Account, receiver: Receiver
) -> None:
    deliveries = delivered(vb, receiver)
    assert {"batch.created", "batch.completed"} <= set(receiver.events())
    for headers, body in deliveries:
        assert {"webhook-signature", "x-sora2-signature", "x-webhook-signature"} <= {
            k.lower() for k in headers
        }
        event = verify(body, headers, account.webhook_secret)
        assert event == json.loads(body)
        for scheme in ("standard", "sora2", "webhook"):
            assert verify(body, headers, account.webhook_secret, scheme=scheme) == event
        # several secrets (e.g. while switching): one matching is enough
        assert verify(body, headers, ["whsec_b2xk", account.webhook_secret]) == event
    completed = next(json.loads(b) for _, b in deliveries if b"batch.completed" in b)
    assert completed["status"] == "partial"
    assert [i["status"] for i in completed["items"]] == ["succeeded", "failed"]

    headers, body = deliveries[0]
    for scheme in ("standard", "sora2", "webhook"):
        forgeries_and_replays_are_refused(headers, body, account.webhook_secret, scheme)


def forgeries_and_replays_are_refused(
    headers: dict[str, str], body: bytes, secret: str, scheme: str
) -> None:
    signed = float(headers["webhook-timestamp"])  # the same instant as x-sora2-timestamp

    def refused(*args: object, **kw: object) -> str:
        with pytest.raises(WebhookVerificationError) as exc:
            verify(*args, scheme=scheme, **kw)  # type: ignore[arg-type]
        return exc.value.reason

    assert "no signature matches" in refused(body.replace(b"batch", b"botch", 1), headers, secret)
    assert "no signature matches" in refused(body, headers, "whsec_" + "A" * 44)
    assert "tolerance" in refused(body, headers, secret, now=signed + 301)
    assert "tolerance" in refused(body, headers, secret, now=signed - 301)
    # within the tolerance (5 minutes) it is accepted, and the tolerance can be widened
    for now, tolerance in ((signed + 299, 300), (signed - 299, 300), (signed + 900, 1000)):
        assert verify(body, headers, secret, scheme=scheme, now=now, tolerance=tolerance)  # type: ignore[arg-type]
    stripped = {
        k: v
        for k, v in headers.items()
        if k.lower() not in {"webhook-timestamp", "x-sora2-timestamp"}
    }
    assert "missing" in refused(body, stripped, secret)
