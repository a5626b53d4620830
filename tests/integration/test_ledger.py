"""The ledger and settlement services on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, finish_tasks, items, new_account, new_batch
from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks
from vidbatch.exceptions import IdempotencyKeyReused, InsufficientCredits, InvalidInput, NotFound
from vidbatch.services import accounts as account_svc
from vidbatch.services import ledger
from vidbatch.services.batches import cancel_batch
from vidbatch.services.settlement import settle_batch


async def test_topup_is_idempotent_by_key(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=0)
    await account_svc.topup(engine, caller.account_id, 50, key="order-1")
    await account_svc.topup(engine, caller.account_id, 50, key="order-1")
    assert await balance(engine, caller.account_id) == (50, 0)
    await assert_audit_clean(engine)


async def test_reserve_refuses_more_than_available_and_writes_nothing(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=25)
    with pytest.raises(InsufficientCredits) as err:
        await new_batch(engine, caller, items(3))  # 3 x 10 = 30 > 25
    assert (err.value.required, err.value.available) == (30, 25)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(batch_jobs))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(video_tasks))).scalar() == 0
    assert await balance(engine, caller.account_id) == (25, 0)
    await assert_audit_clean(engine)


async def test_settle_charges_succeeded_and_refunds_the_rest_once(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=1000)
    created = await new_batch(engine, caller, items(2) + items(1, model="veo-pro"))
    assert created.required_credits == 270
    assert await balance(engine, caller.account_id) == (1000, 270)
    await finish_tasks(engine, created.batch_id, {0: "succeeded", 1: "failed", 2: "succeeded"})
    async with engine.begin() as conn:
        first = await settle_batch(conn, created.batch_id, utcnow())
    async with engine.begin() as conn:
        second = await settle_batch(conn, created.batch_id, utcnow())
    assert first is not None and second is None
    assert (first.status, first.charged, first.refunded) == ("partial", 260, 10)
    assert await balance(engine, caller.account_id) == (740, 0)
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(batch_jobs).where(batch_jobs.c.id == created.batch_id))
        ).one()
        kinds = sorted(
            (
                await conn.execute(
                    select(credit_ledger.c.type).where(credit_ledger.c.batch_id == created.batch_id)
                )
            ).scalars()
        )
    assert (row.credits_spent, row.credits_refunded, row.settlement_status) == (260, 10, "refunded")
    assert (row.success_count, row.failed_count) == (2, 1)
    assert kinds == ["refund", "reserve", "settle"]
    await assert_audit_clean(engine)


async def test_settle_waits_for_live_tasks(engine: AsyncEngine) -> None:
    caller = await new_account(engine)
    created = await new_batch(engine, caller, items(2))
    await finish_tasks(engine, created.batch_id, {0: "succeeded"})
    async with engine.begin() as conn:
        assert await settle_batch(conn, created.batch_id, utcnow()) is None
    await assert_audit_clean(engine)


async def test_cancel_refunds_unstarted_items_at_once(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=100)
    created = await new_batch(engine, caller, items(4))
    await finish_tasks(engine, created.batch_id, {0: "succeeded"})
    result = await cancel_batch(engine, created.batch_id, account_id=caller.account_id)
    assert (result.cancelled_items, result.credits_refunded, result.status) == (3, 30, "cancelled")
    assert await balance(engine, caller.account_id) == (90, 0)
    await assert_audit_clean(engine)


async def test_cancel_of_another_accounts_batch_is_not_found(engine: AsyncEngine) -> None:
    owner = await new_account(engine)
    other = await new_account(engine, name="other")
    created = await new_batch(engine, owner, items(1))
    with pytest.raises(NotFound):
        await cancel_batch(engine, created.batch_id, account_id=other.account_id)


async def test_adjust_cannot_make_available_negative(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=30)
    await new_batch(engine, caller, items(2))  # 20 frozen, 10 available
    with pytest.raises(InsufficientCredits):
        await account_svc.adjust(engine, caller.account_id, -11, reason="chargeback")
    await account_svc.adjust(engine, caller.account_id, -10, reason="chargeback")
    assert await balance(engine, caller.account_id) == (20, 20)
    with pytest.raises(InvalidInput):
        await account_svc.adjust(engine, caller.account_id, 5, reason="  ")
    await assert_audit_clean(engine)


async def test_unknown_account_is_not_found(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(NotFound):
            await ledger.topup(conn, "no-such-account", 5, key="k")


async def test_a_key_reused_for_another_amount_is_refused(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=100)
    await account_svc.adjust(engine, caller.account_id, -10, reason="fee", key="inv-7")
    await account_svc.adjust(engine, caller.account_id, -10, reason="fee", key="inv-7")
    with pytest.raises(IdempotencyKeyReused):
        await account_svc.adjust(engine, caller.account_id, -20, reason="fee", key="inv-7")
    assert await balance(engine, caller.account_id) == (90, 0)
    await assert_audit_clean(engine)
