"""The figures of the dashboard's overview: tasks by status, throughput of the last hour,
the oldest waiting task, the provider calls of every process in the last hour (from the
database) and the latest batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.db.schema import video_tasks
from vidbatch.domain.states import TASK_WAITING, TaskStatus
from vidbatch.services import provider_calls, reads
from vidbatch.services.views import BatchListing


class Bucket(BaseModel):
    """Tasks that ended in one period: succeeded and failed (cancelled is no work done)."""

    start: datetime
    end: datetime
    succeeded: int
    failed: int


class CallFigures(BaseModel):
    """One kind of provider call: how many, how many went wrong, by outcome."""

    total: int
    errors: int
    rate: float | None
    by_outcome: dict[str, int]


class ProviderFigures(BaseModel):
    submits: CallFigures
    polls: CallFigures


class Overview(BaseModel):
    task_counts: dict[str, int]
    buckets: list[Bucket]
    oldest_waiting: datetime | None
    provider: ProviderFigures
    recent: BatchListing


async def overview(engine: AsyncEngine, *, now: datetime) -> Overview:
    """Everything the overview page shows, as of ``now``."""
    async with engine.connect() as conn:
        counts = await task_status_counts(conn)
        buckets = await completed_per_bucket(conn, now=now)
        oldest = await oldest_waiting_task(conn)
        recent = await reads.batch_listing(conn, limit=10)
        calls = await provider_calls.totals(conn, since=now - timedelta(hours=1))
    return Overview(
        task_counts=counts,
        buckets=buckets,
        oldest_waiting=oldest,
        provider=provider_figures(calls.get("submit", {}), calls.get("poll", {})),
        recent=recent,
    )


async def task_status_counts(conn: AsyncConnection) -> dict[str, int]:
    """Every task by status, as they are now."""
    rows = (
        await conn.execute(
            select(video_tasks.c.status, func.count()).group_by(video_tasks.c.status)
        )
    ).all()
    return {str(status): int(n) for status, n in rows}


async def completed_per_bucket(
    conn: AsyncConnection,
    *,
    now: datetime,
    buckets: int = 6,
    bucket_seconds: int = 600,
) -> list[Bucket]:
    """Tasks that ended in each of the last ``buckets`` periods (oldest first), from
    ``video_tasks.completed_at``. Cancelled tasks are not work done and are left out."""
    starts = [now - timedelta(seconds=bucket_seconds * (buckets - i)) for i in range(buckets)]
    ends = [*starts[1:], now]
    vt = video_tasks
    columns = []
    for start, end in zip(starts, ends, strict=True):
        within = (vt.c.completed_at >= start) & (vt.c.completed_at < end)
        columns += [
            func.sum(case((within & (vt.c.status == TaskStatus.SUCCEEDED), 1), else_=0)),
            func.sum(case((within & (vt.c.status == TaskStatus.FAILED), 1), else_=0)),
        ]
    row = (
        await conn.execute(
            select(*columns).where(vt.c.completed_at >= starts[0], vt.c.completed_at < now)
        )
    ).one()
    return [
        Bucket(
            start=start,
            end=start + timedelta(seconds=bucket_seconds),
            succeeded=int(row[2 * i] or 0),
            failed=int(row[2 * i + 1] or 0),
        )
        for i, start in enumerate(starts)
    ]


async def oldest_waiting_task(conn: AsyncConnection) -> datetime | None:
    """When the oldest task still waiting to be submitted (pending or queued) was created."""
    value = (
        await conn.execute(
            select(func.min(video_tasks.c.created_at)).where(
                video_tasks.c.status.in_(sorted(TASK_WAITING))
            )
        )
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def provider_figures(submits: dict[str, int], polls: dict[str, int]) -> ProviderFigures:
    """Provider calls by outcome and how many went wrong. A submit is wrong unless it was
    accepted; a poll is wrong when it got no usable answer."""

    def rate(values: dict[str, int], is_error: Callable[[str], bool]) -> CallFigures:
        total = int(sum(values.values()))
        errors = int(sum(v for outcome, v in values.items() if is_error(outcome)))
        return CallFigures(
            total=total,
            errors=errors,
            rate=round(100 * errors / total, 1) if total else None,
            by_outcome={k: int(v) for k, v in sorted(values.items())},
        )

    return ProviderFigures(
        submits=rate(submits, lambda o: o != "ok"),
        polls=rate(polls, lambda o: o in ("transient", "not_found")),
    )
