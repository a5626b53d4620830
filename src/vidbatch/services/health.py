"""What the health endpoints report about the database."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.schema import TASK_STATUSES, video_tasks


async def task_counts(engine: AsyncEngine) -> dict[str, int]:
    """How many tasks are in each status; every status is present, with 0 if none."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(video_tasks.c.status, func.count()).group_by(video_tasks.c.status)
            )
        ).all()
    counts = dict.fromkeys(TASK_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts
