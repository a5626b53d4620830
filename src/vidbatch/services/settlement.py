"""Settlement: when every task of a batch has ended, charge what succeeded and refund the
rest — once, in one transaction, whatever the number of workers and retries.

The guard is in the UPDATE itself (``settled_at IS NULL`` and the refunded figure we read),
and each ledger posting has its own idempotency key, so a second settler posts nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.settlement import settle_figures
from vidbatch.domain.states import TASK_LIVE, TaskStatus, batch_final_status
from vidbatch.services import events, ledger

if TYPE_CHECKING:
    from vidbatch.storage import Links

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settled:
    batch_id: str
    status: str
    charged: int
    refunded: int
    succeeded: int
    failed: int
    cancelled: int
    events: tuple[str, ...]


async def settle_batch(
    conn: AsyncConnection,
    batch_id: str,
    now: datetime,
    *,
    webhook_max_attempts: int = 4,
    links: Links | None = None,
) -> Settled | None:
    """Settle ``batch_id`` if all its tasks have ended and nobody settled it yet.

    Returns None when the batch is not ready or was settled by someone else. Does not
    commit: the caller's transaction makes it all-or-nothing.
    """
    batch = (
        await conn.execute(
            select(
                batch_jobs.c.id,
                batch_jobs.c.user_id,
                batch_jobs.c.frozen_credits,
                batch_jobs.c.credits_refunded,
                batch_jobs.c.cancel_requested_at,
                batch_jobs.c.settled_at,
            ).where(batch_jobs.c.id == batch_id)
        )
    ).first()
    if batch is None or batch.settled_at is not None:
        return None
    status_counts = (
        await conn.execute(
            select(
                func.sum(case((video_tasks.c.status.in_(TASK_LIVE), 1), else_=0)),
                func.sum(case((video_tasks.c.status == TaskStatus.SUCCEEDED, 1), else_=0)),
                func.sum(case((video_tasks.c.status == TaskStatus.FAILED, 1), else_=0)),
                func.sum(case((video_tasks.c.status == TaskStatus.CANCELLED, 1), else_=0)),
                func.sum(
                    case(
                        (video_tasks.c.status == TaskStatus.SUCCEEDED, video_tasks.c.cost_credits),
                        else_=0,
                    )
                ),
                func.sum(case((video_tasks.c.archive_status == ArchiveStatus.PENDING, 1), else_=0)),
            ).where(video_tasks.c.batch_job_id == batch_id)
        )
    ).one()
    live, succeeded, failed, cancelled, succeeded_cost, archiving = (
        int(v or 0) for v in status_counts
    )
    if live or archiving:  # a video still on its way to the store: its URL is not final
        return None
    figures = settle_figures(batch.frozen_credits, batch.credits_refunded, succeeded_cost)
    status = batch_final_status(
        succeeded, failed, cancelled, cancel_requested=batch.cancel_requested_at is not None
    )
    result = await conn.execute(
        update(batch_jobs)
        .where(
            batch_jobs.c.id == batch_id,
            batch_jobs.c.settled_at.is_(None),
            batch_jobs.c.credits_refunded == batch.credits_refunded,
        )
        .values(
            settled_at=now,
            completed_at=now,
            updated_at=now,
            status=status,
            success_count=succeeded,
            failed_count=failed,
            cancelled_count=cancelled,
            credits_spent=figures.charged,
            credits_refunded=figures.refunded,
            settlement_status=figures.settlement_status,
        )
    )
    if result.rowcount != 1:
        return None
    if figures.charged:
        await ledger.charge(
            conn,
            batch.user_id,
            figures.charged,
            batch_id=batch_id,
            key=f"settle:{batch_id}",
            now=now,
        )
    if figures.refund_now:
        await ledger.release(
            conn,
            batch.user_id,
            figures.refund_now,
            batch_id=batch_id,
            key=f"refund:{batch_id}",
            description=f"refund of unused credits, batch {batch_id}",
            now=now,
        )
    sent: list[str] = []
    for name, with_items, wanted in (
        ("batch.completed", True, True),
        ("batch.refunded", False, figures.refunded > 0),
    ):
        if wanted and await events.enqueue(
            conn,
            batch_id,
            name,
            now,
            max_attempts=webhook_max_attempts,
            with_items=with_items,
            links=links,
        ):
            sent.append(name)
    log.info(
        "batch settled",
        extra={
            "batch_id": batch_id,
            "action": "settle",
            "status": status,
            "charged": figures.charged,
            "refunded": figures.refunded,
        },
    )
    return Settled(
        batch_id=batch_id,
        status=status,
        charged=figures.charged,
        refunded=figures.refunded,
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
        events=tuple(sent),
    )
