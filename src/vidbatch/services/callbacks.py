"""The provider's callback for one task: authenticate it, then record what it says.

The token is an HMAC of the task id: a missing or wrong token and an unknown task are the
same :class:`NotFound` and change nothing. The body is a hint, not the truth: a final state
is confirmed with the provider before it is recorded (``VIDBATCH_CONFIRM_CALLBACKS``, on by
default). Processing is idempotent and order-insensitive; terminal states absorb.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, select, update

from vidbatch.clock import utcnow
from vidbatch.db.engine import single
from vidbatch.db.notify import notify_work
from vidbatch.db.schema import video_tasks
from vidbatch.domain.callback_tokens import token_ok
from vidbatch.domain.provider import RemoteResult
from vidbatch.domain.states import TASK_LIVE, TASK_TERMINAL, TaskStatus
from vidbatch.exceptions import CallbackInvalid, NotFound, ProviderError
from vidbatch.services import settlement, tasks
from vidbatch.services.context import Context
from vidbatch.services.tasks import Fence

log = logging.getLogger(__name__)

NOT_FOUND = "callback target not found"
#: A task's progress is written at most this often (seconds) by its progress callbacks.
PROGRESS_WRITE_SECONDS = 1.0


@dataclass(frozen=True)
class Received:
    """What a callback came to."""

    #: The task's status after the callback.
    status: str
    #: The task had already ended: nothing was recorded.
    ignored: bool = False
    #: Not recorded yet: the task is checked with the provider as soon as it can be.
    deferred: bool = False
    #: The batch's last live task ended: the workers can settle it now.
    batch_done: bool = False


async def receive(rt: Context, task_id: str, token: str, body: bytes) -> Received:
    """Handle one callback. Raises :class:`NotFound` (bad token, unknown task) and
    :class:`CallbackInvalid` (an unreadable body, or one about another remote task)."""
    metrics = rt.metrics.callbacks
    if not token_ok(rt.callback_key, task_id, token):
        metrics.labels("unauthorized").inc()
        raise NotFound(NOT_FOUND)
    async with single(rt.engine, write=False) as conn:
        task = (await conn.execute(select(video_tasks).where(video_tasks.c.id == task_id))).first()
    if task is None:
        metrics.labels("unknown_task").inc()
        raise NotFound(NOT_FOUND)
    try:
        hint = rt.provider_for(task.provider).parse_callback(body)
    except CallbackInvalid:
        metrics.labels("invalid").inc()
        raise
    if task.grsai_task_id and hint.remote_id and hint.remote_id != task.grsai_task_id:
        metrics.labels("mismatch").inc()
        raise CallbackInvalid("the callback is for another remote task")
    now = utcnow()

    if task.status in TASK_TERMINAL:
        metrics.labels("ignored_terminal").inc()
        return Received(task.status, ignored=True)
    if task.status != TaskStatus.PROCESSING or not task.grsai_task_id:
        # The provider finished before our submit was recorded: remember it, so the task
        # is checked as soon as it is (progress before that is of no use).
        if hint.is_final:
            await _note_early_final(rt, task_id, now)
        metrics.labels("early").inc()
        return Received(task.status, deferred=True)

    if not hint.is_final and _coalesced(task, hint, now):
        # Nothing a customer would miss: the progress is not higher than the one recorded,
        # or one was recorded less than PROGRESS_WRITE_SECONDS ago (the next callback, a
        # poll or the final state brings it up to date). No write at all.
        metrics.labels("coalesced").inc()
        return Received("running")  # as when it is written
    if hint.is_final and rt.settings.confirm_callbacks:
        confirmed = await _confirm(rt, task, now)
        if confirmed is None:
            return Received(TaskStatus.PROCESSING, deferred=True)
        result, fence = confirmed
    else:
        result, fence = hint, None
    applied, batch_done = await _record(rt, task, result, fence, now)
    if batch_done:
        await _settle(rt, task.batch_job_id)
    metrics.labels(applied.outcome if applied.applied else "stale").inc()
    log.info(
        "provider callback",
        extra={
            "task_id": task_id,
            "batch_id": task.batch_job_id,
            "action": "callback",
            "outcome": applied.outcome,
        },
    )
    return Received(applied.outcome if applied.applied else task.status, batch_done=batch_done)


async def _record(
    rt: Context, task: Any, result: RemoteResult, fence: Fence | None, now: datetime
) -> tuple[tasks.Applied, bool]:
    """Write what the callback (or its confirmation) says; True beside it when the task was
    its batch's last live one."""
    archive = rt.settings.result_store_spec.enabled
    # Each statement stands alone (autocommit on PostgreSQL): the result and the callback's
    # time in one UPDATE; the wake-up; then the question about the batch, which sees every
    # task ended by a commit before it.
    async with single(rt.engine) as conn:
        applied = await tasks.apply_result(
            conn,
            task.id,
            result,
            now=now,
            require_https=rt.settings.require_https_video_url,
            fence=fence,
            # still running at the provider: back to the schedule the claim moved
            next_check_at=(task.next_attempt_at or now) if fence is not None else None,
            archive=archive,
            callback_at=now,
        )
        ended = applied.applied and applied.outcome != "running"
        if ended and archive and applied.outcome == TaskStatus.SUCCEEDED:
            await notify_work(conn)  # a video waits for the archive lane
        # Was it the batch's last live task? Asked after our own commit: of two callbacks
        # ending a batch's last two tasks at the same instant, the one that commits last
        # sees the other's task ended, so one of them always settles the batch.
        batch_done = ended and not await tasks.batch_has_live_tasks(conn, task.batch_job_id)
    return applied, batch_done


