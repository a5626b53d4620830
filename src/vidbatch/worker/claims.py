"""Claims: who works on what, decided by one statement each.

A claim moves rows and sets their lease (owner, expiry, a token bumped on every claim) in
a single UPDATE whose candidate rows come from :func:`vidbatch.db.queue.due_ids` (so two
workers never take the same task). A claimed task's ``next_attempt_at`` is its lease expiry: if
the worker dies, the task is due again when the lease runs out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.queue import due_ids, serialise_claims
from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.db.types import as_utc
from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.states import TASK_LIVE, TASK_RUNNING, TaskStatus, sources

#: Failure reasons of tasks that may still be running at the provider.
MAY_STILL_RUN = ("timeout", "ambiguous_submit")

#: The states a task is claimed for submission from.
SUBMITTABLE = sources(TaskStatus.SUBMITTING)

#: The tasks the submit stage looks after (waiting ones, and submissions to rescue when
#: their lease runs out), and the poll stage's: their ``next_attempt_at`` say when.
SUBMIT_DUE = SUBMITTABLE | {TaskStatus.SUBMITTING}
POLL_DUE = frozenset({TaskStatus.PROCESSING})

#: Key of the PostgreSQL advisory lock that serialises claims under a fleet-wide cap.
CAP_LOCK_KEY = 0x76696462  # "vidb"


async def pick_batches(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Batches with tasks due for submission, least recently served first (round-robin),
    so a small batch posted after a huge one starts in the next round."""
    due = exists().where(
        video_tasks.c.batch_job_id == batch_jobs.c.id,
        video_tasks.c.status.in_(SUBMITTABLE),
        video_tasks.c.next_attempt_at <= now,
    )
    ids = list(
        (
            await conn.execute(
                select(batch_jobs.c.id)
                .where(
                    batch_jobs.c.settled_at.is_(None),
                    batch_jobs.c.cancel_requested_at.is_(None),
                    due,
                )
                .order_by(
                    batch_jobs.c.last_dispatch_at.asc().nulls_first(), batch_jobs.c.created_at
                )
                .limit(limit)
            )
        ).scalars()
    )
    if ids:
        await conn.execute(
            update(batch_jobs).where(batch_jobs.c.id.in_(ids)).values(last_dispatch_at=now)
        )
    return ids


async def inflight_room(conn: AsyncConnection, cap: int, now: datetime) -> int:
    """How many more tasks may start under a fleet-wide cap (0 = none). Serialised by an
    advisory lock held to the end of the claim's transaction on PostgreSQL.

    A task we gave up on (a time-out, or a submit whose outcome is unknown) may still run
    at the provider: it keeps its slot until its deadline, so the cap holds there too."""
    await serialise_claims(conn, CAP_LOCK_KEY)
    live = (
        await conn.execute(
            select(func.count())
            .select_from(video_tasks)
            .where(
                video_tasks.c.status.in_(TASK_RUNNING),
                video_tasks.c.next_attempt_at.is_not(None),
            )  # the partial index
        )
    ).scalar_one()
    abandoned = (
        await conn.execute(
            select(func.count())
            .select_from(video_tasks)
            .where(video_tasks.c.failure_reason.in_(MAY_STILL_RUN), video_tasks.c.deadline_at > now)
        )
    ).scalar_one()
    return max(0, cap - int(live) - int(abandoned))


