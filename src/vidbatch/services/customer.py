"""What a customer reads, in the published ``/api/v1`` words: a batch, its items, its
summary and the ledger entries — used by ``/api/v1``, the results export and customer
webhooks alike, so the three can never disagree.

Every published field is present with its published type (``domain/public.py`` translates
the words); vidbatch's own fields are additions and are listed in the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import video_tasks
from vidbatch.domain import public
from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.states import TaskStatus
from vidbatch.timestamps import iso

if TYPE_CHECKING:
    from vidbatch.storage import Links


async def summary(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    """A batch's items by published status: ``total = succeeded + failed + running +
    pending``; ``cancelled`` (an addition) counts the failed items that were cancelled
    before they started."""
    rows = (
        await conn.execute(
            select(video_tasks.c.status, func.count())
            .where(video_tasks.c.batch_job_id == batch_id)
            .group_by(video_tasks.c.status)
        )
    ).all()
    counts = {str(s): 0 for s in public.PublicItemStatus}
    for status, n in rows:
        counts[public.item_status(status)] += int(n)
    cancelled = sum(int(n) for status, n in rows if status == TaskStatus.CANCELLED)
    return {"total": sum(counts.values()), **counts, "cancelled": cancelled}


def archive_fields(row: Any, links: Links | None, base_url: str | None = None) -> dict[str, Any]:
    """An item's result fields: ``video_url`` is the durable URL once the video is stored
    (signed afresh now), else the provider's (``source_url``); ``thumbnail_url`` is null
    until a thumbnail is stored; ``archive_status`` is null when nothing is archived."""
    stored = row.archive_status == ArchiveStatus.STORED and links is not None
    durable = links.url(row.archive_key, base_url=base_url) if stored and links else None
    thumbnail = links.url(row.thumbnail_key, base_url=base_url) if stored and links else None
    return {
        "video_url": durable or row.video_url,
        "thumbnail_url": thumbnail,
        "source_url": row.video_url,
        "archive_status": row.archive_status,
        "video_size_bytes": row.video_size_bytes,
        "video_sha256": row.video_sha256,
        "video_duration_seconds": row.video_duration_seconds,
        "video_width": row.video_width,
        "video_height": row.video_height,
    }


def item(row: Any, links: Links | None = None, base_url: str | None = None) -> dict[str, Any]:
    """One item (a ``video_tasks`` row) as the customer sees it, in webhooks too;
    ``links`` signs the archived files' URLs (``base_url``: the request's own base)."""
    failure_type, failure_reason = public.failure(row.status, row.failure_type, row.failure_reason)
    result = archive_fields(row, links, base_url)
    return {
        "item_id": row.id,
        "index": row.batch_index,
        "status": public.item_status(row.status),
        "model": row.model,
        "duration": row.duration,
        "video_url": result.pop("video_url"),
        "thumbnail_url": result.pop("thumbnail_url"),
        "error": row.error_message or row.failure_reason,
        "failure_type": failure_type,
        "failure_reason": failure_reason,
        "metadata": row.metadata,
        **result,
    }


def item_with_times(
    row: Any, links: Links | None = None, base_url: str | None = None
) -> dict[str, Any]:
    """An item as ``GET /api/v1/batches/{id}/items`` shows it: with its prompt and times."""
    return {
        **item(row, links, base_url),
        "prompt": row.prompt,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
    }


def batch(row: Any, counts: dict[str, int]) -> dict[str, Any]:
    """A batch (a ``batch_jobs`` row) with its :func:`summary` counts."""
    return {
        "batch_id": row.id,
        "request_id": row.request_id,
        "status": public.batch_status(row.status),
        "total_count": row.total_count,
        "succeeded_count": counts["succeeded"],
        "failed_count": counts["failed"],
        "running_count": counts["running"],
        "pending_count": counts["pending"],
        "cancelled_count": counts["cancelled"],
        "cost_per_video": row.cost_per_video or 0,
        "credits_reserved": row.frozen_credits,
        "credits_settled": row.credits_spent,
        "credits_refunded": row.credits_refunded,
        "settlement_status": row.settlement_status,
        "webhook_status": row.webhook_status,
        "metadata": row.metadata,
        "parent_batch_id": row.parent_batch_id,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
    }


def ledger_entry(row: Any) -> dict[str, Any]:
    """A ledger entry as published: ``delta`` is the entry's signed amount for the customer
    (reserve and settle negative, refund and purchase positive) and ``balance_after`` the
    *available* credits after it; vidbatch's own bookkeeping follows as additions."""
    return {
        "id": str(row.id),
        "type": public.ledger_type(row.type),
        "delta": public.ledger_delta(row.type, row.delta, row.frozen_delta),
        "balance_after": row.balance_after - row.frozen_after,
        "batch_id": row.batch_id,
        "item_id": row.item_id,
        "description": row.description,
        "created_at": iso(row.created_at),
        "entry_type": row.type,
        "balance_delta": row.delta,
        "reserved_delta": row.frozen_delta,
        "total_after": row.balance_after,
        "reserved_after": row.frozen_after,
    }
