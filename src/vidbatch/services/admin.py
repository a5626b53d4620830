"""The operator's views and actions: batches with their money reconciled against the
ledger, tasks, billing, webhook deliveries; resending a webhook; retrying a batch's failed
items as a new batch. Used by the admin API and the admin commands alike.

Every figure a view shows comes from the database as it is now; the ledger figures are
computed from ``credit_ledger`` itself, so a batch whose own columns disagree with the
ledger shows ``reconciled: false``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks, webhook_deliveries
from vidbatch.domain.catalog import Catalog
from vidbatch.domain.validation import BatchSpec, request_fingerprint, validate_batch
from vidbatch.exceptions import BatchNotSettled, NothingToRetry, NoWebhookEvents
from vidbatch.services import accounts, batches
from vidbatch.services.batches import Caller, iso

log = logging.getLogger(__name__)

#: Events that end a batch's story; ``resend`` re-arms one of these by default.
FINAL_EVENTS = ("batch.completed", "batch.failed")
#: The order events happen in, to tell the last one when two share a timestamp.
EVENT_ORDER = {
    "batch.created": 0,
    "batch.running": 1,
    "batch.completed": 2,
    "batch.failed": 2,
    "batch.refunded": 3,
}


# --- money ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFigures:
    """A batch's credits as its ledger entries tell them."""

    reserved: int = 0
    charged: int = 0
    refunded: int = 0

    @property
    def net(self) -> int:
        """What the batch cost its account: its charges (reservations are returned)."""
        return self.charged

    def as_dict(self) -> dict[str, int]:
        return {
            "reserved": self.reserved,
            "charged": self.charged,
            "refunded": self.refunded,
            "net": self.net,
        }


