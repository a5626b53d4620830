"""The provider's callback: ``POST /api/video/callback?task_id=…&token=…``.

The token is an HMAC of the task id: a missing or wrong token and an unknown task get the
same 404 and change nothing. The body is a hint, not the truth: a final state is confirmed
with the provider before it is recorded (``VIDBATCH_CONFIRM_CALLBACKS``, on by default).
Processing is idempotent and order-insensitive; terminal states absorb.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request
from sqlalchemy import case, select, update

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import ApiError
from vidbatch.clock import utcnow
from vidbatch.db.notify import notify_work
from vidbatch.db.schema import video_tasks
from vidbatch.domain.states import TASK_TERMINAL
from vidbatch.exceptions import CallbackInvalid, ProviderError
from vidbatch.services import tasks
from vidbatch.worker.tokens import token_ok

log = logging.getLogger(__name__)
router = APIRouter(tags=["provider"])

NOT_FOUND = "callback target not found"


@router.post(
    "/api/video/callback",
    summary="Provider callback for one task (authenticated by its token)",
    responses={400: {"description": "INVALID_CALLBACK"}, 404: {"description": "NOT_FOUND"}},
)
async def provider_callback(
    request: Request,
    task_id: str = Query(default="", max_length=64),
    token: str = Query(default="", max_length=128),
) -> dict[str, object]:
    rt = runtime_of(request)
    metrics = rt.metrics.callbacks
    if not token_ok(rt.callback_key, task_id, token):
        metrics.labels("unauthorized").inc()
        raise ApiError(404, "NOT_FOUND", NOT_FOUND)
    async with rt.engine.connect() as conn:
        task = (await conn.execute(select(video_tasks).where(video_tasks.c.id == task_id))).first()
    if task is None:
        metrics.labels("unknown_task").inc()
        raise ApiError(404, "NOT_FOUND", NOT_FOUND)
    raw = await request.body()
    try:
        hint = rt.provider_for(task.provider).parse_callback(raw)
    except CallbackInvalid as exc:
        metrics.labels("invalid").inc()
        raise ApiError(400, "INVALID_CALLBACK", exc.message) from None
    if task.grsai_task_id and hint.remote_id and hint.remote_id != task.grsai_task_id:
        metrics.labels("mismatch").inc()
        raise ApiError(400, "INVALID_CALLBACK", "the callback is for another remote task")
    now = utcnow()
    answer: dict[str, object] = {"success": True, "task_id": task_id}

    if task.status in TASK_TERMINAL:
        metrics.labels("ignored_terminal").inc()
        return {**answer, "status": task.status, "ignored": True}
    if task.status != "processing" or not task.grsai_task_id:
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
                        video_tasks.c.status.in_(("pending", "queued", "submitting", "processing")),
                    )
                    .values(
                        callback_at=now,
                        next_attempt_at=case(
                            (video_tasks.c.status == "processing", now),
                            else_=video_tasks.c.next_attempt_at,
                        ),
                    )
                )
        metrics.labels("early").inc()
        return {**answer, "status": task.status, "deferred": True}

    result = hint
    if hint.is_final and rt.settings.confirm_callbacks:
        try:
            result = await rt.provider_for(task.provider).get_result(task.grsai_task_id)
        except ProviderError as exc:
            # Cannot confirm now: poll it at once instead of trusting the body.
            async with rt.engine.begin() as conn:
                await conn.execute(
                    update(video_tasks)
                    .where(video_tasks.c.id == task_id, video_tasks.c.status == "processing")
                    .values(callback_at=now, next_attempt_at=now, last_error=exc.message[:2000])
                )
            metrics.labels("unconfirmed").inc()
            return {**answer, "status": "processing", "deferred": True}
    async with rt.engine.begin() as conn:
        await conn.execute(
            update(video_tasks).where(video_tasks.c.id == task_id).values(callback_at=now)
        )
        applied = await tasks.apply_result(
            conn, task_id, result, now=now, require_https=rt.settings.require_https_video_url
        )
        # Wake the workers only when this was the batch's last live task: it can settle.
        # (Waking them on every callback costs each worker a round for nothing.)
        batch_done = (
            applied.applied
            and applied.outcome != "running"
            and not await tasks.batch_has_live_tasks(conn, task.batch_job_id)
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
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and batch_done:
        worker.wake()
    return {**answer, "status": applied.outcome if applied.applied else task.status}
