"""Batches: the list with its filters, one batch with its tasks, billing and webhooks, its
live progress, and the actions on it (cancel, retry failed items, resend the webhook)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from vidbatch.api.app import runtime_of
from vidbatch.api.v1 import decode_cursor, encode_cursor
from vidbatch.domain.states import TaskStatus, sources
from vidbatch.exceptions import InvalidInput, NotFound, VidbatchError
from vidbatch.services import batches, reads, resend, retry
from vidbatch.services.batches import Cancelled
from vidbatch.services.views import BatchDetail
from vidbatch.web.render import BATCH_STATUSES, TASK_STATUSES, progress, redirect, render
from vidbatch.web.routing import ID, page_router
from vidbatch.web.session import Checked, Signed, SignInRequired, signed_in

log = logging.getLogger(__name__)

TASKS_PER_PAGE = 25
BATCHES_PER_PAGE = 50

router = page_router()


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: not a date (YYYY-MM-DD)") from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@router.get("/batches")
async def batch_list(
    request: Request,
    operator: Signed,
    account: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    created_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    created_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    if status and status not in BATCH_STATUSES:
        raise InvalidInput(f"status: one of {', '.join(BATCH_STATUSES)}")
    first, last = _day(created_from, "from"), _day(created_to, "to")
    async with runtime_of(request).engine.connect() as conn:
        listing = await reads.batch_listing(
            conn,
            account_id=account or None,
            status=status or None,
            created_from=_midnight(first) if first else None,
            created_to=_midnight(last) + timedelta(days=1) if last else None,
            limit=BATCHES_PER_PAGE,
            cursor=decode_cursor(cursor) if cursor else None,
        )
    filters = {
        "account": account or "",
        "status": status or "",
        "from": created_from or "",
        "to": created_to or "",
    }
    next_url = None
    if listing.next_cursor:
        next_url = "/admin/batches?" + urlencode(
            {
                **{k: v for k, v in filters.items() if v},
                "cursor": encode_cursor(*listing.next_cursor),
            }
        )
    return render(
        request,
        "batches.html",
        {
            "batches": [
                {
                    **b.model_dump(),
                    "progress": progress(listing.task_counts.get(b.batch_id, {}), b.total_count),
                    "account_name": listing.account_name(b.account_id),
                }
                for b in listing.batches
            ],
            "accounts": listing.accounts,
            "filters": filters,
            "statuses": BATCH_STATUSES,
            "next_url": next_url,
            "paged": bool(cursor),
        },
        operator=operator,
    )


def _progress_json(detail: BatchDetail) -> dict[str, Any]:
    return {
        "batch_id": detail.batch_id,
        "status": detail.status,
        "settled": detail.settled_at is not None,
        "progress": progress(detail.task_counts, detail.total_count),
        "credits": {
            "reserved": detail.reserved,
            "charged": detail.charged,
            "refunded": detail.refunded,
            "held": detail.held,
        },
        "webhook_status": detail.webhook_status,
    }


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request,
    operator: Signed,
    batch_id: ID,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    if status and status not in TASK_STATUSES:
        raise InvalidInput(f"status: one of {', '.join(TASK_STATUSES)}")
    rt = runtime_of(request)
    async with rt.engine.connect() as conn:
        report = await reads.batch_report(
            conn,
            batch_id,
            task_status=status or None,
            limit=TASKS_PER_PAGE,
            offset=(page - 1) * TASKS_PER_PAGE,
            links=rt.links,
            base_url=str(request.base_url),
        )
    detail = report.detail
    pages = max(1, -(-report.total_tasks // TASKS_PER_PAGE))

    def page_url(n: int) -> str:
        query = {"page": n, **({"status": status} if status else {})}
        return f"/admin/batches/{batch_id}?{urlencode(query)}#tasks"

    return render(
        request,
        "batch.html",
        {
            "b": detail,
            "live": _progress_json(detail),
            "tasks": report.tasks,
            "total": report.total_tasks,
            "page": page,
            "pages": pages,
            "task_status": status or "",
            "statuses": TASK_STATUSES,
            "prev_url": page_url(page - 1) if page > 1 else None,
            "next_url": page_url(page + 1) if page < pages else None,
            "billing": report.billing,
            "deliveries": report.deliveries,
            "account_name": report.account_name,
            "can_cancel": can_cancel(detail.settled_at, detail.task_counts),
            "can_retry": detail.settled_at is not None
            and detail.task_counts.get(TaskStatus.FAILED),
            "can_resend": bool(report.deliveries),
        },
        operator=operator,
    )


@router.get("/batches/{batch_id}/progress")
async def batch_progress(request: Request, batch_id: ID) -> Response:
    """The live part of the batch page, as JSON (401 once the session has ended)."""
    try:
        await signed_in(request)
    except SignInRequired:
        return JSONResponse({"signed_in": False}, status_code=401)
    try:
        async with runtime_of(request).engine.connect() as conn:
            detail = await reads.batch_detail(conn, batch_id)
    except NotFound:
        return JSONResponse({"error": "NOT_FOUND"}, status_code=404)
    return JSONResponse(_progress_json(detail))


@dataclass(frozen=True)
class BatchAction:
    title: str
    text: str
    button: str
    danger: bool = False


BATCH_ACTIONS = {
    "cancel": BatchAction(
        "Cancel this batch?",
        "Items not yet submitted are cancelled and their credits refunded at once; items "
        "already running finish and are charged only if they succeed.",
        "Cancel the batch",
        danger=True,
    ),
    "retry-failed": BatchAction(
        "Retry the failed items?",
        "The failed items become a new batch of the same account, priced and reserved anew "
        "(charged separately). This batch's figures do not change.",
        "Retry failed items",
    ),
    "resend-webhook": BatchAction(
        "Resend the webhook?",
        "The batch's final event (or its latest) is sent again now, with a fresh count of "
        "attempts and its original webhook-id.",
        "Resend webhook",
    ),
}


def can_cancel(settled_at: Any, task_counts: Mapping[str, int]) -> bool:
    """Cancel is offered only while some item has not reached the provider: once every
    item runs there, a cancel would change nothing."""
    waiting = sources(TaskStatus.CANCELLED)
    return settled_at is None and any(task_counts.get(s, 0) for s in waiting)


def cancel_message(done: Cancelled) -> str:
    """What a cancel did, in the operator's words."""
    if done.cancelled_items:
        now = (
            f"{done.cancelled_items} item(s) cancelled and {done.refunded_now} credits refunded now"
        )
    else:
        now = "No item was waiting: nothing cancelled or refunded now"
    if done.running_items:
        return (
            f"{now}; {done.running_items} item(s) still running at the provider finish and "
            "are charged only if they succeed."
        )
    return f"{now}; nothing is left running: the batch has ended ({done.status})."


