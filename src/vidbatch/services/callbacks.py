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

from sqlalchemy import case, select, update

from vidbatch.clock import utcnow
from vidbatch.db.notify import notify_work
from vidbatch.db.schema import video_tasks
from vidbatch.domain.callback_tokens import token_ok
from vidbatch.domain.provider import RemoteResult
from vidbatch.domain.states import TASK_LIVE, TASK_TERMINAL, TaskStatus
from vidbatch.exceptions import CallbackInvalid, NotFound, ProviderError
from vidbatch.services import tasks
from vidbatch.services.context import Context
from vidbatch.services.tasks import Fence

log = logging.getLogger(__name__)

NOT_FOUND = "callback target not found"


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
    async with rt.engine.connect() as conn:
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
            async with rt.engine.begin() as conn:
                # If the submit was recorded meanwhile, the task is due for a poll now;
                # otherwise recording it will see callback_at and do the same.
                await conn.execute(
                    update(video_tasks)
                    .where(
                        video_tasks.c.id == task_id,
                        video_tasks.c.status.in_(TASK_LIVE),
                    )
                    .values(
                        callback_at=now,
                        next_attempt_at=case(
                            (video_tasks.c.status == TaskStatus.PROCESSING, now),
                            else_=video_tasks.c.next_attempt_at,
                        ),
                    )
                )
        metrics.labels("early").inc()
        return Received(task.status, deferred=True)

    if hint.is_final and rt.settings.confirm_callbacks:
        confirmed = await _confirm(rt, task, now)
        if confirmed is None:
            return Received(TaskStatus.PROCESSING, deferred=True)
        result, fence = confirmed
    else:
        result, fence = hint, None
    async with rt.engine.begin() as conn:
        await conn.execute(
            update(video_tasks).where(video_tasks.c.id == task_id).values(callback_at=now)
        )
        applied = await tasks.apply_result(
            conn,
            task_id,
            result,
            now=now,
            require_https=rt.settings.require_https_video_url,
            fence=fence,
            # still running at the provider: back to the schedule the claim moved
            next_check_at=(task.next_attempt_at or now) if fence is not None else None,
            archive=rt.settings.result_store_spec.enabled,
        )
        # Wake the workers only when this was the batch's last live task: it can settle;
        # or when a video waits for the archive lane. (Waking them on every callback costs
        # each worker a round for nothing.)
        batch_done = (
            applied.applied
            and applied.outcome != "running"
            and not await tasks.batch_has_live_tasks(conn, task.batch_job_id)
        ) or (
            applied.applied
            and applied.outcome == TaskStatus.SUCCEEDED
            and rt.settings.result_store_spec.enabled
        )
        if batch_done:
            await notify_work(conn)
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
    return Received(
        applied.outcome if applied.applied else task.status, batch_done=bool(batch_done)
    )


async def _confirm(rt: Context, task: Any, now: datetime) -> tuple[RemoteResult, Fence] | None:
    """Ask the provider what a final callback claims, holding the task's lease meanwhile.

    None when there is nothing to ask: the task ended, or a worker's poll or another
    callback (a duplicate) is asking right now and records the answer; and when the
    provider cannot answer, in which case a worker polls the task at once."""
    lease_until = now + timedelta(seconds=rt.settings.lease_seconds)
    async with rt.engine.begin() as conn:
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
