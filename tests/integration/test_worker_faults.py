"""The worker through faults: provider outages, refusals, ambiguous creates, hangs,
stale workers, fairness and the fleet-wide cap. Every path ends settled and audited."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch
from tests.integration.worker_helpers import batch_row, run_until_settled, runtime_with, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import FakeClock, utcnow
from vidbatch.db.schema import video_tasks
from vidbatch.runtime import Runtime
from vidbatch.worker import claims
from vidbatch.worker.round import Round, run_once


async def retries_due_now(engine: AsyncEngine) -> None:
    """Make retried tasks due again at once (their backoff is seconds long)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.status == "pending")
            .values(next_attempt_at=utcnow())
        )


async def test_outage_then_recovery_retries_without_failing(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    settings = settings_factory(submit_max_attempts=50)
    rt = await Runtime.open(settings, engine=engine)
    try:
        caller = await new_account(engine, credits=1000)
        created = await new_batch(engine, caller, items(6))
        sim.configure(outage=True)
        for _ in range(3):
            summary = await run_once(rt, deliver_webhooks=False)
            assert summary.dispatch["tasks_started"] == 0
            await retries_due_now(engine)
        rows = await task_rows(engine, created.batch_id)
        assert all(r.status == "pending" and r.attempts >= 1 and r.last_error for r in rows)
        sim.configure(outage=False)
        await run_until_settled(rt)
        batch = await batch_row(engine, created.batch_id)
        assert (batch.status, batch.success_count) == ("completed", 6)
        assert all(n == 1 for n in sim.stats()["created_per_prompt"].values())
        await assert_audit_clean(engine)
    finally:
        await rt.close()


async def test_submit_gives_up_after_its_attempts_and_refunds(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(settings_factory, engine, submit_max_attempts=2) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, items(2))
        sim.configure(create_500_rate=1.0)
        for _ in range(4):
            await run_once(rt, deliver_webhooks=False)
            await retries_due_now(engine)
        await run_until_settled(rt)
        rows = await task_rows(engine, created.batch_id)
        assert all(r.status == "failed" and r.failure_type == "network" for r in rows)
        assert await balance(engine, caller.account_id) == (100, 0)
        await assert_audit_clean(engine)


async def test_rate_limited_submit_does_not_burn_attempts(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(settings_factory, engine, submit_max_attempts=1) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, items(1))
        sim.configure(create_429_rate=1.0, retry_after=0)
        for _ in range(3):
            await run_once(rt, deliver_webhooks=False)
            await retries_due_now(engine)
        (row,) = await task_rows(engine, created.batch_id)
        assert (row.status, row.attempts) == ("pending", 0)
        sim.configure(create_429_rate=0.0)
        await run_until_settled(rt)
        assert (await batch_row(engine, created.batch_id)).status == "completed"


async def test_provider_refusal_fails_at_once_with_its_reason(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(
        runtime.engine, caller, [{"prompt": "x [sim:reject]"}, {"prompt": "fine"}]
    )
    await run_until_settled(runtime)
    rows = await task_rows(runtime.engine, created.batch_id)
    assert rows[0].status == "failed" and rows[0].failure_type == "param_error"
    assert rows[0].error_message and rows[0].attempts == 1
    assert rows[1].status == "succeeded"
    batch = await batch_row(runtime.engine, created.batch_id)
    assert (batch.status, batch.credits_spent, batch.credits_refunded) == ("partial", 10, 10)
    await assert_audit_clean(runtime.engine)


async def test_ambiguous_create_fails_and_refunds_by_default(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(settings_factory, engine, provider_read_timeout=0.5) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(
            engine, caller, [{"prompt": "lost [sim:ambiguous]"}, {"prompt": "fine"}]
        )
        await run_until_settled(rt)
        rows = await task_rows(engine, created.batch_id)
        assert rows[0].status == "failed" and rows[0].failure_reason == "ambiguous_submit"
        assert "never paid twice" in rows[0].error_message
        # the provider made the task once and was never asked again
        assert sim.stats()["created_per_prompt"]["lost [sim:ambiguous]"] == 1
        assert b'vidbatch_ambiguous_submits_total{policy="fail"} 1.0' in rt.metrics.render()
        await assert_audit_clean(engine)


async def test_ambiguous_create_resubmits_under_retry_policy(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(
        settings_factory,
        engine,
        provider_read_timeout=0.5,
        ambiguous_submit="retry",
    ) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, [{"prompt": "flaky"}])
        sim.configure(create_hang_rate=1.0, hang_max=2.0)
        await run_once(rt, deliver_webhooks=False)
        (row,) = await task_rows(engine, created.batch_id)
        assert (row.status, row.attempts) == ("pending", 1)  # backed off, not failed
        sim.configure(create_hang_rate=0.0)
        async with engine.begin() as conn:
            await conn.execute(update(video_tasks).values(next_attempt_at=utcnow()))
        await run_until_settled(rt)
        (row,) = await task_rows(engine, created.batch_id)
        assert row.status == "succeeded"
        assert sim.stats()["created_per_prompt"]["flaky"] == 2  # paid twice, and said so
        assert b'vidbatch_ambiguous_submits_total{policy="retry"} 1.0' in rt.metrics.render()
        await assert_audit_clean(engine)


async def test_task_that_never_finishes_times_out_and_is_refunded(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(settings_factory, engine, max_poll_count=3) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, [{"prompt": "stuck [sim:hang]"}])
        await run_until_settled(rt)
        (row,) = await task_rows(engine, created.batch_id)
        assert (row.status, row.failure_type, row.poll_count) == ("failed", "timeout", 3)
        batch = await batch_row(engine, created.batch_id)
        assert (batch.status, batch.credits_refunded) == ("failed", 10)
        await assert_audit_clean(engine)


async def test_wall_clock_deadline_times_out(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    clock = FakeClock()
    async with runtime_with(settings_factory, engine, clock=clock, max_wait_seconds=1) as rt:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, [{"prompt": "stuck [sim:hang]"}], now=clock.now())
        await run_once(rt, deliver_webhooks=False)
        clock.advance(1.1)
        await run_until_settled(rt)
        (row,) = await task_rows(engine, created.batch_id)
        assert (row.status, row.failure_type) == ("failed", "timeout")
        assert row.poll_count < 20


async def test_transient_poll_errors_neither_fail_nor_count(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    runtime.clock = clock = FakeClock()
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(2), now=clock.now())
    sim.configure(hold=True)  # running upstream until released
    await run_once(runtime, deliver_webhooks=False)
    before = {r.id: r.poll_count for r in await task_rows(runtime.engine, created.batch_id)}
    sim.configure(result_500_rate=1.0)
    clock.advance(0.05)  # the next polls are due
    summary = await run_once(runtime, deliver_webhooks=False)
    assert summary.poll["transientErrors"] >= 2  # each task at least once
    rows = await task_rows(runtime.engine, created.batch_id)
    assert all(r.status == "processing" and r.poll_count == before[r.id] for r in rows)
    assert all(r.last_error for r in rows)
    sim.configure(result_500_rate=0.0, hold=False)
    sim.reset()  # the tasks vanish upstream: the provider then says "not found"
    await run_until_settled(runtime)
    rows = await task_rows(runtime.engine, created.batch_id)
    assert all(r.status == "failed" for r in rows)
    await assert_audit_clean(runtime.engine)


async def test_stale_worker_cannot_write_after_losing_its_lease(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    now = utcnow()
    async with runtime.engine.begin() as conn:
        (row,) = await claims.claim_for_submit(
            conn,
            created.batch_id,
            owner="A",
            now=now,
            lease_until=now + timedelta(seconds=60),
            limit=1,
        )
    # A hangs; its lease runs out and B's round rescues the task (policy: fail).
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.id == row.id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    summary = await run_once(runtime, owner="B", deliver_webhooks=False)
    assert summary.dispatch["rescued"] == 1
    # A wakes up and reports its success: the fenced write finds nothing to change.
    stale = Round(runtime, "A", random.Random(0))
    await stale.submit(row)
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.failure_reason) == ("failed", "ambiguous_submit")
    assert after.grsai_task_id is None
    await run_until_settled(runtime)
    await assert_audit_clean(runtime.engine)


async def test_small_batch_after_a_huge_one_starts_in_the_next_round(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(
        settings_factory,
        engine,
        worker_max_claim=1,
        worker_max_start_tasks_per_batch=5,
    ) as rt:
        caller = await new_account(engine, credits=10_000)
        other = await new_account(engine, credits=100, name="small")
        big = await new_batch(engine, caller, items(300))
        await run_once(rt, deliver_webhooks=False)  # the big batch gets its first turn
        small = await new_batch(engine, other, items(1))
        await run_once(rt, deliver_webhooks=False)
        (row,) = await task_rows(engine, small.batch_id)
        assert row.status in ("processing", "succeeded")
        started_big = [r for r in await task_rows(engine, big.batch_id) if r.grsai_task_id]
        assert len(started_big) == 5


async def test_fleet_cap_is_never_exceeded(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    async with runtime_with(
        settings_factory,
        engine,
        provider_max_inflight=3,
        task_concurrency=4,
        worker_max_start_tasks_per_batch=50,
    ) as rt:
        sim.configure(max_running=3, gen_time=0.1)
        caller = await new_account(engine, credits=1000)
        created = await new_batch(engine, caller, items(12))
        await run_until_settled(rt, max_rounds=500)
        stats = sim.stats()
        assert stats["cap_overshoots"] == 0 and stats["max_running_seen"] <= 3
        assert (await batch_row(engine, created.batch_id)).status == "completed"


async def test_worker_trigger_endpoint(
    client: httpx.AsyncClient, settings_factory: Any, sim: SimulatorHandle
) -> None:
    r = await client.post("/api/internal/batch-worker")
    assert (r.status_code, r.json()["error"]) == (401, "WORKER_UNAUTHORIZED")
    r = await client.post("/api/internal/batch-worker", headers={"x-worker-secret": "nope"})
    assert r.status_code == 401
    r = await client.post(
        "/api/internal/batch-worker", headers={"x-worker-secret": "test-worker-secret"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"ok", "dispatch", "poll", "settle", "duration_ms"}
    assert set(body["dispatch"]) >= {"claimed", "frozen", "tasks_started"}
    assert set(body["poll"]) >= {
        "scanned",
        "succeeded",
        "failed",
        "stillProcessing",
        "transientErrors",
        "skippedBackoff",
        "maxPollReached",
    }
    assert set(body["settle"]) >= {"scanned", "settled", "webhook_sent", "webhook_failed"}


async def test_worker_trigger_without_secret_configured(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    import httpx

    from vidbatch.api.app import create_app

    settings = settings_factory(internal_worker_secret=None)
    rt = await Runtime.open(settings, engine=engine)
    try:
        app = create_app(settings, runtime=rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            r = await c.post("/api/internal/batch-worker", headers={"x-worker-secret": "x"})
        assert (r.status_code, r.json()["error"]) == (500, "MISSING_INTERNAL_WORKER_SECRET")
    finally:
        await rt.close()


async def test_a_timed_out_task_keeps_its_provider_slot_until_its_deadline(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    """We stop waiting for a task before the provider stops running it: under a cap, its
    slot stays taken until its deadline, so the provider never sees one task too many."""
    clock = FakeClock()
    async with runtime_with(
        settings_factory,
        engine,
        clock=clock,
        provider_max_inflight=1,
        max_poll_count=2,
        max_wait_seconds=2,
        poll_intervals="0.2,0.2,0.2",
    ) as rt:
        sim.configure(max_running=1)  # the held one runs upstream until released
        caller = await new_account(engine, credits=100)
        created = await new_batch(
            engine,
            caller,
            [{"prompt": "long [sim:hold]"}, {"prompt": "next"}],
            now=clock.now(),
        )
        for _ in range(10):  # the first task times out after two polls (0.4 s)
            await run_once(rt, deliver_webhooks=False)
            rows = await task_rows(engine, created.batch_id)
            if rows[0].status == "failed":
                break
            clock.advance(0.2)
        assert (rows[0].status, rows[0].failure_type) == ("failed", "timeout")
        for _ in range(3):  # before its deadline the provider may still run the first task
            await run_once(rt, deliver_webhooks=False)
            clock.advance(0.2)
        rows = await task_rows(engine, created.batch_id)
        assert rows[1].status == "pending"  # held back
        assert sim.stats()["cap_overshoots"] == 0
        sim.release()  # the provider finishes it, by its deadline at the latest
        clock.advance(2.0)  # past the first task's deadline
        await run_until_settled(rt)
        assert (await task_rows(engine, created.batch_id))[1].status == "succeeded"
        assert sim.stats()["cap_overshoots"] == 0


async def test_a_task_back_to_waiting_after_a_cancel_is_cancelled_and_refunded(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    """Cancel while an item is being submitted; the provider then answers 429 and the item
    goes back to waiting: the next round cancels it, and the batch settles."""
    from vidbatch.services.batches import cancel_batch

    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    now = utcnow()
    async with runtime.engine.begin() as conn:
        (row,) = await claims.claim_for_submit(
            conn,
            created.batch_id,
            owner="A",
            now=now,
            lease_until=now + timedelta(seconds=60),
            limit=1,
        )
    await cancel_batch(runtime.engine, created.batch_id, account_id=caller.account_id)
    sim.configure(create_429_rate=1.0, retry_after=0)
    await Round(runtime, "A", random.Random(0)).submit(row)  # 429: back to pending
    assert (await task_rows(runtime.engine, created.batch_id))[0].status == "pending"
    await run_until_settled(runtime, max_rounds=5)
    batch = await batch_row(runtime.engine, created.batch_id)
    assert (batch.status, batch.credits_refunded) == ("cancelled", 10)
    assert await balance(runtime.engine, caller.account_id) == (100, 0)
    await assert_audit_clean(runtime.engine)


async def test_a_claimed_task_whose_lease_is_too_short_is_given_back_unsent(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    now = utcnow()
    async with runtime.engine.begin() as conn:  # claimed long ago: 1 s of lease left
        (row,) = await claims.claim_for_submit(
            conn,
            created.batch_id,
            owner="A",
            now=now,
            lease_until=now + timedelta(seconds=1),
            limit=1,
        )
    await Round(runtime, "A", random.Random(0)).submit(row)
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.attempts) == ("pending", 0)
    assert sim.stats()["tasks_created"] == 0  # the provider was never called
    await run_until_settled(runtime)
    assert (await task_rows(runtime.engine, created.batch_id))[0].status == "succeeded"


async def test_unusable_callback_token_is_a_404_not_a_crash(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    r = await client.post("/api/video/callback?task_id=x&token=%C3%A9", content=b"{}")
    assert r.status_code == 404
