"""Customer webhook events: what each says, written to the outbox in the transaction that
caused it, and delivered later (never inside that transaction).

Events: ``batch.created``, ``batch.running``, ``batch.completed`` (with every item),
``batch.failed`` (nothing succeeded), ``batch.refunded`` (credits came back). Items are
inlined up to :data:`INLINE_ITEMS`; a larger batch's event carries ``items_url`` instead,
the paged ``/api/v1/batches/{id}/items`` endpoint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.portable import insert_on_conflict
from vidbatch.db.schema import batch_jobs, video_tasks, webhook_deliveries
from vidbatch.domain.states import PUBLIC_ITEM_STATUS

INLINE_ITEMS = 1000


async def summary(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    rows = (
        await conn.execute(
            select(video_tasks.c.status, func.count())
            .where(video_tasks.c.batch_job_id == batch_id)
            .group_by(video_tasks.c.status)
        )
    ).all()
    counts: dict[str, int] = {status: int(n) for status, n in rows}
    total = sum(counts.values())
    succeeded = counts.get("succeeded", 0)
    failed = counts.get("failed", 0)
    cancelled = counts.get("cancelled", 0)
    return {
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
        "pending": total - succeeded - failed - cancelled,
    }


def item_view(row: Any) -> dict[str, Any]:
    return {
        "item_id": row.id,
        "index": row.batch_index,
        "status": PUBLIC_ITEM_STATUS.get(row.status, row.status),
        "model": row.model,
        "video_url": row.video_url,
        "error": row.error_message or row.failure_reason,
        "failure_type": row.failure_type,
        "metadata": row.metadata,
    }


async def build_payload(
    conn: AsyncConnection, batch: Any, event: str, now: datetime, *, with_items: bool
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": event,
        "batch_id": batch.id,
        "request_id": batch.request_id,
        "status": batch.status,
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "summary": await summary(conn, batch.id),
        "ledger": {
            "reserved": batch.frozen_credits,
            "settled": batch.credits_spent,
            "refunded": batch.credits_refunded,
        },
        "metadata": batch.metadata,
    }
    if with_items:
        if batch.total_count <= INLINE_ITEMS:
            rows = (
                await conn.execute(
                    select(video_tasks)
                    .where(video_tasks.c.batch_job_id == batch.id)
                    .order_by(video_tasks.c.batch_index)
                )
            ).all()
            payload["items"] = [item_view(r) for r in rows]
        else:
            payload["items_url"] = f"/api/v1/batches/{batch.id}/items"
    return payload


async def enqueue(
    conn: AsyncConnection,
    batch_id: str,
    event: str,
    now: datetime,
    *,
    max_attempts: int,
    with_items: bool = False,
) -> bool:
    """Write one event for a batch to the outbox (once per batch and event type).

    Returns False when the batch has no webhook URL or the event was already written.
    """
    batch = (await conn.execute(select(batch_jobs).where(batch_jobs.c.id == batch_id))).first()
    if batch is None or not batch.webhook_url:
        return False
    payload = await build_payload(conn, batch, event, now, with_items=with_items)
    values = {
        "id": str(uuid.uuid4()),
        "event_id": "evt_" + uuid.uuid4().hex,
        "batch_id": batch_id,
        "url": batch.webhook_url,
        "event_type": event,
        "payload": payload,
        "attempts": 0,
        "max_attempts": max_attempts,
        "next_attempt_at": now,
        "created_at": now,
    }
    insert = insert_on_conflict(conn, webhook_deliveries)
    result = await conn.execute(
        insert.values(**values).on_conflict_do_nothing(index_elements=["batch_id", "event_type"])
    )
    if result.rowcount:
        await conn.execute(
            batch_jobs.update().where(batch_jobs.c.id == batch_id).values(webhook_status="pending")
        )
    return bool(result.rowcount)
