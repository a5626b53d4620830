"""Customer webhooks delivered to a real receiver over HTTP, on SQLite and PostgreSQL:
retries and their record, refusals (private addresses, redirects), time-outs that delay
nobody, leases, signatures checked the way a customer would, and the whole flow through
the worker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select, update

from tests.contract import published
from tests.helpers import assert_audit_clean, finish_tasks, items, new_batch
from tests.integration.webhook_receiver import Receiver, free_port, running_receiver
from tests.integration.worker_helpers import batch_row, run_until_settled, runtime_with
from vidbatch.clock import utcnow
from vidbatch.db.schema import webhook_deliveries
from vidbatch.domain.webhook_retry import SCHEDULE
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.services.batches import Caller
from vidbatch.services.deliveries import Outcome, record
from vidbatch.webhooks import WebhookVerificationError, verify
from vidbatch.webhooks.delivery import Due, claim, deliver_due
from vidbatch.worker.round import run_once


async def customer(engine: Any, credits: int = 1000) -> tuple[Caller, str]:
    """A new account; its caller and the webhook secret of its key."""
    account_id, key = await account_svc.create_account(engine, "acme", credits=credits)
    return Caller(account_id=account_id, key_id=key.key_id), key.webhook_secret


async def deliveries(engine: Any, batch_id: str | None = None) -> list[Any]:
    query = select(webhook_deliveries).order_by(webhook_deliveries.c.created_at)
    if batch_id is not None:
        query = query.where(webhook_deliveries.c.batch_id == batch_id)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def make_due(engine: Any) -> None:
    """Instead of sleeping through the backoff: every waiting event is due now."""
    async with engine.begin() as conn:
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.next_attempt_at.is_not(None))
            .values(next_attempt_at=utcnow())
        )


def receiver_key(secret: str) -> bytes:
    """The documented key rule, as a customer would write it."""
    rest = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(rest, validate=True)
    except ValueError:
        return rest.encode()


def independent_check(secret: str, r: Any, *, legacy: bool = True) -> dict[str, Any]:
    """Verify a received webhook with nothing but hmac and base64, and with the official
    Standard Webhooks library; ``legacy``: the published hex headers too (current secret)."""
    from standardwebhooks.webhooks import Webhook

    key = receiver_key(secret)
    signed = f"{r.headers['webhook-id']}.{r.headers['webhook-timestamp']}.".encode() + r.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert expected in r.headers["webhook-signature"].split(" ")
    assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
    Webhook(base64.b64encode(key).decode()).verify(r.body, dict(r.headers))
    if legacy:
        published = hmac.new(secret.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-sora2-signature"] == f"sha256={published}"
        assert r.headers["x-webhook-signature"] == published
        sent_at = datetime.fromisoformat(r.headers["x-sora2-timestamp"].replace("Z", "+00:00"))
        assert abs(sent_at.timestamp() - time.time()) < 60
    body: dict[str, Any] = json.loads(r.body)
    return body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


@pytest.fixture
async def strict_runtime(settings_factory: Any, engine: Any) -> AsyncIterator[Runtime]:
    """A runtime as in production: private webhook addresses refused."""
    rt = await Runtime.open(settings_factory(allow_private_webhooks=False), engine=engine)
    yield rt
    await rt.close()


async def test_three_failures_then_success_is_one_delivery_of_four_attempts(
    runtime: Any, receiver: Receiver
) -> None:
    caller, secret = await customer(runtime.engine)
    receiver.statuses = [500, 500, 500]
    created = await new_batch(
        runtime.engine, caller, {"items": items(2), "webhook_url": receiver.at("/hook")}
    )
    started = utcnow()
    for n in range(1, 4):
        assert await deliver_due(runtime, owner="w1") == (0, 1)
        (row,) = await deliveries(runtime.engine, created.batch_id)
        assert (row.attempts, row.last_status, row.last_error) == (n, 500, "HTTP 500")
        assert row.delivered_at is None and row.failed_at is None
        # the schedule, not sooner: at least its step for this attempt
        assert row.next_attempt_at >= started + timedelta(seconds=SCHEDULE[n - 1])
        batch = await batch_row(runtime.engine, created.batch_id)
        assert (batch.webhook_status, batch.webhook_attempts) == ("retrying", n)
        assert batch.webhook_last_error == "batch.created: HTTP 500"
        assert await deliver_due(runtime, owner="w1") == (0, 0)  # not due yet
        await make_due(runtime.engine)
    assert await deliver_due(runtime, owner="w1") == (1, 0)
    (row,) = await deliveries(runtime.engine, created.batch_id)
    assert row.attempts == 4 and row.delivered_at is not None
    assert (row.next_attempt_at, row.last_status, row.last_error) == (None, 200, None)
    assert row.lease_owner is None
    batch = await batch_row(runtime.engine, created.batch_id)
    assert (batch.webhook_status, batch.webhook_attempts) == ("sent", 4)
    assert batch.webhook_last_error is None and batch.webhook_last_sent_at is not None
    # four requests, one event: the same id each time, each signed for its own moment
    assert len(receiver.seen) == 4
    assert {r.headers["webhook-id"] for r in receiver.seen} == {row.event_id}
    for r in receiver.seen:
        assert verify(r.body, r.headers, secret)["event"] == "batch.created"
        assert independent_check(secret, r)["batch_id"] == created.batch_id
    # nothing more to send, ever
    await make_due(runtime.engine)
    assert await deliver_due(runtime, owner="w1") == (0, 0)
    assert len(receiver.seen) == 4


async def test_out_of_attempts_is_failed_and_stays_failed(
    settings_factory: Any, engine: Any, receiver: Receiver
) -> None:
    async with runtime_with(settings_factory, engine, webhook_retries=1) as rt:
        caller, _ = await customer(engine)
        receiver.default = 503
        created = await new_batch(
            engine, caller, {"items": items(1), "webhook_url": receiver.at("/hook")}
        )
        # this batch was written with the default of 4 attempts; the row decides
        async with engine.begin() as conn:
            await conn.execute(update(webhook_deliveries).values(max_attempts=2))
        assert await deliver_due(rt, owner="w") == (0, 1)
        await make_due(engine)
        assert await deliver_due(rt, owner="w") == (0, 1)
        (row,) = await deliveries(engine, created.batch_id)
        assert row.attempts == 2 and row.failed_at is not None
        assert row.next_attempt_at is None and row.delivered_at is None
        batch = await batch_row(engine, created.batch_id)
        assert (batch.webhook_status, batch.webhook_attempts) == ("failed", 2)
        assert batch.webhook_last_error == "batch.created: HTTP 503"
        await make_due(engine)
        assert await deliver_due(rt, owner="w") == (0, 0)
        assert len(receiver.seen) == 2
        assert rt.metrics.webhooks.labels("failed")._value.get() == 1
        assert rt.metrics.webhooks.labels("retry")._value.get() == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_address_is_refused_without_a_connection(
    strict_runtime: Runtime, receiver: Receiver, host: str
) -> None:
    caller, _ = await customer(strict_runtime.engine)
    url = receiver.at("/hook").replace("127.0.0.1", host)
    created = await new_batch(
        strict_runtime.engine, caller, {"items": items(1), "webhook_url": url}
    )
    assert await deliver_due(strict_runtime, owner="w") == (0, 1)
    assert receiver.seen == []
    (row,) = await deliveries(strict_runtime.engine, created.batch_id)
    assert row.last_error.startswith("private address refused")
    assert "127.0.0.1" in row.last_error and row.last_status is None
    assert row.attempts == 1 and row.next_attempt_at is not None  # tried again later
    batch = await batch_row(strict_runtime.engine, created.batch_id)
    assert batch.webhook_status == "retrying"
    assert "private address refused" in batch.webhook_last_error


async def test_redirect_is_a_failed_attempt_and_not_followed(
    runtime: Any, receiver: Receiver
) -> None:
    caller, _ = await customer(runtime.engine)
    created = await new_batch(
        runtime.engine, caller, {"items": items(1), "webhook_url": receiver.at("/redirect")}
    )
    assert await deliver_due(runtime, owner="w") == (0, 1)
    assert [r.path for r in receiver.seen] == ["/redirect"]  # /target never asked
    (row,) = await deliveries(runtime.engine, created.batch_id)
    assert row.last_status == 302
    assert row.last_error == "redirect refused: HTTP 302 to /target"


async def test_connection_refused_and_dns_failure_say_so(runtime: Any) -> None:
    caller, _ = await customer(runtime.engine)
    closed = f"http://127.0.0.1:{free_port()}/hook"
    nowhere = "http://no-such-host.invalid/hook"
    a = await new_batch(runtime.engine, caller, {"items": items(1), "webhook_url": closed})
    b = await new_batch(runtime.engine, caller, {"items": items(1), "webhook_url": nowhere})
    assert await deliver_due(runtime, owner="w") == (0, 2)
    (row_a,) = await deliveries(runtime.engine, a.batch_id)
    (row_b,) = await deliveries(runtime.engine, b.batch_id)
    assert row_a.last_error.startswith("connection refused")
    assert row_b.last_error.startswith("DNS failure: cannot resolve no-such-host.invalid")


async def test_slow_receiver_times_out_and_delays_neither_settlement_nor_others(
    settings_factory: Any, engine: Any, receiver: Receiver, sim: Any
) -> None:
    # The slow receiver holds every request for a minute; the fast one has two seconds to
    # answer, however busy the machine is.
    rt = await Runtime.open(settings_factory(webhook_timeout_ms=2000), engine=engine)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(rt.close)
        fast = await stack.enter_async_context(running_receiver())
        receiver.delay = 60.0
        caller, _ = await customer(engine)
        slow_batch = await new_batch(
            engine, caller, {"items": items(1), "webhook_url": receiver.at("/slow")}
        )
        other_customer, _ = await customer(engine)
        fast_batch = await new_batch(
            engine, other_customer, {"items": items(1), "webhook_url": fast.at("/fast")}
        )
        # both batches end (three events each: created, failed, refunded) before the clock
        # starts; then another batch, without a webhook, is worked while they are sent
        for batch in (slow_batch, fast_batch):
            await finish_tasks(engine, batch.batch_id, {0: "failed"})
        await run_until_settled(rt)
        other = await new_batch(engine, caller, items(3))
        started = time.monotonic()
        settled_at: list[float] = []

        async def settle() -> None:
            await run_until_settled(rt)
            settled_at.append(time.monotonic() - started)

        async def deliver() -> tuple[int, int]:
            await make_due(engine)
            return await deliver_due(rt, owner="w")

        (sent, failed), _ = await asyncio.gather(deliver(), settle())
        elapsed = time.monotonic() - started
        assert (sent, failed) == (3, 3)
        assert elapsed < 30.0, f"took {elapsed:.2f}s; the receiver sleeps 60s"
        assert settled_at and settled_at[0] < 30.0
        assert (await batch_row(engine, other.batch_id)).settled_at is not None
        slow_rows = await deliveries(engine, slow_batch.batch_id)
        assert len(slow_rows) == 3
        assert all(
            r.last_error == "timeout: no answer within 2 s" and r.attempts == 1 for r in slow_rows
        )
        assert len(receiver.seen) == 3  # each was sent, none answered in time
        fast_rows = await deliveries(engine, fast_batch.batch_id)
        assert all(r.delivered_at is not None for r in fast_rows)
        assert sorted(fast.events()) == ["batch.completed", "batch.created", "batch.refunded"]
        await assert_audit_clean(engine)


async def test_the_full_flow_through_the_worker(runtime: Any, receiver: Receiver, sim: Any) -> None:
    caller, secret = await customer(runtime.engine)
    body = {
        "items": [
            {"prompt": "a city at night", "model": "sora-2", "metadata": {"sku": "A1"}},
            {"prompt": "refused [sim:moderation]", "model": "sora-2", "metadata": {"sku": "B2"}},
        ],
        "webhook_url": receiver.at("/hooks/vidbatch"),
        "metadata": {"campaign": "spring"},
    }
    created = await new_batch(runtime.engine, caller, body, request_id="flow-1")
    for _ in range(200):
        await run_once(runtime)  # the worker delivers at the end of each round
        batch = await batch_row(runtime.engine, created.batch_id)
        if batch.settled_at is not None and batch.webhook_status == "sent":
            break
        await asyncio.sleep(0.02)
    assert batch.webhook_status == "sent", batch
    events = {}
    for r in receiver.seen:
        event = verify(r.body, r.headers, secret)
        assert independent_check(secret, r) == event
        assert r.headers["x-batch-id"] == created.batch_id
        assert r.headers["x-webhook-event"] == event["event"]
        assert r.headers["content-type"] == "application/json"
        events[event["event"]] = event
    assert (
        sorted(receiver.events())
        == sorted(events)
        == ["batch.completed", "batch.created", "batch.refunded", "batch.running"]
    )
    for event in events.values():
        assert event["batch_id"] == created.batch_id and event["request_id"] == "flow-1"
        assert event["metadata"] == {"campaign": "spring"}
        assert event["timestamp"].endswith("Z")
        # every event as the original's published webhook spec describes it
        jsonschema.validate(event, published.EVENTS[event["event"]])
    assert events["batch.created"]["status"] == "pending"
    assert events["batch.created"]["ledger"] == {"reserved": 20, "settled": 0, "refunded": 0}
    assert events["batch.running"]["status"] == "running"
    completed = events["batch.completed"]
    assert completed["status"] == "partial"
    assert completed["summary"] == {
        "total": 2,
        "succeeded": 1,
        "failed": 1,
        "running": 0,
        "pending": 0,
        "cancelled": 0,
    }
    assert completed["duration_ms"] >= 0
    assert completed["ledger"] == {"reserved": 20, "settled": 10, "refunded": 10}
    ok, bad = completed["items"]
    assert (ok["index"], ok["status"], ok["metadata"], ok["error"]) == (
        0,
        "succeeded",
        {"sku": "A1"},
        None,
    )
    assert ok["video_url"] and ok["failure_type"] is None
    assert (bad["index"], bad["status"], bad["failure_type"], bad["failure_reason"]) == (
        1,
        "failed",
        "model_error",
        "moderation",
    )
    assert bad["video_url"] is None and bad["error"] and bad["metadata"] == {"sku": "B2"}
    assert events["batch.refunded"]["ledger"]["refunded"] == 10
    assert events["batch.refunded"]["refund_reason"] == "failed_items"
    assert events["batch.refunded"]["refund_details"] == {
        "refunded": 10,
        "failed_items": 1,
        "cancelled_items": 0,
    }
    assert "items" not in events["batch.refunded"]
    rows = await deliveries(runtime.engine, created.batch_id)
    assert len(rows) == 4 and all(r.attempts == 1 and r.delivered_at for r in rows)
    assert (await batch_row(runtime.engine, created.batch_id)).webhook_attempts == 4
    await assert_audit_clean(runtime.engine)


async def test_a_batch_where_nothing_succeeded_completes_failed_and_refunds(
    runtime: Any, receiver: Receiver, sim: Any
) -> None:
    caller, secret = await customer(runtime.engine)
    created = await new_batch(
        runtime.engine,
        caller,
        {
            "items": [{"prompt": "x [sim:error]"}, {"prompt": "y [sim:reject]"}],
            "webhook_url": receiver.at("/hook"),
        },
    )
    await run_until_settled(runtime)
    while await deliver_due(runtime, owner="w") != (0, 0):
        pass
    events = {e["event"]: e for e in (verify(r.body, r.headers, secret) for r in receiver.seen)}
    # As published: batch.completed with status failed (batch.failed is for a batch that
    # could not run at all).
    assert "batch.failed" not in events
    assert events["batch.completed"]["status"] == "failed"
    assert [i["status"] for i in events["batch.completed"]["items"]] == ["failed", "failed"]
    for event in events.values():
        jsonschema.validate(event, published.EVENTS[event["event"]])
    assert events["batch.refunded"]["ledger"] == {"reserved": 20, "settled": 0, "refunded": 20}
    assert (await batch_row(runtime.engine, created.batch_id)).webhook_status == "sent"


async def test_rotation_signs_with_both_secrets_until_the_overlap_ends(
    runtime: Any, receiver: Receiver
) -> None:
    caller, old = await customer(runtime.engine)
    assert caller.key_id is not None
    new = await account_svc.rotate_webhook_secret(runtime.engine, caller.key_id)
    assert new != old and new.startswith("whsec_")
    await new_batch(runtime.engine, caller, {"items": items(1), "webhook_url": receiver.at("/")})
    assert await deliver_due(runtime, owner="w") == (1, 0)
    (r,) = receiver.seen
    assert len(r.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert verify(r.body, r.headers, secret)["event"] == "batch.created"
    # by hand too; the original's header follows the new secret only
    assert independent_check(new, r)["event"] == "batch.created"
    assert independent_check(old, r, legacy=False)["event"] == "batch.created"
    assert r.headers["x-webhook-signature"] != hmac.new(old.encode(), r.body, "sha256").hexdigest()
    # with no overlap, the old secret no longer signs
    newer = await account_svc.rotate_webhook_secret(
        runtime.engine, caller.key_id, overlap_seconds=0
    )
    await new_batch(runtime.engine, caller, {"items": items(1), "webhook_url": receiver.at("/")})
    assert await deliver_due(runtime, owner="w") == (1, 0)
    last = receiver.seen[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    assert verify(last.body, last.headers, newer)
    with pytest.raises(WebhookVerificationError):
        verify(last.body, last.headers, new)


async def test_fallback_secret_and_unsigned_events(
    settings_factory: Any, engine: Any, receiver: Receiver
) -> None:
    """A batch without a key's secret is signed with ENTERPRISE_WEBHOOK_SECRET, as the
    original did; with neither, it goes out unsigned."""
    from tests.helpers import new_account

    caller = await new_account(engine)
    keyless = Caller(account_id=caller.account_id, key_id=None)
    body = {"items": items(1), "webhook_url": receiver.at("/")}
    for env_secret in ("plain-shared-secret", None):
        rt = await Runtime.open(settings_factory(webhook_secret=env_secret), engine=engine)
        try:
            await new_batch(engine, keyless, body)
            assert await deliver_due(rt, owner="w") == (1, 0)
        finally:
            await rt.close()
    signed, unsigned = receiver.seen
    assert verify(signed.body, signed.headers, "plain-shared-secret")
    assert (
        signed.headers["x-webhook-signature"]
        == hmac.new(b"plain-shared-secret", signed.body, hashlib.sha256).hexdigest()
    )
    assert "webhook-signature" not in unsigned.headers
    assert "x-webhook-signature" not in unsigned.headers
    assert unsigned.headers["webhook-id"].startswith("evt_")


async def test_a_worker_that_lost_its_lease_writes_nothing(
    runtime: Any, receiver: Receiver
) -> None:
    caller, _ = await customer(runtime.engine)
    created = await new_batch(
        runtime.engine, caller, {"items": items(1), "webhook_url": receiver.at("/")}
    )
    now = utcnow()
    async with runtime.engine.begin() as conn:
        (stale,) = await claim(
            conn, owner="stale", now=now, lease_until=now + timedelta(seconds=60), limit=10
        )
    # the stale worker hangs; its lease runs out and another worker delivers
    assert await deliver_due(runtime, owner="w") == (0, 0)  # still leased
    await make_due(runtime.engine)
    assert await deliver_due(runtime, owner="fresh") == (1, 0)
    due = Due(
        id=stale.id,
        event_id=stale.event_id,
        batch_id=stale.batch_id,
        url=stale.url,
        event_type=stale.event_type,
        payload=stale.payload,
        attempts=stale.attempts,
        max_attempts=stale.max_attempts,
        secrets=(),
    )
    async with runtime.engine.begin() as conn:
        outcome = await record(
            conn,
            due,
            Outcome(ok=False, status=500, error="HTTP 500"),
            owner="stale",
            now=utcnow(),
            rng=random.Random(1),
        )
    assert outcome == "lost"
    (row,) = await deliveries(runtime.engine, created.batch_id)
    assert row.delivered_at is not None and row.attempts == 1 and row.last_error is None
    assert (await batch_row(runtime.engine, created.batch_id)).webhook_status == "sent"


async def test_concurrent_deliverers_send_each_event_once(runtime: Any, receiver: Receiver) -> None:
    caller, _ = await customer(runtime.engine, credits=10_000)
    for _ in range(12):
        await new_batch(
            runtime.engine, caller, {"items": items(1), "webhook_url": receiver.at("/")}
        )
    results = await asyncio.gather(
        *(deliver_due(runtime, owner=f"w{n}", limit=5) for n in range(4))
    )
    while await deliver_due(runtime, owner="last") != (0, 0):
        pass
    assert sum(sent for sent, _ in results) <= 12
    ids = [r.headers["webhook-id"] for r in receiver.seen]
    assert len(ids) == 12 and len(set(ids)) == 12
    rows = await deliveries(runtime.engine)
    assert all(r.attempts == 1 and r.delivered_at is not None for r in rows)
