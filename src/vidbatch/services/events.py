"""Customer webhook events: what each says, written to the outbox in the transaction that
caused it, and delivered later (never inside that transaction).

Events, in the published words (``services/customer.py`` shapes the batch and its items):
``batch.created`` (status ``pending``), ``batch.running`` (``running``, with
``summary.running``), ``batch.completed`` once every item has ended (``succeeded``,
``partial``, ``failed`` or ``cancelled``, with every item and ``duration_ms``) and
``batch.refunded`` when credits came back (with ``refund_reason`` and ``refund_details``).
``batch.failed`` is published for a batch that could not run at all; vidbatch has no such
batch (every batch ends with ``batch.completed``), so it never sends it. Items are inlined up
to :data:`INLINE_ITEMS` (the published limit of a batch); a larger batch's event carries
``items_url`` instead, the paged ``/api/v1/batches/{id}/items`` endpoint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.portable import insert_on_conflict
from vidbatch.db.schema import batch_jobs, video_tasks, webhook_deliveries
from vidbatch.domain import public
from vidbatch.services import customer
from vidbatch.timestamps import iso

if TYPE_CHECKING:
    from vidbatch.storage import Links

INLINE_ITEMS = 1000


def refund(counts: dict[str, int], refunded: int) -> tuple[str, dict[str, int]]:
    """Why a settled batch's credits came back (``refund_reason``) and the figures."""
    cancelled = counts["cancelled"]
    failed = counts["failed"] - cancelled
    if cancelled and failed:
        reason = "failed_and_cancelled_items"
    elif cancelled:
        reason = "cancelled_items"
    else:
        reason = "failed_items"
    return reason, {"refunded": refunded, "failed_items": failed, "cancelled_items": cancelled}


async def build_payload(
    conn: AsyncConnection,
    batch: Any,
    event: str,
    now: datetime,
    *,
    with_items: bool,
    links: Links | None = None,
) -> dict[str, Any]:
    counts = await customer.summary(conn, batch.id)
    payload: dict[str, Any] = {
        "event": event,
        "batch_id": batch.id,
        "request_id": batch.request_id,
        "status": public.batch_status(batch.status),
        "timestamp": iso(now),
        "summary": counts,
        "ledger": {
            "reserved": batch.frozen_credits,
            "settled": batch.credits_spent,
            "refunded": batch.credits_refunded,
        },
        "metadata": batch.metadata,
    }
    if event == "batch.completed" and batch.completed_at is not None:
        elapsed = batch.completed_at - batch.created_at
        payload["duration_ms"] = int(elapsed.total_seconds() * 1000)
    if event == "batch.refunded":
        payload["refund_reason"], payload["refund_details"] = refund(counts, batch.credits_refunded)
    if with_items:
        if batch.total_count <= INLINE_ITEMS:
            rows = (
                await conn.execute(
                    select(video_tasks)
                    .where(video_tasks.c.batch_job_id == batch.id)
                    .order_by(video_tasks.c.batch_index)
                )
            ).all()
            payload["items"] = [customer.item(r, links) for r in rows]
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
    links: Links | None = None,
) -> bool:
    """Write one event for a batch to the outbox (once per batch and event type).

    Returns False when the batch has no webhook URL or the event was already written.
    """
    batch = (await conn.execute(select(batch_jobs).where(batch_jobs.c.id == batch_id))).first()
    if batch is None or not batch.webhook_url:
        return False
    payload = await build_payload(conn, batch, event, now, with_items=with_items, links=links)
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