def _action(name: str) -> BatchAction:
    if name not in BATCH_ACTIONS:
        raise NotFound(f"no action {name!r}")
    return BATCH_ACTIONS[name]


@router.get("/batches/{batch_id}/{action}")
async def confirm_batch_action(
    request: Request,
    operator: Signed,
    batch_id: ID,
    action: Annotated[str, Path(max_length=20)],
) -> Response:
    what = _action(action)
    async with runtime_of(request).engine.connect() as conn:
        detail = await reads.batch_detail(conn, batch_id)
    return render(
        request,
        "confirm.html",
        {
            "title": what.title,
            "text": what.text,
            "button": what.button,
            "danger": what.danger,
            "action_url": f"/admin/batches/{batch_id}/{action}",
            "back_url": f"/admin/batches/{batch_id}",
            "hidden": {},
            "with_moderation_choice": action == "retry-failed",
            "facts": [
                ("Batch", batch_id),
                ("Status", detail.status),
                ("Items", str(detail.total_count)),
                ("Failed items", str(detail.task_counts.get(TaskStatus.FAILED, 0))),
            ],
        },
        operator=operator,
    )


@router.post("/batches/{batch_id}/{action}")
async def batch_action(
    request: Request,
    operator: Checked,
    batch_id: ID,
    action: Annotated[str, Path(max_length=20)],
    include_moderation: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    _action(action)
    rt = runtime_of(request)
    back = f"/admin/batches/{batch_id}"
    webhook_attempts = rt.settings.webhook_max_attempts
    try:
        if action == "cancel":
            done = await batches.cancel_batch(
                rt.engine,
                batch_id,
                account_id=None,
                webhook_max_attempts=webhook_attempts,
                links=rt.links,
            )
            text = cancel_message(done)
        elif action == "retry-failed":
            retried = await retry.retry_failed(
                rt.engine,
                batch_id,
                include_moderation=include_moderation == "yes",
                catalog=rt.settings.catalog,
                allow_private_webhooks=rt.settings.allow_private_webhooks,
                webhook_max_attempts=webhook_attempts,
            )
            again = " (it existed already)" if retried.idempotent_replay else ""
            return redirect(
                request,
                f"/admin/batches/{retried.batch_id}",
                flash=(
                    "ok",
                    f"Retry batch {retried.batch_id} created{again}: "
                    f"{retried.total_count} item(s), {retried.required_credits} credits "
                    f"reserved; {retried.excluded_moderation} left out (moderation).",
                ),
            )
        else:
            delivery = await resend.resend_webhook(
                rt.engine, batch_id, max_attempts=webhook_attempts
            )
            text = f"Webhook event {delivery.event_type} will be sent again now."
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    log.info("dashboard action", extra={"action": f"dashboard_{action}", "batch_id": batch_id})
    return redirect(request, back, flash=("ok", text))
