"""One customer's dead webhook receiver does not hold back another's: claims are
round-robin across API keys with a cap of events in flight per key, each event is recorded
as soon as its own attempt ends, and a receiver that keeps timing out is paused (its
events put off, attempts untouched) while the others are delivered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, items, new_batch
from tests.integration.webhook_receiver import Receiver, running_receiver
from vidbatch.clock import FakeClock
from vidbatch.db.schema import webhook_deliveries
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.services.batches import Caller
from vidbatch.webhooks.delivery import PER_KEY_INFLIGHT, deliver_due

wd = webhook_deliveries


async def tenant(engine: AsyncEngine, name: str) -> Caller:
    account_id, key = await account_svc.create_account(engine, name, credits=10_000)
    return Caller(account_id=account_id, key_id=key.key_id)


async def rows_of(engine: AsyncEngine, url_part: str) -> list[Any]:
    async with engine.connect() as conn:
        found = await conn.execute(select(wd).order_by(wd.c.created_at))
        return [r for r in found.all() if url_part in r.url]


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a condition (the test's own timeout bounds it), never for a duration."""
    while not await condition():
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def dead_and_healthy() -> AsyncIterator[tuple[Receiver, Receiver]]:
    async with running_receiver() as dead, running_receiver() as healthy:
        dead.delay = 3600.0  # never answers until released
        try:
            yield dead, healthy
        finally:
            dead.release.set()


async def test_a_dead_receiver_does_not_delay_another_tenants_delivery(
    settings_factory: Any, engine: AsyncEngine
) -> None:
    rt = await Runtime.open(settings_factory(webhook_timeout_ms=600_000), engine=engine)
    try:
        async with dead_and_healthy() as (dead, healthy):
            noisy, quiet = await tenant(engine, "noisy"), await tenant(engine, "quiet")
            for _ in range(12):  # created first: the oldest events are all the noisy one's
                await new_batch(engine, noisy, {"items": items(1), "webhook_url": dead.at("/d")})
            await new_batch(engine, quiet, {"items": items(1), "webhook_url": healthy.at("/h")})
            assert len(await rows_of(engine, "/d")) == 12

            first = asyncio.create_task(deliver_due(rt, owner="w1", limit=10))

            async def quiet_done_or_noisy_flooding() -> bool:
                (row,) = await rows_of(engine, "/h")
                return row.delivered_at is not None or len(dead.seen) >= 10

            await until(quiet_done_or_noisy_flooding)
            (quiet_row,) = await rows_of(engine, "/h")
            assert quiet_row.delivered_at is not None  # while the dead ones still hang
            assert healthy.events() == ["batch.created"]
            await until(lambda: _seen(dead, PER_KEY_INFLIGHT))
            assert not first.done()
            assert len(dead.seen) == PER_KEY_INFLIGHT  # the noisy key's share, no more
            hanging = [r for r in await rows_of(engine, "/d") if r.lease_owner == "w1"]
            assert len(hanging) == PER_KEY_INFLIGHT
            assert all(r.delivered_at is None and r.attempts == 0 for r in hanging)

            # Another worker meanwhile takes none of the noisy key's events: its cap is
            # across workers. A new event of the quiet tenant goes out at once.
            await new_batch(engine, quiet, {"items": items(1), "webhook_url": healthy.at("/h")})
            assert await deliver_due(rt, owner="w2", limit=10) == (1, 0)
            assert len(dead.seen) == PER_KEY_INFLIGHT

            dead.release.set()  # the dead receiver wakes up: the first call ends
            assert await first == (PER_KEY_INFLIGHT + 1, 0)
            assert await deliver_due(rt, owner="w1", limit=10) == (PER_KEY_INFLIGHT, 0)
        await assert_audit_clean(engine)
    finally:
        await rt.close()


async def _seen(receiver: Receiver, n: int) -> bool:
    return len(receiver.seen) >= n


async def make_due(engine: AsyncEngine, clock: FakeClock) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(wd).where(wd.c.next_attempt_at.is_not(None)).values(next_attempt_at=clock.now())
        )


