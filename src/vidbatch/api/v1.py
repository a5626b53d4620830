"""The customer API under ``/api/v1``: create, list, read, cancel batches, read their items
and results, and read the account's credits. Same key and rate limit as the enterprise
endpoint; another account's batch answers 404 exactly like a missing one."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from vidbatch.api.app import runtime_of
from vidbatch.api.deps import Key, KeyedRoute, LimitedKey
from vidbatch.api.enterprise import CREATE_DESCRIPTION, CREATE_RESPONSES, accept_batch
from vidbatch.api.schemas import (
    BalanceOut,
    BatchListOut,
    BatchOut,
    BatchRequest,
    CancelledOut,
    CreatedBatchV1,
    ItemPageOut,
    LedgerPageOut,
    error_responses,
    request_body,
    success_headers,
)
from vidbatch.domain import public
from vidbatch.domain.public import PublicBatchStatus, PublicItemStatus, PublicLedgerType
from vidbatch.exceptions import FieldError, InvalidInput
from vidbatch.services import batches, credits, customer
from vidbatch.storage import Links
from vidbatch.timestamps import as_utc

router = APIRouter(prefix="/api/v1", route_class=KeyedRoute)

BATCHES = "v1 batches"
CREDITS = "v1 credits"
READ_ERRORS = error_responses(400, 401, 403, 429)
BATCH_ERRORS = error_responses(400, 401, 403, 404, 429)
OK: dict[int | str, dict[str, Any]] = {200: {"description": "OK", "headers": success_headers()}}

#: Rows read at a time when streaming a batch's results.
RESULTS_PAGE = 500
MAX_OFFSET = 1_000_000_000
ID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field} {message}", details=[FieldError(field=field, message=message)])


def encode_cursor(created_at: datetime, batch_id: str) -> str:
    raw = f"{created_at.isoformat()}|{batch_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) an opaque cursor stands for; InvalidInput when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, batch_id = raw.split("|", 1)
        at = datetime.fromisoformat(at_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid("cursor", "is not a cursor returned by this API") from None
    if not batch_id or "\x00" in batch_id:
        raise _invalid("cursor", "is not a cursor returned by this API")
    return _utc(at, "cursor"), batch_id


def _utc(value: datetime, field: str) -> datetime:
    try:
        return as_utc(value)
    except (OverflowError, ValueError):
        raise _invalid(field, "is out of range") from None


async def _batch(conn: Any, row: Any) -> dict[str, Any]:
    return customer.batch(row, await customer.summary(conn, row.id))


# --- batches -----------------------------------------------------------------------------


@router.post(
    "/batches",
    tags=[BATCHES],
    summary="Create a batch of videos",
    operation_id="create_batch",
    response_model=CreatedBatchV1,
    responses=CREATE_RESPONSES,
    openapi_extra=request_body(BatchRequest),
    description=CREATE_DESCRIPTION,
)
async def create_batch(request: Request, auth: Key) -> JSONResponse:
    return await accept_batch(request, auth, mode="v1")


@router.get(
    "/batches",
    tags=[BATCHES],
    summary="List your batches, newest first",
    response_model=BatchListOut,
    responses={**OK, **READ_ERRORS},
)
async def list_batches(
    request: Request,
    auth: LimitedKey,
    status: Annotated[
        PublicBatchStatus | None, Query(description="only batches in this status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page")
    ] = None,
) -> JSONResponse:
    after = decode_cursor(cursor) if cursor else None
    async with runtime_of(request).engine.connect() as conn:
        rows = await batches.list_batches(
            conn,
            account_id=auth.account_id,
            status=public.batch_statuses(status)[0] if status else None,
            limit=limit + 1,
            cursor=after,
        )
        views = [await _batch(conn, row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return JSONResponse({"ok": True, "batches": views, "limit": limit, "next_cursor": next_cursor})


@router.get(
    "/batches/{batch_id}",
    tags=[BATCHES],
    summary="A batch: status, counts and credits",
    response_model=BatchOut,
    responses={**OK, **BATCH_ERRORS},
)
async def get_batch(request: Request, auth: LimitedKey, batch_id: str) -> JSONResponse:
    async with runtime_of(request).engine.connect() as conn:
        row = await batches.get_batch_row(conn, batch_id, auth.account_id)
        view = await _batch(conn, row)
    return JSONResponse({"ok": True, **view})


@router.get(
    "/batches/{batch_id}/items",
    tags=[BATCHES],
    summary="A page of a batch's items, in index order",
    response_model=ItemPageOut,
    responses={**OK, **BATCH_ERRORS},
)
async def list_items(
    request: Request,
    auth: LimitedKey,
    batch_id: str,
    status: Annotated[
        PublicItemStatus | None, Query(description="only items in this status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JSONResponse:
    rt = runtime_of(request)
    async with rt.engine.connect() as conn:
        row = await batches.get_batch_row(conn, batch_id, auth.account_id)
        rows, total = await batches.list_items(
            conn,
            row.id,
            statuses=public.task_statuses(status) if status else None,
            limit=limit,
            offset=offset,
        )
    return JSONResponse(
        {
            "ok": True,
            "batch_id": row.id,
            "items": [customer.item_with_times(r, rt.links, str(request.base_url)) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@router.post(
    "/batches/{batch_id}/cancel",
    tags=[BATCHES],
    summary="Cancel what has not started and refund it",
    description="Items not yet submitted are cancelled and refunded at once; items already "
    "running finish and are charged only if they succeed. A batch that has already ended "
    "answers 400 `BATCH_ALREADY_ENDED`.",
    response_model=CancelledOut,
    responses={**OK, **BATCH_ERRORS},
)
async def cancel_batch(request: Request, auth: LimitedKey, batch_id: str) -> JSONResponse:
    rt = runtime_of(request)
    done = await batches.cancel_batch(
        rt.engine,
        batch_id,
        account_id=auth.account_id,
        webhook_max_attempts=rt.settings.webhook_max_attempts,
        links=rt.links,
    )
    return JSONResponse(
        {
            "ok": True,
            "batch_id": done.batch_id,
            "status": public.batch_status(done.status),
            "cancelled_items": done.cancelled_items,
            "running_items": done.running_items,
            "credits_refunded": done.credits_refunded,
        }
    )


RESULT_FIELDS = (
    "index",
    "item_id",
    "status",
    "video_url",
    "thumbnail_url",
    "error",
    "failure_type",
    "failure_reason",
    "metadata",
    "source_url",
    "archive_status",
    "video_size_bytes",
    "video_sha256",
    "video_duration_seconds",
    "video_width",
    "video_height",
)


def _result_line(row: Any, links: Links | None, base_url: str | None) -> dict[str, Any]:
    view = customer.item(row, links, base_url)
    return {name: view[name] for name in RESULT_FIELDS}


def _jsonl(rows: list[Any], links: Links | None, base_url: str | None) -> bytes:
    return "".join(
        json.dumps(_result_line(r, links, base_url), ensure_ascii=False, separators=(",", ":"))
        + "\n"
        for r in rows
    ).encode()


def _csv(rows: list[Any], links: Links | None, base_url: str | None, *, header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(RESULT_FIELDS)
    for row in rows:
        line = _result_line(row, links, base_url)
        meta = line["metadata"]
        line["metadata"] = (
            json.dumps(meta, ensure_ascii=False, separators=(",", ":")) if meta is not None else ""
        )
        writer.writerow(["" if line[f] is None else line[f] for f in RESULT_FIELDS])
    return out.getvalue().encode()


@router.get(
    "/batches/{batch_id}/results",
    tags=[BATCHES],
    summary="Every item's result, one line per item (JSON Lines or CSV)",
    description="Streamed in index order. Fields: `index, item_id, status, video_url, "
    "thumbnail_url, error, failure_type, failure_reason, metadata, source_url, "
    "archive_status, video_size_bytes, video_sha256, video_duration_seconds, video_width, "
    "video_height` (CSV: `metadata` as JSON text). `video_url` is the archived copy's "
    "link, signed afresh for each read, once the video is stored.",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One line per item",
            "headers": success_headers(),
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        },
        **BATCH_ERRORS,
    },
)
async def results(
    request: Request,
    auth: LimitedKey,
    batch_id: str,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
) -> StreamingResponse:
    rt = runtime_of(request)
    engine = rt.engine
    base_url = str(request.base_url)
    async with engine.connect() as conn:
        row = await batches.get_batch_row(conn, batch_id, auth.account_id)
    owned_id: str = row.id

    async def lines() -> AsyncIterator[bytes]:
        offset = 0
        while True:
            # A connection per page: a slow reader never holds one for the whole stream.
            async with engine.connect() as conn:
                page, _ = await batches.list_items(
                    conn, owned_id, limit=RESULTS_PAGE, offset=offset
                )
            if format == "csv":
                yield _csv(page, rt.links, base_url, header=offset == 0)
            else:
                yield _jsonl(page, rt.links, base_url)
            if len(page) < RESULTS_PAGE:
                return
            offset += RESULTS_PAGE

    if format == "csv":
        media_type = "text/csv; charset=utf-8"
        filename = f"batch-{owned_id}.csv"
    else:
        media_type = "application/x-ndjson"
        filename = f"batch-{owned_id}.jsonl"
    return StreamingResponse(
        lines(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- credits -----------------------------------------------------------------------------


@router.get(
    "/credits/balance",
    tags=[CREDITS],
    summary="Your credits: available, reserved and total",
    response_model=BalanceOut,
    responses={**OK, **READ_ERRORS},
)
async def balance(request: Request, auth: LimitedKey) -> JSONResponse:
    async with runtime_of(request).engine.connect() as conn:
        got = await credits.balance(conn, auth.account_id)
    return JSONResponse(
        {"ok": True, "available": got.available, "reserved": got.reserved, "total": got.total}
    )


@router.get(
    "/credits/ledger",
    tags=[CREDITS],
    summary="Your credit ledger entries, newest first",
    description="`from` is inclusive and `to` exclusive (ISO 8601; UTC when no offset is "
    "given). `delta` changes the balance, `frozen_delta` the reserved credits.",
    response_model=LedgerPageOut,
    responses={**OK, **READ_ERRORS},
)
async def ledger(
    request: Request,
    auth: LimitedKey,
    batch_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    type: Annotated[
        PublicLedgerType | None, Query(description="`bonus` includes admin adjustments")
    ] = None,
    created_from: Annotated[datetime | None, Query(alias="from")] = None,
    created_to: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JSONResponse:
    async with runtime_of(request).engine.connect() as conn:
        entries, total = await credits.list_ledger(
            conn,
            auth.account_id,
            batch_id=batch_id,
            type=type,
            created_from=_utc(created_from, "from") if created_from else None,
            created_to=_utc(created_to, "to") if created_to else None,
            limit=limit,
            offset=offset,
        )
    return JSONResponse(
        {"ok": True, "entries": entries, "total": total, "limit": limit, "offset": offset}
    )