async def ledger_figures(conn: AsyncConnection, batch_ids: list[str]) -> dict[str, LedgerFigures]:
    """Per batch: Σ reserve entries, Σ charges, Σ refunds, from ``credit_ledger``."""
    if not batch_ids:
        return {}
    led = credit_ledger
    rows = (
        await conn.execute(
            select(
                led.c.batch_id,
                func.sum(case((led.c.type == "reserve", led.c.frozen_delta), else_=0)),
                func.sum(case((led.c.type == "settle", -led.c.delta), else_=0)),
                func.sum(case((led.c.type == "refund", -led.c.frozen_delta), else_=0)),
            )
            .where(led.c.batch_id.in_(batch_ids))
            .group_by(led.c.batch_id)
        )
    ).all()
    return {r[0]: LedgerFigures(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows}


def batch_summary(row: Any, figures: LedgerFigures) -> dict[str, Any]:
    """One batch as the operator's list shows it, its figures next to the ledger's."""
    own = LedgerFigures(
        reserved=row.frozen_credits, charged=row.credits_spent, refunded=row.credits_refunded
    )
    return {
        "batch_id": row.id,
        "account_id": row.user_id,
        "key_id": row.key_id,
        "request_id": row.request_id,
        "source": row.source,
        "parent_batch_id": row.parent_batch_id,
        "status": row.status,
        "settlement_status": row.settlement_status,
        "total_count": row.total_count,
        "success_count": row.success_count,
        "failed_count": row.failed_count,
        "cancelled_count": row.cancelled_count,
        "cost_per_video": row.cost_per_video,
        "reserved": own.reserved,
        "charged": own.charged,
        "refunded": own.refunded,
        "net": own.net,
        # still frozen for the batch: what is neither charged nor refunded yet
        "held": own.reserved - own.charged - own.refunded if row.settled_at is None else 0,
        "ledger": figures.as_dict(),
        "reconciled": figures == own,
        "webhook_status": row.webhook_status,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
    }


# --- batches -------------------------------------------------------------------------------


async def list_batches(
    conn: AsyncConnection,
    *,
    account_id: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    cursor: tuple[datetime, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """A page of every account's batches, newest first, and the cursor of the next page."""
    rows = await batches.list_batches(
        conn,
        account_id=account_id,
        status=status,
        limit=limit + 1,
        cursor=cursor,
        created_from=created_from,
        created_to=created_to,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    figures = await ledger_figures(conn, [r.id for r in rows])
    page = [batch_summary(r, figures.get(r.id, LedgerFigures())) for r in rows]
    next_cursor = (rows[-1].created_at, rows[-1].id) if more and rows else None
    return page, next_cursor


async def batch_detail(conn: AsyncConnection, batch_id: str) -> dict[str, Any]:
    """Everything about one batch except its task list."""
    row = await batches.get_batch_row(conn, batch_id)
    figures = (await ledger_figures(conn, [batch_id])).get(batch_id, LedgerFigures())
    counts: dict[str, int] = dict(
        (
            await conn.execute(
                select(video_tasks.c.status, func.count())
                .where(video_tasks.c.batch_job_id == batch_id)
                .group_by(video_tasks.c.status)
            )
        ).all()
    )
    failures: dict[str | None, int] = dict(
        (
            await conn.execute(
                select(video_tasks.c.failure_type, func.count())
                .where(video_tasks.c.batch_job_id == batch_id, video_tasks.c.status == "failed")
                .group_by(video_tasks.c.failure_type)
            )
        ).all()
    )
    children = list(
        (
            await conn.execute(
                select(batch_jobs.c.id)
                .where(batch_jobs.c.parent_batch_id == batch_id)
                .order_by(batch_jobs.c.created_at)
            )
        ).scalars()
    )
    detail = batch_summary(row, figures)
    detail.update(
        {
            "task_counts": {status: int(n) for status, n in sorted(counts.items())},
            "failure_types": {
                str(k or "unknown"): int(n)
                for k, n in sorted(failures.items(), key=lambda kv: str(kv[0]))
            },
            "child_batch_ids": children,
            "metadata": row.metadata,
            "webhook_url": row.webhook_url,
            "webhook_attempts": row.webhook_attempts,
            "webhook_last_error": row.webhook_last_error,
            "webhook_last_sent_at": iso(row.webhook_last_sent_at),
            "cancel_requested_at": iso(row.cancel_requested_at),
            "settled_at": iso(row.settled_at),
            "updated_at": iso(row.updated_at),
        }
    )
    return detail


def task_view(row: Any) -> dict[str, Any]:
    return {
        "task_id": row.id,
        "index": row.batch_index,
        "status": row.status,
        "model": row.model,
        "prompt": row.prompt,
        "cost_credits": row.cost_credits,
        "grsai_task_id": row.grsai_task_id,
        "video_url": row.video_url,
        "failure_type": row.failure_type,
        "failure_reason": row.failure_reason,
        "error": row.error_message,
        "last_error": row.last_error,
        "attempts": row.attempts,
        "poll_count": row.poll_count,
        "progress": row.progress,
        "metadata": row.metadata,
        "created_at": iso(row.created_at),
        "submitted_at": iso(row.submitted_at),
        "last_poll_at": iso(row.last_poll_at),
        "completed_at": iso(row.completed_at),
    }


async def list_tasks(
    conn: AsyncConnection,
    batch_id: str,
    *,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of a batch's tasks in index order (NotFound for an unknown batch)."""
    await batches.get_batch_row(conn, batch_id)
    rows, total = await batches.list_items(
        conn, batch_id, statuses=(status,) if status else None, limit=limit, offset=offset
    )
    return [task_view(r) for r in rows], total


async def billing(conn: AsyncConnection, batch_id: str) -> dict[str, Any]:
    """A batch's ledger entries with their totals, next to the batch's own figures."""
    row = await batches.get_batch_row(conn, batch_id)
    entries = (
        await conn.execute(
            select(credit_ledger)
            .where(credit_ledger.c.batch_id == batch_id)
            .order_by(credit_ledger.c.id)
        )
    ).all()
    figures = (await ledger_figures(conn, [batch_id])).get(batch_id, LedgerFigures())
    summary = batch_summary(row, figures)
    return {
        "batch_id": batch_id,
        "account_id": row.user_id,
        "status": row.status,
        "settlement_status": row.settlement_status,
        "entries": [
            {
                "id": e.id,
                "type": e.type,
                "delta": e.delta,
                "frozen_delta": e.frozen_delta,
                "balance_after": e.balance_after,
                "frozen_after": e.frozen_after,
                "item_id": e.item_id,
                "description": e.description,
                "created_at": iso(e.created_at),
            }
            for e in entries
        ],
        "totals": {
            **figures.as_dict(),
            "entries": len(entries),
            "balance_delta": sum(int(e.delta) for e in entries),
            "frozen_delta": sum(int(e.frozen_delta) for e in entries),
        },
        "batch": {k: summary[k] for k in ("reserved", "charged", "refunded", "net", "held")},
        "reconciled": summary["reconciled"],
    }


# --- webhooks ------------------------------------------------------------------------------


def delivery_view(row: Any, *, include_payload: bool = False) -> dict[str, Any]:
    view = {
        "delivery_id": row.id,
        "event_id": row.event_id,
        "batch_id": row.batch_id,
        "event_type": row.event_type,
        "url": row.url,
        "state": (
            "delivered"
            if row.delivered_at
            else "failed"
            if row.failed_at
            else "retrying"
            if row.attempts
            else "pending"
        ),
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at),
        "delivered_at": iso(row.delivered_at),
        "failed_at": iso(row.failed_at),
        "created_at": iso(row.created_at),
    }
    if include_payload:
        view["payload"] = row.payload
    return view


async def list_deliveries(
    conn: AsyncConnection,
    batch_id: str | None = None,
    *,
    limit: int = 50,
    include_payload: bool = False,
) -> list[dict[str, Any]]:
    """A batch's webhook events in the order they happened, or the latest of all batches."""
    wd = webhook_deliveries
    if batch_id is not None:
        await batches.get_batch_row(conn, batch_id)
        query = select(wd).where(wd.c.batch_id == batch_id).order_by(wd.c.created_at)
    else:
        query = select(wd).order_by(wd.c.created_at.desc(), wd.c.id.desc())
    rows = list((await conn.execute(query.limit(limit))).all())
    if batch_id is not None:
        rows.sort(key=lambda r: (r.created_at, EVENT_ORDER.get(r.event_type, 9)))
    return [delivery_view(r, include_payload=include_payload) for r in rows]


async def resend_webhook(
    engine: AsyncEngine,
    batch_id: str,
    *,
    max_attempts: int,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Send one of a batch's events again, due now with a fresh count of attempts: the
    given ``event_type``, else its final event (completed or failed), else its latest.

    The event keeps its id, so a receiver that already processed it can tell."""
    from vidbatch.webhooks.delivery import refresh_batch_status

    wd = webhook_deliveries
    now = utcnow()
    async with engine.begin() as conn:
        await batches.get_batch_row(conn, batch_id)
        rows = list((await conn.execute(select(wd).where(wd.c.batch_id == batch_id))).all())
        if event_type is not None:
            rows = [r for r in rows if r.event_type == event_type]
            if not rows:
                raise NoWebhookEvents(f"batch {batch_id} has no {event_type} event")
        if not rows:
            raise NoWebhookEvents(
                f"batch {batch_id} has no webhook events (it was created without a webhook_url)"
            )
        final = [r for r in rows if r.event_type in FINAL_EVENTS]
        target = max(final or rows, key=lambda r: (r.created_at, EVENT_ORDER.get(r.event_type, 9)))
        await conn.execute(
            update(wd)
            .where(wd.c.id == target.id)
            .values(
                attempts=0,
                max_attempts=max_attempts,
                next_attempt_at=now,
                delivered_at=None,
                failed_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        await refresh_batch_status(conn, batch_id)
        row = (await conn.execute(select(wd).where(wd.c.id == target.id))).one()
    log.info(
        "webhook re-armed",
        extra={"batch_id": batch_id, "action": "webhook_resend", "event": row.event_type},
    )
    return delivery_view(row)


# --- retrying failed items -----------------------------------------------------------------


async def retry_failed(
    engine: AsyncEngine,
    batch_id: str,
    *,
    include_moderation: bool = False,
    catalog: Catalog,
    allow_private_webhooks: bool,
    webhook_max_attempts: int,
) -> dict[str, Any]:
    """Create a child batch of a settled batch's failed items, priced and reserved anew.

    Items refused by moderation are left out unless ``include_moderation``: they would most
    likely be refused again, and be paid for nothing. The child keeps each item's index in
    the parent, its prompt, parameters and metadata, and the parent's webhook URL; the
    parent's figures do not change. Asking twice returns the first child (no second charge).
    Raises NotFound, BatchNotSettled, NothingToRetry, InsufficientCredits.
    """
    async with engine.connect() as conn:
        parent = await batches.get_batch_row(conn, batch_id)
        if parent.settled_at is None:
            raise BatchNotSettled(
                f"batch {batch_id} is still {parent.status}: retry its failed items once it "
                "has settled"
            )
        failed = list(
            (
                await conn.execute(
                    select(video_tasks)
                    .where(video_tasks.c.batch_job_id == batch_id, video_tasks.c.status == "failed")
                    .order_by(video_tasks.c.batch_index)
                )
            ).all()
        )
        # Items an earlier retry (the other variant) already took are not charged again.
        retried = set(
            (
                await conn.execute(
                    select(video_tasks.c.batch_index)
                    .join(batch_jobs, batch_jobs.c.id == video_tasks.c.batch_job_id)
                    .where(batch_jobs.c.parent_batch_id == batch_id)
                )
            ).scalars()
        )
        eligible = [t for t in failed if include_moderation or t.failure_type != "moderation"]
        skipped = len(failed) - len(eligible)
        caller = Caller(account_id=parent.user_id, key_id=parent.key_id)
        variant = "all" if include_moderation else "no-moderation"
        idempotency_key = f"admin-retry:{batch_id}:{variant}"
        fingerprint = request_fingerprint({"retry_of": batch_id, "items": variant})
        replay = await batches.find_replay(conn, caller, idempotency_key, fingerprint)
    chosen = (
        eligible if replay is not None else [t for t in eligible if t.batch_index not in retried]
    )
    if not chosen:
        why = (
            f" ({skipped} refused by moderation: pass include_moderation to retry them)"
            if skipped
            else ""
        )
        raise NothingToRetry(f"batch {batch_id} has no failed items to retry{why}")
    indices = [t.batch_index for t in chosen]
    if replay is None:
        body: dict[str, Any] = {
            "items": [
                {
                    k: v
                    for k, v in {
                        "prompt": t.prompt,
                        "model": t.model,
                        "aspect_ratio": t.aspect_ratio,
                        "duration": t.duration,
                        "reference_url": t.reference_url,
                        "meta": t.meta,
                        "metadata": t.metadata,
                    }.items()
                    if v is not None
                }
                for t in chosen
            ],
            "metadata": parent.metadata,
        }
        if parent.webhook_url:
            body["webhook_url"] = parent.webhook_url
        spec = validate_batch(
            body,
            catalog=catalog,
            max_items=len(chosen),
            allow_private_webhooks=allow_private_webhooks,
        )
        spec = BatchSpec(
            items=[
                replace(item, index=index) for item, index in zip(spec.items, indices, strict=True)
            ],
            webhook_url=spec.webhook_url,
            metadata=spec.metadata,
        )
        created = await batches.create_batch(
            engine,
            caller,
            spec,
            request_id=f"retry-of-{batch_id}",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            source="admin-retry",
            parent_batch_id=batch_id,
            webhook_max_attempts=webhook_max_attempts,
        )
    else:
        created = replay
    log.info(
        "failed items retried",
        extra={
            "batch_id": created.batch_id,
            "action": "retry",
            "parent_batch_id": batch_id,
            "items": len(indices),
            "replay": created.replay,
        },
    )
    return {
        "ok": True,
        "batch_id": created.batch_id,
        "parent_batch_id": batch_id,
        "total_count": created.total_count,
        "required_credits": created.required_credits,
        "available_credits": created.available_credits,
        "retried_indices": indices,
        "excluded_moderation": skipped,
        "idempotent_replay": created.replay,
    }


# --- accounts and keys -----------------------------------------------------------------------


def account_view(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": data["id"],
        "name": data["name"],
        "is_active": data["is_active"],
        "balance_credits": data["balance_credits"],
        "frozen_credits": data["frozen_credits"],
        "available_credits": data["available_credits"],
        "created_at": iso(data["created_at"]),
    }


def key_view(data: dict[str, Any]) -> dict[str, Any]:
    """A key without anything secret: never the key, its hash or a webhook secret."""
    return {
        "key_id": data["id"],
        "account_id": data["account_id"],
        "name": data["name"],
        "key_prefix": data["key_prefix"],
        "is_active": data["is_active"],
        "rate_limit_per_min": data["rate_limit_per_min"],
        "webhook_secret_rotation_ends_at": iso(data.get("webhook_secret_previous_expires_at")),
        "created_at": iso(data["created_at"]),
        "revoked_at": iso(data.get("revoked_at")),
        "last_seen_at": iso(data.get("last_seen_at")),
    }


async def list_accounts(conn: AsyncConnection) -> list[dict[str, Any]]:
    return [account_view(a) for a in await accounts.list_accounts(conn)]


async def list_keys(conn: AsyncConnection, account_id: str) -> list[dict[str, Any]]:
    return [key_view(k) for k in await accounts.list_keys(conn, account_id)]


async def get_key(conn: AsyncConnection, key_id: str) -> dict[str, Any]:
    return key_view(await accounts.get_key(conn, key_id))


async def adjust(
    engine: AsyncEngine,
    account_id: str,
    credits: int,
    *,
    reason: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A manual correction; the entry and the account's credits after it."""
    entry = await accounts.adjust(engine, account_id, credits, reason=reason, key=idempotency_key)
    async with engine.connect() as conn:
        account = await accounts.get_account(conn, account_id)
    return {
        "ok": True,
        "entry": {
            "id": entry["id"],
            "type": entry["type"],
            "delta": entry["delta"],
            "balance_after": entry["balance_after"],
            "description": entry["description"],
            "created_at": iso(entry["created_at"]),
        },
        "account": account_view(account),
    }


# --- the dashboard's figures -------------------------------------------------------------------


async def task_status_counts(conn: AsyncConnection) -> dict[str, int]:
    """Every task by status, as they are now."""
    rows = (
        await conn.execute(
            select(video_tasks.c.status, func.count()).group_by(video_tasks.c.status)
        )
    ).all()
    return {str(status): int(n) for status, n in rows}


async def task_counts_by_batch(
    conn: AsyncConnection, batch_ids: list[str]
) -> dict[str, dict[str, int]]:
    """Per batch, its tasks by status (a batch's own counts are only written at settlement)."""
    if not batch_ids:
        return {}
    rows = (
        await conn.execute(
            select(video_tasks.c.batch_job_id, video_tasks.c.status, func.count())
            .where(video_tasks.c.batch_job_id.in_(batch_ids))
            .group_by(video_tasks.c.batch_job_id, video_tasks.c.status)
        )
    ).all()
    out: dict[str, dict[str, int]] = {}
    for batch_id, status, n in rows:
        out.setdefault(str(batch_id), {})[str(status)] = int(n)
    return out


async def completed_per_bucket(
    conn: AsyncConnection,
    *,
    now: datetime,
    buckets: int = 6,
    bucket_seconds: int = 600,
) -> list[tuple[datetime, int, int]]:
    """Tasks that ended in each of the last ``buckets`` periods (oldest first), from
    ``video_tasks.completed_at``: (bucket start, succeeded, failed). Cancelled tasks are
    not work done and are left out."""
    from datetime import timedelta

    starts = [now - timedelta(seconds=bucket_seconds * (buckets - i)) for i in range(buckets)]
    ends = [*starts[1:], now]
    vt = video_tasks
    columns = []
    for start, end in zip(starts, ends, strict=True):
        within = (vt.c.completed_at >= start) & (vt.c.completed_at < end)
        columns += [
            func.sum(case((within & (vt.c.status == "succeeded"), 1), else_=0)),
            func.sum(case((within & (vt.c.status == "failed"), 1), else_=0)),
        ]
    row = (
        await conn.execute(
            select(*columns).where(vt.c.completed_at >= starts[0], vt.c.completed_at < now)
        )
    ).one()
    return [
        (start, int(row[2 * i] or 0), int(row[2 * i + 1] or 0)) for i, start in enumerate(starts)
    ]


async def oldest_waiting_task(conn: AsyncConnection) -> datetime | None:
    """When the oldest task still waiting to be submitted (pending or queued) was created."""
    from vidbatch.domain.states import TASK_WAITING

    value = (
        await conn.execute(
            select(func.min(video_tasks.c.created_at)).where(
                video_tasks.c.status.in_(sorted(TASK_WAITING))
            )
        )
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