@pytest.mark.parametrize("answer_later", [False, True])
async def test_a_receiver_that_keeps_timing_out_is_paused_not_the_others(
    settings_factory: Any, engine: AsyncEngine, answer_later: bool
) -> None:
    rt = await Runtime.open(settings_factory(webhook_timeout_ms=200), engine=engine)
    try:
        async with dead_and_healthy() as (dead, healthy):
            noisy, quiet = await tenant(engine, "noisy"), await tenant(engine, "quiet")
            for _ in range(6):
                await new_batch(engine, noisy, {"items": items(1), "webhook_url": dead.at("/d")})
            clock = rt.clock = FakeClock()

            # First call: the noisy key's share times out (three in a row pause it).
            assert await deliver_due(rt, owner="w") == (0, PER_KEY_INFLIGHT)
            assert len(dead.seen) == PER_KEY_INFLIGHT

            # Paused: its events are put off without an attempt; the quiet tenant's go out.
            await new_batch(engine, quiet, {"items": items(1), "webhook_url": healthy.at("/h")})
            await make_due(engine, clock)
            assert await deliver_due(rt, owner="w") == (1, 0)
            assert len(dead.seen) == PER_KEY_INFLIGHT  # nothing sent to the paused receiver
            noisy_rows = await rows_of(engine, "/d")
            assert sorted(r.attempts for r in noisy_rows) == [0, 0] + [1] * PER_KEY_INFLIGHT
            put_off = [r for r in noisy_rows if r.attempts == 1]
            assert all(r.last_error.startswith("receiver paused") for r in put_off)
            assert all(r.next_attempt_at > clock.now() for r in put_off)
            assert await deliver_due(rt, owner="w") == (0, 0)  # still paused

            # The pause ends: its events are tried again.
            clock.advance(61)
            await make_due(engine, clock)
            if answer_later:
                dead.delay = 0.0  # alive again: delivered, the breaker closes
                assert await deliver_due(rt, owner="w") == (PER_KEY_INFLIGHT, 0)
                assert rt.webhook_breaker.timeouts("127.0.0.1:" + dead.url.rsplit(":", 1)[1]) == 0
            else:  # still dead: paused again, for twice as long
                assert await deliver_due(rt, owner="w") == (0, PER_KEY_INFLIGHT)
                clock.advance(61)
                await make_due(engine, clock)
                assert await deliver_due(rt, owner="w") == (0, 0)
        await assert_audit_clean(engine)
    finally:
        await rt.close()


async def test_the_worker_keeps_delivering_while_a_claim_hangs(
    settings_factory: Any, engine: AsyncEngine, sim: Any
) -> None:
    """The daemon: while one claim waits on a receiver that never answers, events that
    become due after it are claimed and delivered."""
    from vidbatch.worker.loop import WorkerLoop

    sim.configure(hold=True, gen_time=3600.0)
    rt = await Runtime.open(
        settings_factory(webhook_timeout_ms=600_000, worker_idle_seconds=0.05), engine=engine
    )
    loop = WorkerLoop(rt)
    running: asyncio.Task[None] | None = None
    try:
        async with dead_and_healthy() as (dead, healthy):
            noisy, quiet = await tenant(engine, "noisy"), await tenant(engine, "quiet")
            for _ in range(2):
                await new_batch(engine, noisy, {"items": items(1), "webhook_url": dead.at("/d")})
            running = asyncio.create_task(loop.run())
            await until(lambda: _seen(dead, 2))  # that claim now hangs

            await new_batch(engine, quiet, {"items": items(1), "webhook_url": healthy.at("/h")})

            async def quiet_delivered() -> bool:
                return all(r.delivered_at is not None for r in await rows_of(engine, "/h"))

            await until(quiet_delivered)
            assert "batch.created" in healthy.events()
            assert all(r.delivered_at is None for r in await rows_of(engine, "/d"))
            dead.release.set()
            loop.stop()
            await running
        await assert_audit_clean(engine)
    finally:
        loop.stop()
        if running is not None and not running.done():
            running.cancel()
        await rt.close()