async def _note_early_final(rt: Context, task_id: str, now: datetime) -> None:
    """A final callback before the submit's own write: if the submit was recorded
    meanwhile, the task is due for a poll now; otherwise the submitter, recording it, sees
    ``callback_at`` and polls it at once."""
    async with single(rt.engine) as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.id == task_id, video_tasks.c.status.in_(TASK_LIVE))
            .values(
                callback_at=now,
                # (still leased: its submitter is polling it already)
                next_attempt_at=case(
                    (
                        and_(
                            video_tasks.c.status == TaskStatus.PROCESSING,
                            video_tasks.c.lease_owner.is_(None),
                        ),
                        now,
                    ),
                    else_=video_tasks.c.next_attempt_at,
                ),
            )
        )


def _coalesced(task: Any, hint: RemoteResult, now: datetime) -> bool:
    """A progress callback that need not be written (see :func:`receive`)."""
    if task.callback_at is None:
        return False  # the first callback is always recorded: callbacks do reach us
    if min(hint.progress, tasks.MAX_RUNNING_PROGRESS) <= (task.progress or 0):
        return True
    since = (now - task.callback_at).total_seconds()
    return 0 <= since < PROGRESS_WRITE_SECONDS


async def _settle(rt: Context, batch_id: str) -> None:
    """Settle a batch whose tasks have all ended now, rather than at a worker's next round,
    and wake the workers (to send its webhook; to settle it if this could not). Settling is
    guarded (``settlement.settle_batch``): a worker settling the same batch at the same
    time posts nothing twice; with the archive on it waits for the videos to be stored."""
    try:
        async with rt.engine.begin() as conn:
            await settlement.settle_batch(
                conn,
                batch_id,
                utcnow(),
                webhook_max_attempts=rt.settings.webhook_max_attempts,
                links=rt.links,
            )
            await notify_work(conn)
        return
    except Exception:  # a worker settles it at its next round
        log.exception(
            "settlement after a callback failed",
            extra={"batch_id": batch_id, "action": "settle"},
        )
    async with rt.engine.begin() as conn:
        await notify_work(conn)


async def _confirm(rt: Context, task: Any, now: datetime) -> tuple[RemoteResult, Fence] | None:
    """Ask the provider what a final callback claims, holding the task's lease meanwhile.

    None when there is nothing to ask: the task ended, or a worker's poll or another
    callback (a duplicate) is asking right now and records the answer; and when the
    provider cannot answer, in which case a worker polls the task at once."""
    lease_until = now + timedelta(seconds=rt.settings.lease_seconds)
    async with single(rt.engine) as conn:
        fence = await tasks.claim_for_confirmation(conn, task.id, now=now, lease_until=lease_until)
    if fence is None:
        rt.metrics.callbacks.labels("already_confirming").inc()
        return None
    try:
        result = await rt.provider_for(task.provider).get_result(task.grsai_task_id)
    except ProviderError as exc:
        # Cannot confirm now: poll it at once instead of trusting the body.
        async with rt.engine.begin() as conn:
            await conn.execute(
                update(video_tasks)
                .where(
                    video_tasks.c.id == task.id,
                    video_tasks.c.status == TaskStatus.PROCESSING,
                    video_tasks.c.lease_owner == fence.owner,
                    video_tasks.c.lease_token == fence.token,
                )
                .values(
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=exc.message[:2000],
                )
            )
        rt.metrics.callbacks.labels("unconfirmed").inc()
        return None
    return result, fence
