"""Batches: create (price + freeze + insert, one transaction), read, cancel."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.notify import notify_work
from vidbatch.db.portable import insert_many
from vidbatch.db.schema import accounts, api_usage, batch_jobs, video_tasks
from vidbatch.domain.states import TASK_LIVE, BatchStatus, TaskStatus, sources
from vidbatch.domain.validation import BatchSpec
from vidbatch.exceptions import (
    BatchAlreadyEnded,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    NotFound,
)
from vidbatch.services import events, ledger, settlement

if TYPE_CHECKING:
    from vidbatch.storage import Links

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Created:
    """The answer to a create request (a new batch, or the replay of an earlier one)."""

    batch_id: str
    request_id: str
    total_count: int
    cost_per_video: int
    required_credits: int
    available_credits: int
    status: str
    replay: bool


@dataclass(frozen=True)
class Caller:
    account_id: str
    key_id: str | None


async def find_replay(
    conn: AsyncConnection, caller: Caller, idempotency_key: str, fingerprint: str
) -> Created | None:
    """The earlier batch created with this request id, if any.

    Raises :class:`IdempotencyKeyReused` when that batch was created from another body.
    """
    row = (
        await conn.execute(
            select(batch_jobs).where(
                batch_jobs.c.key_id == caller.key_id,
                batch_jobs.c.idempotency_key == idempotency_key,
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            f"request id {idempotency_key!r} was already used with a different body "
            f"(batch {row.id})",
            batch_id=row.id,
        )
    available = (
        await conn.execute(
            select(accounts.c.balance_credits - accounts.c.frozen_credits).where(
                accounts.c.id == caller.account_id
            )
        )
    ).scalar_one()
    return Created(
        batch_id=row.id,
        request_id=row.request_id,
        total_count=row.total_count,
        cost_per_video=row.cost_per_video or 0,
        required_credits=row.frozen_credits,
        available_credits=int(available),
        status=row.status,
        replay=True,
    )


async def create_batch(
    engine: AsyncEngine,
    caller: Caller,
    spec: BatchSpec,
    *,
    request_id: str,
    idempotency_key: str | None,
    fingerprint: str | None,
    source: str = "enterprise",
    parent_batch_id: str | None = None,
    client_ip: str | None = None,
    user_agent: str | None = None,
    webhook_max_attempts: int = 4,
    now: datetime | None = None,
) -> Created:
    """Price, reserve and insert a batch and all its tasks in one transaction.

    Raises InsufficientCredits (nothing written), IdempotencyKeyReused, IdempotencyInFlight.
    """
    now = now or utcnow()
    batch_id = str(uuid.uuid4())
    total = spec.total_credits
    try:
        async with engine.begin() as conn:
            posting = await insert_batch(
                conn,
                caller,
                spec,
                batch_id=batch_id,
                request_id=request_id,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                source=source,
                parent_batch_id=parent_batch_id,
                client_ip=client_ip,
                user_agent=user_agent,
                webhook_max_attempts=webhook_max_attempts,
                now=now,
            )
    except IntegrityError:
        if idempotency_key is None or fingerprint is None:
            raise
        # Another request with the same id committed first: answer as its replay.
        async with engine.connect() as conn:
            replay = await find_replay(conn, caller, idempotency_key, fingerprint)
        if replay is None:
            raise IdempotencyInFlight(
                f"a request with id {idempotency_key!r} is still being processed"
            ) from None
        return replay
    log.info(
        "batch created",
        extra={
            "batch_id": batch_id,
            "action": "create",
            "items": len(spec.items),
            "request_id": request_id,
        },
    )
    return Created(
        batch_id=batch_id,
        request_id=request_id,
        total_count=len(spec.items),
        cost_per_video=spec.cost_per_video,
        required_credits=total,
        available_credits=posting.entry["balance_after"] - posting.entry["frozen_after"],
        status=BatchStatus.QUEUED,
        replay=False,
    )


async def insert_batch(
    conn: AsyncConnection,
    caller: Caller,
    spec: BatchSpec,
    *,
    batch_id: str,
    request_id: str,
    idempotency_key: str | None,
    fingerprint: str | None,
    source: str,
    parent_batch_id: str | None,
    client_ip: str | None,
    user_agent: str | None,
    webhook_max_attempts: int,
    now: datetime,
    retry_of: Sequence[str] | None = None,
) -> ledger.Posting:
    """Insert a batch, reserve its credits and insert its tasks on ``conn`` (no commit);
    ``retry_of`` names, item by item, the earlier task each one retries.

    Raises InsufficientCredits; IntegrityError for a request id (or a retried task) taken.
    """
    total = spec.total_credits
    await conn.execute(
        batch_jobs.insert().values(
            id=batch_id,
            user_id=caller.account_id,
            key_id=caller.key_id,
            status=BatchStatus.QUEUED,
            total_count=len(spec.items),
            cost_per_video=spec.cost_per_video,
            frozen_credits=total,
            request_id=request_id,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            source=source,
            webhook_url=spec.webhook_url,
            metadata=spec.metadata,
            parent_batch_id=parent_batch_id,
            created_at=now,
            updated_at=now,
        )
    )
    posting = await ledger.reserve(conn, caller.account_id, total, batch_id=batch_id)
    items = spec.items
    if retry_of is not None and len(retry_of) != len(items):
        raise ValueError(
            f"insert_batch: {len(retry_of)} retried task id(s) for {len(items)} item(s)"
        )
    # Column by column, one statement (10,000 items: a few hundred ms less than a dict per
    # row through table.insert(); see insert_many).
    await insert_many(
        conn,
        video_tasks,
        same={
            "batch_job_id": batch_id,
            "account_id": caller.account_id,
            "status": TaskStatus.PENDING,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        },
        each={
            "id": [str(uuid.uuid4()) for _ in items],
            "batch_index": [item.index for item in items],
            "model": [item.model for item in items],
            "provider": [item.provider for item in items],
            "prompt": [item.prompt for item in items],
            "reference_url": [item.reference_url for item in items],
            "aspect_ratio": [item.aspect_ratio for item in items],
            "duration": [item.duration for item in items],
            "size": ["small" if item.model.startswith("sora") else None for item in items],
            "meta": [item.meta for item in items],
            "metadata": [item.metadata for item in items],
            "cost_credits": [item.cost_credits for item in items],
            # Unique: the database refuses a second retry of the same task.
            "retry_of_task_id": list(retry_of) if retry_of is not None else [None] * len(items),
        },
    )
    if caller.key_id is not None:
        await conn.execute(
            api_usage.insert().values(
                key_id=caller.key_id,
                account_id=caller.account_id,
                request_id=request_id,
                minute_bucket=int(now.timestamp()) // 60,
                ip=client_ip,
                user_agent=(user_agent or "")[:512] or None,
                batch_id=batch_id,
                status_code=200,
                created_at=now,
            )
        )
    await events.enqueue(conn, batch_id, "batch.created", now, max_attempts=webhook_max_attempts)
    await notify_work(conn)
    return posting


def storable_id(value: str) -> bool:
    """False for an id no row can have, which PostgreSQL would refuse to even compare
    (NUL characters, text that is not valid Unicode)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def get_batch_row(conn: AsyncConnection, batch_id: str, account_id: str | None = None) -> Any:
    """The batch row; another account's batch is NotFound exactly like a missing one.

    Database failures surface as they are (an outage is not a missing batch)."""
    if not storable_id(batch_id):
        raise NotFound(f"batch {batch_id} not found")
    query = select(batch_jobs).where(batch_jobs.c.id == batch_id)
    if account_id is not None:
        query = query.where(batch_jobs.c.user_id == account_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"batch {batch_id} not found")
    return row