async def claim_for_submit(
    conn: AsyncConnection,
    batch_id: str,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[Any]:
    """Take up to ``limit`` due waiting tasks of a batch: pending|queued → submitting."""
    due = due_ids(
        conn,
        select(video_tasks.c.id)
        .where(
            video_tasks.c.batch_job_id == batch_id,
            video_tasks.c.status.in_(SUBMITTABLE),
            video_tasks.c.next_attempt_at <= now,
        )
        .order_by(video_tasks.c.batch_index)
        .limit(limit),
    )
    rows = await conn.execute(
        update(video_tasks)
        .where(video_tasks.c.id.in_(due), video_tasks.c.status.in_(SUBMITTABLE))
        .values(
            status=TaskStatus.SUBMITTING,
            lease_owner=owner,
            lease_expires_at=lease_until,
            next_attempt_at=lease_until,
            lease_token=video_tasks.c.lease_token + 1,
            attempts=video_tasks.c.attempts + 1,
            updated_at=now,
        )
        .returning(*video_tasks.c)
    )
    return list(rows.all())


async def claim_for_poll(
    conn: AsyncConnection, *, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[Any]:
    """Take up to ``limit`` processing tasks whose next check is due."""
    due = due_ids(
        conn,
        select(video_tasks.c.id)
        .where(video_tasks.c.status == TaskStatus.PROCESSING, video_tasks.c.next_attempt_at <= now)
        .order_by(video_tasks.c.next_attempt_at)
        .limit(limit),
    )
    rows = await conn.execute(
        update(video_tasks)
        .where(video_tasks.c.id.in_(due), video_tasks.c.status == TaskStatus.PROCESSING)
        .values(
            lease_owner=owner,
            lease_expires_at=lease_until,
            next_attempt_at=lease_until,
            lease_token=video_tasks.c.lease_token + 1,
            updated_at=now,
        )
        .returning(*video_tasks.c)
    )
    return list(rows.all())


async def expired_submissions(conn: AsyncConnection, *, now: datetime, limit: int) -> list[Any]:
    """``submitting`` tasks whose worker's lease ran out: the provider may or may not have
    the task. Claimed (token bumped) so only one worker applies the policy."""
    due = due_ids(
        conn,
        select(video_tasks.c.id)
        .where(video_tasks.c.status == TaskStatus.SUBMITTING, video_tasks.c.next_attempt_at <= now)
        .limit(limit),
    )
    rows = await conn.execute(
        update(video_tasks)
        .where(
            video_tasks.c.id.in_(due),
            video_tasks.c.status == TaskStatus.SUBMITTING,
            video_tasks.c.next_attempt_at <= now,
        )
        .values(lease_token=video_tasks.c.lease_token + 1, lease_owner="rescue", updated_at=now)
        .returning(
            video_tasks.c.id,
            video_tasks.c.lease_token,
            video_tasks.c.batch_job_id,
            video_tasks.c.attempts,
        )
    )
    return list(rows.all())


async def settleable_batches(conn: AsyncConnection, limit: int) -> list[str]:
    """Unsettled batches none of whose tasks is live or waiting for its archive; least
    recently touched first, so a batch whose settlement keeps failing cannot block the
    others."""
    live = exists().where(
        video_tasks.c.batch_job_id == batch_jobs.c.id,
        video_tasks.c.status.in_(TASK_LIVE),
    )
    archiving = exists().where(
        video_tasks.c.batch_job_id == batch_jobs.c.id,
        video_tasks.c.archive_status == ArchiveStatus.PENDING,
    )
    return list(
        (
            await conn.execute(
                select(batch_jobs.c.id)
                .where(and_(batch_jobs.c.settled_at.is_(None), ~live, ~archiving))
                .order_by(batch_jobs.c.updated_at)
                .limit(limit)
            )
        ).scalars()
    )


async def count_waiting_polls(conn: AsyncConnection, now: datetime) -> int:
    """Processing tasks whose next poll is not due yet (the original's skippedBackoff)."""
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(video_tasks)
                .where(
                    video_tasks.c.status == TaskStatus.PROCESSING,
                    video_tasks.c.next_attempt_at > now,
                )
            )
        ).scalar_one()
    )


async def next_due_at(
    conn: AsyncConnection, statuses: frozenset[TaskStatus] | None = None
) -> datetime | None:
    """When the earliest live task (of ``statuses``, default any) needs attention: a
    worker stage sleeps until then. The partial ``ix_video_tasks_due`` answers it."""
    where = [video_tasks.c.next_attempt_at.is_not(None)]
    if statuses is not None:
        where.append(video_tasks.c.status.in_(statuses))
    value = (
        await conn.execute(select(func.min(video_tasks.c.next_attempt_at)).where(*where))
    ).scalar_one()
    return as_utc(value)


async def next_archive_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending archive copy is due."""
    value = (
        await conn.execute(
            select(func.min(video_tasks.c.archive_due_at)).where(
                video_tasks.c.archive_status == ArchiveStatus.PENDING
            )
        )
    ).scalar_one()
    return as_utc(value)


async def cancel_waiting_of_cancelled_batches(conn: AsyncConnection, *, now: datetime) -> int:
    """A task that was being submitted when its batch was cancelled, and went back to
    waiting (a retryable error), is cancelled now: it would otherwise never be claimed again
    (cancelled batches are not dispatched) and its batch would never settle."""
    cancelled = select(batch_jobs.c.id).where(
        batch_jobs.c.cancel_requested_at.is_not(None), batch_jobs.c.settled_at.is_(None)
    )
    result = await conn.execute(
        update(video_tasks)
        .where(
            video_tasks.c.status.in_(sources(TaskStatus.CANCELLED)),
            video_tasks.c.batch_job_id.in_(cancelled),
        )
        .values(
            status=TaskStatus.CANCELLED,
            next_attempt_at=None,
            completed_at=now,
            updated_at=now,
            error_message="cancelled by request",
        )
    )
    return int(result.rowcount or 0)


async def claim_for_archive(
    conn: AsyncConnection, *, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[Any]:
    """Take up to ``limit`` succeeded tasks whose archive is due. Like every claim, the
    task is due again when the lease runs out (its worker died mid-archive)."""
    pending = video_tasks.c.archive_status == ArchiveStatus.PENDING
    due = due_ids(
        conn,
        select(video_tasks.c.id)
        .where(pending, video_tasks.c.archive_due_at <= now)
        .order_by(video_tasks.c.archive_due_at)
        .limit(limit),
    )
    rows = await conn.execute(
        update(video_tasks)
        .where(video_tasks.c.id.in_(due), pending, video_tasks.c.archive_due_at <= now)
        .values(
            lease_owner=owner,
            lease_expires_at=lease_until,
            archive_due_at=lease_until,
            lease_token=video_tasks.c.lease_token + 1,
            archive_attempts=video_tasks.c.archive_attempts + 1,
        )
        .returning(*video_tasks.c)
    )
    return list(rows.all())
