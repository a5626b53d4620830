"""What the health endpoints report about the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.migrate import is_current
from vidbatch.db.schema import TASK_STATUSES, video_tasks
from vidbatch.db.session import UNREACHABLE_ERRORS, is_unreachable
from vidbatch.services import provider_calls

#: How an outage looks to a caller (the API answers 503 for these).
__all__ = [
    "UNREACHABLE_ERRORS",
    "is_unreachable",
    "provider_last_answer",
    "schema_is_current",
    "task_counts",
]


async def schema_is_current(engine: AsyncEngine) -> bool:
    """True when the database answers and its schema is at the newest migration."""
    return await is_current(engine)


async def task_counts(engine: AsyncEngine) -> dict[str, int]:
    """How many tasks are in each status; every status is present, with 0 if none."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(video_tasks.c.status, func.count()).group_by(video_tasks.c.status)
            )
        ).all()
    counts: dict[str, int] = dict.fromkeys(TASK_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


async def provider_last_answer(engine: AsyncEngine) -> datetime | None:
    """When some process last had an answer from the provider (to the minute)."""
    async with engine.connect() as conn:
        return await provider_calls.last_answer_at(conn)
