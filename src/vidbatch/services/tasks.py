"""Recording what happened to a remote task. Used by the worker (fenced on its lease)
and by the provider callback (guarded on the task's state); terminal states absorb.

Every write is one conditional UPDATE whose row count says whether it applied: a stale
worker, a late poll or a repeated callback changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.portable import greatest
from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.provider import RemoteResult
from vidbatch.domain.states import (
    TASK_LIVE,
    BatchStatus,
    FailureType,
    TaskStatus,
    can_move,
    sources,
)
from vidbatch.services import events

log = logging.getLogger(__name__)

MAX_TEXT = 2000
#: The highest progress a task that has not ended shows (100 is for ended tasks only).
MAX_RUNNING_PROGRESS = 99
#: The lease owner of a callback confirming a task with the provider.
CALLBACK_OWNER = "callback"


def _clip(text: str | None) -> str | None:
    return text[:MAX_TEXT] if text else text


@dataclass(frozen=True)
class Fence:
    """The lease a write must still hold: the token bumped at claim time."""

    owner: str
    token: int


def _fenced(task_id: str, states: Collection[TaskStatus], fence: Fence | None) -> list[Any]:
    """The task, in one of ``states``, still held under ``fence`` (if one is given)."""
    where = [video_tasks.c.id == task_id, video_tasks.c.status.in_(states)]
    if fence is not None:
        where += [
            video_tasks.c.lease_owner == fence.owner,
            video_tasks.c.lease_token == fence.token,
        ]
    return where


async def mark_submitted(
    conn: AsyncConnection,
    task_id: str,
    fence: Fence,
    *,
    remote_id: str,
    now: datetime,
    next_check_at: datetime,
    deadline_at: datetime,
) -> Any | None:
    """submitting → processing with the provider's id; the task's row, or None when the
    lease was lost. A final callback that arrived before this write (``callback_at`` set)
    leaves the task leased to the submitter, which polls it at once (the returned row's
    ``callback_at`` says so); otherwise the lease ends here and the first poll is due at
    ``next_check_at``."""
    early = video_tasks.c.callback_at.is_not(None)
    return (
        await conn.execute(
            update(video_tasks)
            .where(*_fenced(task_id, sources(TaskStatus.PROCESSING), fence))
            .values(
                status=TaskStatus.PROCESSING,
                grsai_task_id=remote_id,
                submitted_at=now,
                deadline_at=deadline_at,
                next_attempt_at=case((early, video_tasks.c.lease_expires_at), else_=next_check_at),
                lease_owner=case((early, video_tasks.c.lease_owner), else_=None),
                lease_expires_at=case((early, video_tasks.c.lease_expires_at), else_=None),
                last_error=None,
                updated_at=now,
            )
            .returning(*video_tasks.c)
        )
    ).first()


async def mark_batch_started(
    conn: AsyncConnection, batch_id: str, *, now: datetime, webhook_max_attempts: int
) -> None:
    """queued → processing when its first task reached the provider (and the event)."""
    started = await conn.execute(
        update(batch_jobs)
        .where(batch_jobs.c.id == batch_id, batch_jobs.c.status == BatchStatus.QUEUED)
        .values(status=BatchStatus.PROCESSING, updated_at=now)
    )
    if started.rowcount:
        await events.enqueue(
            conn, batch_id, "batch.running", now, max_attempts=webhook_max_attempts
        )


async def reschedule_submit(
    conn: AsyncConnection,
    task_id: str,
    fence: Fence,
    *,
    error: str,
    retry_at: datetime,
    now: datetime,
    count_attempt: bool = True,
) -> bool:
    """submitting → pending, to be submitted again at ``retry_at`` (a transient error).
    A 429 does not burn an attempt (``count_attempt=False``)."""
    values: dict[str, Any] = {
        "status": TaskStatus.PENDING,
        "next_attempt_at": retry_at,
        "last_error": _clip(error),
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if not count_attempt:
        values["attempts"] = video_tasks.c.attempts - 1
    result = await conn.execute(
        update(video_tasks)
        .where(*_fenced(task_id, sources(TaskStatus.PENDING), fence))
        .values(**values)
    )
    return result.rowcount == 1


async def fail(
    conn: AsyncConnection,
    task_id: str,
    *,
    from_status: TaskStatus,
    failure_type: str,
    error: str,
    now: datetime,
    failure_reason: str | None = None,
    fence: Fence | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """A task in ``from_status`` fails for good; its price is refunded at settlement."""
    if not can_move(from_status, TaskStatus.FAILED):
        raise ValueError(f"a {from_status} task cannot fail")
    values: dict[str, Any] = {
        "status": TaskStatus.FAILED,
        "failure_type": failure_type,
        "failure_reason": _clip(failure_reason or failure_type),
        "error_message": _clip(error),
        "last_error": _clip(error),
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
    }
    values.update(extra or {})
    row = (
        await conn.execute(
            update(video_tasks)
            .where(*_fenced(task_id, {from_status}, fence))
            .values(**values)
            .returning(video_tasks.c.batch_job_id)
        )
    ).first()
    if row is None:
        return False
    # Every item failure leaves one line: which batch, which item, and why.
    log.warning(
        "item failed: %s: %s",
        failure_reason or failure_type,
        _clip(error),
        extra={
            "batch_id": row.batch_job_id,
            "task_id": task_id,
            "action": "item_failed",
            "failure_type": str(failure_type),
        },
    )
    return True


def acceptable_video_url(url: str | None, *, require_https: bool) -> bool:
    if not url:
        return False
    parts = urlsplit(url)
    allowed = ("https",) if require_https else ("https", "http")
    return parts.scheme in allowed and bool(parts.netloc)


@dataclass(frozen=True)
class Applied:
    """What recording a remote result did to the task."""

    #: ``TaskStatus.SUCCEEDED`` or ``FAILED`` when the task ended, ``"running"`` otherwise.
    outcome: str
    applied: bool


async def apply_result(
    conn: AsyncConnection,
    task_id: str,
    result: RemoteResult,
    *,
    now: datetime,
    require_https: bool,
    fence: Fence | None = None,
    next_check_at: datetime | None = None,
    count_poll: bool = False,
    timed_out: bool = False,
    archive: bool = False,
    callback_at: datetime | None = None,
) -> Applied:
    """Record a provider result on a ``processing`` task.

    ``succeeded`` needs an acceptable video URL, else the task fails (model_error): a
    success without a video is never billed. ``running`` keeps the task processing and,
    with ``next_check_at``, schedules its next poll; ``timed_out`` turns a still-running
    task into a ``timeout`` failure. With ``archive``, a success is queued for the archive
    lane (``archive_status`` pending, due now); its batch settles once it is archived.
    ``callback_at`` is written in the same statement (a provider callback's time).
    """
    also: dict[str, Any] = {}
    if count_poll:
        also = {"poll_count": video_tasks.c.poll_count + 1, "last_poll_at": now}
    if callback_at is not None:
        also["callback_at"] = callback_at
    if result.status == "succeeded":
        if not acceptable_video_url(result.video_url, require_https=require_https):
            why = "no video URL" if not result.video_url else "video URL is not https"
            ok = await fail(
                conn,
                task_id,
                from_status=TaskStatus.PROCESSING,
                failure_type=FailureType.MODEL_ERROR,
                error=f"provider reported success with {why}",
                now=now,
                failure_reason="invalid_result",
                fence=fence,
                extra=also,
            )
            return Applied(TaskStatus.FAILED, ok)
        res = await conn.execute(
            update(video_tasks)
            .where(*_fenced(task_id, sources(TaskStatus.SUCCEEDED), fence))
            .values(
                status=TaskStatus.SUCCEEDED,
                progress=100,
                video_url=result.video_url,
                pid=result.pid,
                remove_watermark=result.remove_watermark,
                archive_status=ArchiveStatus.PENDING if archive else None,
                archive_due_at=now if archive else None,
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=now,
                updated_at=now,
                **also,
            )
        )
        return Applied(TaskStatus.SUCCEEDED, res.rowcount == 1)
    if result.status == "failed":
        ok = await fail(
            conn,
            task_id,
            from_status=TaskStatus.PROCESSING,
            failure_type=result.failure_type or FailureType.UNKNOWN,
            error=result.error or result.failure_reason or "generation failed",
            failure_reason=result.failure_reason,
            now=now,
            fence=fence,
            extra=also,
        )
        return Applied(TaskStatus.FAILED, ok)
    if timed_out:
        ok = await fail(
            conn,
            task_id,
            from_status=TaskStatus.PROCESSING,
            failure_type=FailureType.TIMEOUT,
            error="the provider did not finish in time",
            failure_reason="timeout",
            now=now,
            fence=fence,
            extra=also,
        )
        return Applied(TaskStatus.FAILED, ok)
    values: dict[str, Any] = {
        # 100 means ended: a running task's report of 100 is held at 99 until it ends.
        "progress": greatest(
            conn, video_tasks.c.progress, min(result.progress, MAX_RUNNING_PROGRESS)
        ),
        "updated_at": now,
        **also,
    }
    if next_check_at is not None:
        values.update(next_attempt_at=next_check_at, lease_owner=None, lease_expires_at=None)
    res = await conn.execute(
        update(video_tasks)
        .where(*_fenced(task_id, {TaskStatus.PROCESSING}, fence))
        .values(**values)
    )
    return Applied("running", res.rowcount == 1)


async def reschedule_poll(
    conn: AsyncConnection,
    task_id: str,
    fence: Fence,
    *,
    next_check_at: datetime,
    error: str,
    now: datetime,
) -> bool:
    """A poll that got no usable answer: the task stays processing, the poll does not
    count, and it is checked again at ``next_check_at``."""
    result = await conn.execute(
        update(video_tasks)
        .where(*_fenced(task_id, {TaskStatus.PROCESSING}, fence))
        .values(
            next_attempt_at=next_check_at,
            last_error=_clip(error),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    return result.rowcount == 1


async def claim_for_confirmation(
    conn: AsyncConnection, task_id: str, *, now: datetime, lease_until: datetime
) -> Fence | None:
    """Take a processing task's lease to confirm a final callback with the provider; None
    when a worker's poll or another callback holds it now (that one records the result,
    so this callback costs no provider call). Like a worker's claim, the task is due again
    when the lease runs out."""
    row = (
        await conn.execute(
            update(video_tasks)
            .where(
                video_tasks.c.id == task_id,
                video_tasks.c.status == TaskStatus.PROCESSING,
                or_(
                    video_tasks.c.lease_expires_at.is_(None),
                    video_tasks.c.lease_expires_at <= now,
                ),
            )
            .values(
                lease_owner=CALLBACK_OWNER,
                lease_expires_at=lease_until,
                next_attempt_at=lease_until,
                lease_token=video_tasks.c.lease_token + 1,
                callback_at=now,
                updated_at=now,
            )
            .returning(video_tasks.c.lease_token)
        )
    ).first()
    return Fence(CALLBACK_OWNER, row.lease_token) if row is not None else None


async def batch_has_live_tasks(conn: AsyncConnection, batch_id: str) -> bool:
    """True while some task of the batch has not ended."""
    live = await conn.execute(
        select(video_tasks.c.id)
        .where(video_tasks.c.batch_job_id == batch_id, video_tasks.c.status.in_(TASK_LIVE))
        .limit(1)
    )
    return live.first() is not None
