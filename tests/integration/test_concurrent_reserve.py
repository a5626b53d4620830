"""Concurrent batch creations against one account: the conditional reservation lets exactly
as many through as the credits cover, and refuses the rest without writing anything.
Concurrent settlers and cancellers of one batch post once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, finish_tasks, items, new_account, new_batch
from tests.helpers import keyed_engine as make_engine
from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks
from vidbatch.exceptions import BatchAlreadyEnded, InsufficientCredits
from vidbatch.services.batches import Caller, Cancelled, Created, cancel_batch
from vidbatch.services.settlement import settle_batch

N = 12  # concurrent creations
K = 5  # of them the credits cover
PRICE = 10  # one sora-2 item


async def _counts(engine: AsyncEngine, account_id: str) -> dict[str, int]:
    async with engine.connect() as conn:

        async def count(table: Any, *where: Any) -> int:
            return int(
                (
                    await conn.execute(select(func.count()).select_from(table).where(*where))
                ).scalar_one()
            )

        return {
            "batches": await count(batch_jobs, batch_jobs.c.user_id == account_id),
            "tasks": await count(video_tasks, video_tasks.c.account_id == account_id),
            "reserves": await count(
                credit_ledger,
                credit_ledger.c.account_id == account_id,
                credit_ledger.c.type == "reserve",
            ),
        }


async def _warm(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(select(1))


async def _check_outcome(engine: AsyncEngine, caller: Caller, results: list[Any]) -> None:
    created = [r for r in results if isinstance(r, Created)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    others = [r for r in results if not isinstance(r, Created | InsufficientCredits)]
    assert others == []
    assert (len(created), len(refused)) == (K, N - K)
    assert len({c.batch_id for c in created}) == K
    assert all(c.required_credits == PRICE for c in created)
    # a refused request saw the others' reservations: nothing left to reserve
    assert {(e.required, e.available) for e in refused} == {(PRICE, 0)}
    assert await balance(engine, caller.account_id) == (K * PRICE, K * PRICE)
    assert await _counts(engine, caller.account_id) == {"batches": K, "tasks": K, "reserves": K}
    await assert_audit_clean(engine)


@pytest.mark.postgres
async def test_concurrent_creations_share_one_pool(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=20)
    try:
        caller = await new_account(engine, credits=K * PRICE)
        results = await asyncio.gather(
            *(new_batch(engine, caller, items(1)) for _ in range(N)), return_exceptions=True
        )
        await _check_outcome(engine, caller, list(results))
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_concurrent_creations_from_separate_pools(pg_url: str) -> None:
    engines = [make_engine(pg_url, pool_size=1) for _ in range(N)]
    try:
        caller = await new_account(engines[0], credits=K * PRICE)
        # connect every pool first, so that the creations start together
        await asyncio.gather(*(_warm(e) for e in engines))
        results = await asyncio.gather(
            *(new_batch(e, caller, items(1)) for e in engines), return_exceptions=True
        )
        await _check_outcome(engines[0], caller, list(results))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_concurrent_creations_on_sqlite(engine: AsyncEngine) -> None:
    caller = await new_account(engine, credits=K * PRICE)
    results = await asyncio.gather(
        *(new_batch(engine, caller, items(1)) for _ in range(N)), return_exceptions=True
    )
    await _check_outcome(engine, caller, list(results))


@pytest.mark.postgres
async def test_concurrent_settlers_post_once(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=20)
    try:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, items(3))
        await finish_tasks(engine, created.batch_id, {0: "succeeded", 1: "failed", 2: "succeeded"})

        async def settle() -> Any:
            async with engine.begin() as conn:
                return await settle_batch(conn, created.batch_id, utcnow())

        results = await asyncio.gather(*(settle() for _ in range(8)))
        done = [r for r in results if r is not None]
        assert len(done) == 1
        assert (done[0].charged, done[0].refunded, done[0].status) == (20, 10, "partial")
        assert await balance(engine, caller.account_id) == (80, 0)
        async with engine.connect() as conn:
            kinds = sorted(
                (
                    await conn.execute(
                        select(credit_ledger.c.type).where(
                            credit_ledger.c.batch_id == created.batch_id
                        )
                    )
                ).scalars()
            )
        assert kinds == ["refund", "reserve", "settle"]
        await assert_audit_clean(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_concurrent_cancels_refund_once(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=20)
    try:
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, items(4))
        await finish_tasks(engine, created.batch_id, {0: "succeeded"})
        results = await asyncio.gather(
            *(
                cancel_batch(engine, created.batch_id, account_id=caller.account_id)
                for _ in range(6)
            ),
            return_exceptions=True,
        )
        # each either cancelled (only one found items to cancel) or found the batch ended
        ok = [r for r in results if isinstance(r, Cancelled)]
        assert sum(r.cancelled_items for r in ok) == 3
        assert all(isinstance(r, Cancelled | BatchAlreadyEnded) for r in results)
        assert await balance(engine, caller.account_id) == (90, 0)
        async with engine.connect() as conn:
            row = (
                await conn.execute(select(batch_jobs).where(batch_jobs.c.id == created.batch_id))
            ).one()
        assert (row.status, row.credits_spent, row.credits_refunded) == ("cancelled", 10, 30)
        await assert_audit_clean(engine)
    finally:
        await engine.dispose()
