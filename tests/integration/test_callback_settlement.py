"""A final callback that ends its batch's last task settles the batch at once (no worker
round needed), exactly once; progress callbacks that change nothing write nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch
from tests.integration.worker_helpers import run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks, webhook_deliveries
from vidbatch.domain.callback_tokens import callback_token
from vidbatch.runtime import Runtime
from vidbatch.worker.round import run_once

KEY = b"test-callback-secret"
PRICE = 10  # credits per sora-2 item (the catalogue's default price)


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(result_store="none")


def target(task_id: str) -> str:
    return f"/api/video/callback?task_id={task_id}&token={callback_token(KEY, task_id)}"


def body(remote_id: str, status: str, progress: int = 100) -> bytes:
    obj: dict[str, Any] = {"id": remote_id, "status": status, "progress": progress}
    if status == "succeeded":
        obj["results"] = [{"url": "https://cdn.example/x.mp4", "pid": "p"}]
    return json.dumps(obj).encode()


async def running_batch(runtime: Runtime, sim: SimulatorHandle, n: int) -> tuple[Any, Any]:
    sim.configure(hold=True, gen_time=3600.0)
    caller = await new_account(runtime.engine, credits=1000)
    hook = "http://127.0.0.1:9/hook"  # never called here: only the outbox row is looked at
    created = await new_batch(runtime.engine, caller, {"items": items(n), "webhook_url": hook})
    await run_once(runtime, deliver_webhooks=False)
    rows = await task_rows(runtime.engine, created.batch_id)
    assert [r.status for r in rows] == ["processing"] * n
    return caller, created


async def batch_of(runtime: Runtime, batch_id: str) -> Any:
    async with runtime.engine.connect() as conn:
        return (await conn.execute(select(batch_jobs).where(batch_jobs.c.id == batch_id))).one()


async def test_the_last_final_callback_settles_its_batch_at_once(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller, created = await running_batch(runtime, sim, 3)
    assert sim.release() == 3
    rows = await task_rows(runtime.engine, created.batch_id)
    answers = [
        await client.post(target(r.id), content=body(r.grsai_task_id, "succeeded")) for r in rows
    ]
    assert [a.json()["status"] for a in answers] == ["succeeded"] * 3
    # no worker round ran since the submits: the last callback settled it, with its webhook
    batch = await batch_of(runtime, created.batch_id)
    assert batch.settled_at is not None and batch.status == "completed"
    assert batch.success_count == 3
    async with runtime.engine.connect() as conn:
        events = (
            (
                await conn.execute(
                    select(webhook_deliveries.c.event_type).where(
                        webhook_deliveries.c.batch_id == created.batch_id
                    )
                )
            )
            .scalars()
            .all()
        )
        postings = (
            (
                await conn.execute(
                    select(credit_ledger.c.idempotency_key).where(
                        credit_ledger.c.batch_id == created.batch_id
                    )
                )
            )
            .scalars()
            .all()
        )
    assert "batch.completed" in events
    # a worker round afterwards posts nothing more: money moves once
    await run_once(runtime, deliver_webhooks=False)
    async with runtime.engine.connect() as conn:
        again = (
            (
                await conn.execute(
                    select(credit_ledger.c.idempotency_key).where(
                        credit_ledger.c.batch_id == created.batch_id
                    )
                )
            )
            .scalars()
            .all()
        )
    assert sorted(again) == sorted(postings)
    assert await balance(runtime.engine, caller.account_id) == (1000 - 3 * PRICE, 0)
    await assert_audit_clean(runtime.engine)


async def test_final_callbacks_ending_the_last_tasks_together_settle_once(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    """Two at once may each see the other's task still live: then the next round settles.
    Either way the batch is settled once."""
    caller, created = await running_batch(runtime, sim, 2)
    assert sim.release() == 2
    rows = await task_rows(runtime.engine, created.batch_id)
    answers = await asyncio.gather(
        *(client.post(target(r.id), content=body(r.grsai_task_id, "succeeded")) for r in rows)
    )
    assert [a.json()["status"] for a in answers] == ["succeeded"] * 2
    await run_until_settled(runtime)
    await run_once(runtime, deliver_webhooks=False)
    assert await balance(runtime.engine, caller.account_id) == (1000 - 2 * PRICE, 0)
    await assert_audit_clean(runtime.engine)


async def test_a_final_callback_with_live_tasks_left_does_not_settle(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    _, created = await running_batch(runtime, sim, 2)
    rows = await task_rows(runtime.engine, created.batch_id)
    sim.release()  # both done at the provider; only the first one's callback arrives
    r = await client.post(target(rows[0].id), content=body(rows[0].grsai_task_id, "succeeded"))
    assert r.json()["status"] == "succeeded"
    assert (await batch_of(runtime, created.batch_id)).settled_at is None
    await run_until_settled(runtime)
    await assert_audit_clean(runtime.engine)


async def test_progress_callbacks_write_at_most_once_a_second_and_only_forward(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    _, created = await running_batch(runtime, sim, 1)
    (row,) = await task_rows(runtime.engine, created.batch_id)

    async def progress(p: int) -> Any:
        r = await client.post(target(row.id), content=body(row.grsai_task_id, "running", p))
        assert r.status_code == 200 and r.json()["status"] == "running"
        (now,) = await task_rows(runtime.engine, created.batch_id)
        return now

    first = await progress(10)  # the first one is always written
    assert first.progress == 10 and first.callback_at is not None
    same = await progress(40)  # within the second: not written
    assert (same.progress, same.callback_at, same.updated_at) == (
        10,
        first.callback_at,
        first.updated_at,
    )
    # a second later (the last write moved back instead of waiting), it is written
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.id == row.id)
            .values(callback_at=first.callback_at - timedelta(seconds=1.5))
        )
    later = await progress(50)
    assert later.progress == 50 and later.callback_at > first.callback_at
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.id == row.id)
            .values(callback_at=later.callback_at - timedelta(seconds=1.5))
        )
    back = await progress(30)  # lower than known: never written, whatever the time
    assert (back.progress, back.updated_at) == (50, later.updated_at)
    sim.release()
    await run_until_settled(runtime)
    (done,) = await task_rows(runtime.engine, created.batch_id)
    assert (done.status, done.progress) == ("succeeded", 100)


async def test_with_the_archive_the_batch_settles_after_its_videos_are_stored(
    settings_factory: Any, engine: Any, sim: SimulatorHandle, tmp_path: Path
) -> None:
    """The callback does not settle a batch whose video is still on its way to the store."""
    from vidbatch.api.app import create_app

    settings = settings_factory(result_store=str(tmp_path / "results"))
    rt = await Runtime.open(settings, engine=engine)
    try:
        app = create_app(settings, runtime=rt)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            _, created = await running_batch(rt, sim, 1)
            (row,) = await task_rows(rt.engine, created.batch_id)
            sim.release()
            r = await client.post(target(row.id), content=body(row.grsai_task_id, "succeeded"))
            assert r.json()["status"] == "succeeded"
            assert (await batch_of(rt, created.batch_id)).settled_at is None
            await run_until_settled(rt)
            (done,) = await task_rows(rt.engine, created.batch_id)
            assert done.archive_status == "stored"
        await assert_audit_clean(rt.engine)
    finally:
        await rt.close()