async def list_batches(
    conn: AsyncConnection,
    *,
    account_id: str | None,
    status: str | None = None,
    limit: int = 50,
    cursor: tuple[datetime, str] | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> list[Any]:
    """Batches newest first; ``cursor`` is the (created_at, id) of the last one seen."""
    query = select(batch_jobs).order_by(batch_jobs.c.created_at.desc(), batch_jobs.c.id.desc())
    if account_id is not None:
        query = query.where(batch_jobs.c.user_id == account_id)
    if status is not None:
        query = query.where(batch_jobs.c.status == status)
    if created_from is not None:
        query = query.where(batch_jobs.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(batch_jobs.c.created_at < created_to)
    if cursor is not None:
        at, last_id = cursor
        query = query.where(
            or_(
                batch_jobs.c.created_at < at,
                and_(batch_jobs.c.created_at == at, batch_jobs.c.id < last_id),
            )
        )
    return list((await conn.execute(query.limit(limit))).all())


async def list_items(
    conn: AsyncConnection,
    batch_id: str,
    *,
    statuses: tuple[str, ...] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Any], int]:
    """A page of a batch's tasks in index order, and how many match in all."""
    where = [video_tasks.c.batch_job_id == batch_id]
    if statuses:
        where.append(video_tasks.c.status.in_(statuses))
    total = (
        await conn.execute(select(func.count()).select_from(video_tasks).where(*where))
    ).scalar_one()
    rows = (
        await conn.execute(
            select(video_tasks)
            .where(*where)
            .order_by(video_tasks.c.batch_index)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return list(rows), int(total)


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: ``status`` is the batch's status after it (its final one when
    nothing was left running, else still running), ``running_items`` the items already at
    the provider, which finish and are charged only if they succeed."""

    batch_id: str
    status: str
    cancelled_items: int
    running_items: int
    credits_refunded: int
    #: Credits released by this cancel (``credits_refunded`` is the batch's total so far).
    refunded_now: int = 0


async def cancel_batch(
    engine: AsyncEngine,
    batch_id: str,
    *,
    account_id: str | None,
    webhook_max_attempts: int = 4,
    now: datetime | None = None,
    links: Links | None = None,
) -> Cancelled:
    """Cancel what has not been submitted and refund it at once; running tasks finish and
    are charged only if they succeed. The batch settles now if nothing is left running (or
    waiting for its archive); ``links`` signs the archived videos' URLs in its event."""
    now = now or utcnow()
    async with engine.begin() as conn:
        row = await get_batch_row(conn, batch_id, account_id)
        # One UPDATE both marks the cancel and takes the batch's row lock, so a settlement
        # cannot slip in between this check and the refunds below.
        marked = await conn.execute(
            update(batch_jobs)
            .where(batch_jobs.c.id == batch_id, batch_jobs.c.settled_at.is_(None))
            .values(
                cancel_requested_at=func.coalesce(batch_jobs.c.cancel_requested_at, now),
                updated_at=now,
            )
        )
        if marked.rowcount != 1:
            row = await get_batch_row(conn, batch_id, account_id)
            raise BatchAlreadyEnded(f"batch {batch_id} already ended ({row.status})")
        cancelled = (
            await conn.execute(
                update(video_tasks)
                .where(
                    video_tasks.c.batch_job_id == batch_id,
                    video_tasks.c.status.in_(sources(TaskStatus.CANCELLED)),
                )
                .values(
                    status=TaskStatus.CANCELLED,
                    next_attempt_at=None,
                    completed_at=now,
                    updated_at=now,
                    error_message="cancelled by request",
                )
                .returning(video_tasks.c.cost_credits)
            )
        ).all()
        amount = sum(r.cost_credits for r in cancelled)
        if amount:
            await ledger.release(
                conn,
                row.user_id,
                amount,
                batch_id=batch_id,
                key=f"cancel:{batch_id}:{uuid.uuid4()}",
                description=f"refund of {len(cancelled)} cancelled item(s), batch {batch_id}",
            )
            await conn.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == batch_id)
                .values(credits_refunded=batch_jobs.c.credits_refunded + amount)
            )
        done = await settlement.settle_batch(
            conn, batch_id, now, webhook_max_attempts=webhook_max_attempts, links=links
        )
        after = (
            await conn.execute(
                select(batch_jobs.c.status, batch_jobs.c.credits_refunded).where(
                    batch_jobs.c.id == batch_id
                )
            )
        ).one()
        running = (
            await conn.execute(
                select(func.count())
                .select_from(video_tasks)
                .where(
                    video_tasks.c.batch_job_id == batch_id,
                    video_tasks.c.status.in_(TASK_LIVE),
                )
            )
        ).scalar_one()
    log.info(
        "batch cancelled",
        extra={
            "batch_id": batch_id,
            "action": "cancel",
            "items": len(cancelled),
            "refunded": amount,
        },
    )
    return Cancelled(
        batch_id=batch_id,
        status=done.status if done else after.status,
        cancelled_items=len(cancelled),
        running_items=int(running),
        credits_refunded=int(after.credits_refunded),
        refunded_now=int(amount),
    )
