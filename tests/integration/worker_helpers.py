"""Driving the worker in tests: rounds until every batch is settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.clock import Clock, FakeClock
from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.runtime import Runtime
from vidbatch.worker.round import run_once


async def unsettled(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(batch_jobs)
                    .where(batch_jobs.c.settled_at.is_(None))
                )
            ).scalar_one()
        )


async def run_until_settled(rt: Any, *, max_rounds: int = 200, pause: float = 0.02) -> int:
    """Run rounds until no batch is left unsettled; returns the rounds it took. Between
    rounds ``pause`` seconds pass: on the runtime's fake clock if it has one."""
    for n in range(1, max_rounds + 1):
        await run_once(rt, deliver_webhooks=False)
        if await unsettled(rt.engine) == 0:
            return n
        if isinstance(rt.clock, FakeClock):
            rt.clock.advance(pause)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(pause)
    raise AssertionError(f"batches still unsettled after {max_rounds} rounds")


async def task_rows(engine: AsyncEngine, batch_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(video_tasks)
                    .where(video_tasks.c.batch_job_id == batch_id)
                    .order_by(video_tasks.c.batch_index)
                )
            ).all()
        )


async def batch_row(engine: AsyncEngine, batch_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(batch_jobs).where(batch_jobs.c.id == batch_id))).one()


@asynccontextmanager
async def runtime_with(
    settings_factory: Any, engine: AsyncEngine, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Runtime]:
    """A runtime on the test's database with some settings changed (and its clock, if
    given), closed afterwards."""
    rt = await Runtime.open(settings_factory(**overrides), engine=engine)
    if clock is not None:
        rt.clock = clock
    try:
        yield rt
    finally:
        await rt.close()
