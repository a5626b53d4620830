"""The operator's API under ``/api/admin``: batches with their money reconciled against the
ledger, tasks, billing, webhook deliveries, cancel / retry / resend, accounts and API keys.

Authentication: ``Authorization: Bearer <VIDBATCH_ADMIN_TOKEN>``, compared in constant
time. With no token configured every admin route answers 404 ``ADMIN_DISABLED`` (the admin
surface does not exist on that server); a missing or wrong token is 401
``ADMIN_UNAUTHORIZED``; a customer API key (``vb_...``, as bearer or ``x-api-key``) is 403
``ADMIN_FORBIDDEN``: customers' credentials never open the admin API.

Responses never contain a stored API key, its hash or a webhook secret; a new key and its
webhook secret are shown once, in the answer that creates them.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import ApiError
from vidbatch.api.schemas import ErrorResponse
from vidbatch.api.v1 import decode_cursor, encode_cursor
from vidbatch.services import accounts, batches
from vidbatch.services import admin as svc

TAG = "admin"
ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]{1,64}$")]
BatchStatus = Literal["queued", "processing", "completed", "partial", "failed", "cancelled"]
TaskStatus = Literal[
    "pending", "queued", "submitting", "processing", "succeeded", "failed", "cancelled"
]
EventType = Literal[
    "batch.created", "batch.running", "batch.completed", "batch.failed", "batch.refunded"
]

admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="`Authorization: Bearer <VIDBATCH_ADMIN_TOKEN>`. Customer API keys are refused.",
    auto_error=False,
)


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(admin_bearer)] = None,
) -> None:
    """Let the operator in; see the module docstring for the answers to everyone else."""
    expected = request.app.state.settings.admin_token
    if not expected:
        raise ApiError(
            404,
            "ADMIN_DISABLED",
            "the admin API is disabled on this server (VIDBATCH_ADMIN_TOKEN unset)",
        )
    presented = credentials.credentials.strip() if credentials else ""
    if presented and hmac.compare_digest(presented.encode(), expected.encode()):
        return
    api_key = (request.headers.get("x-api-key") or "").strip()
    if presented.startswith(accounts.KEY_PREFIX) or api_key.startswith(accounts.KEY_PREFIX):
        raise ApiError(403, "ADMIN_FORBIDDEN", "a customer API key cannot use the admin API")
    raise ApiError(
        401,
        "ADMIN_UNAUTHORIZED",
        "missing or wrong admin token (Authorization: Bearer <VIDBATCH_ADMIN_TOKEN>)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "`INVALID_PAYLOAD` (bad parameters or body) or `BATCH_ALREADY_ENDED`",
        401: "`ADMIN_UNAUTHORIZED`: missing or wrong admin token",
        402: "`INSUFFICIENT_CREDITS`: the account cannot pay for the retry",
        403: "`ADMIN_FORBIDDEN`: a customer API key was presented",
        404: "`ADMIN_DISABLED` (no admin token configured) or `NOT_FOUND`",
        409: "`BATCH_NOT_SETTLED`, `NOTHING_TO_RETRY` or `NO_WEBHOOK_EVENTS`",
    }
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}


router = APIRouter(
    prefix="/api/admin",
    tags=[TAG],
    dependencies=[Depends(require_admin)],
    responses=_errors(401, 403, 404),
)


# --- shapes ------------------------------------------------------------------------------


class Figures(BaseModel):
    reserved: int = Field(..., description="credits frozen at creation")
    charged: int = Field(..., description="credits spent on succeeded items")
    refunded: int = Field(..., description="credits returned (cancelled or failed items)")
    net: int = Field(..., description="what the batch cost its account (= charged)")


class AdminBatch(BaseModel):
    """A batch with its own figures and those its ledger entries add up to."""

    batch_id: str
    account_id: str
    key_id: str | None
    request_id: str
    source: str = Field(..., examples=["enterprise", "v1", "admin-retry"])
    parent_batch_id: str | None
    status: str
    settlement_status: str
    total_count: int
    success_count: int
    failed_count: int
    cancelled_count: int
    cost_per_video: int | None
    reserved: int
    charged: int
    refunded: int
    net: int = Field(..., description="= charged")
    held: int = Field(..., description="still frozen for the batch (0 once settled)")
    ledger: Figures = Field(..., description="the same figures from `credit_ledger`")
    reconciled: bool = Field(..., description="the batch's figures equal the ledger's")
    webhook_status: str
    created_at: str | None
    completed_at: str | None


class AdminBatchPage(BaseModel):
    ok: Literal[True] = True
    batches: list[AdminBatch]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class AdminBatchDetail(AdminBatch):
    ok: Literal[True] = True
    task_counts: dict[str, int] = Field(..., description="tasks by status")
    failure_types: dict[str, int] = Field(..., description="failed tasks by failure_type")
    child_batch_ids: list[str] = Field(..., description="batches retrying this one's items")
    metadata: dict[str, Any] | None
    webhook_url: str | None
    webhook_attempts: int
    webhook_last_error: str | None
    webhook_last_sent_at: str | None
    cancel_requested_at: str | None
    settled_at: str | None
    updated_at: str | None


class AdminTask(BaseModel):
    task_id: str
    index: int
    status: str
    model: str | None
    prompt: str
    cost_credits: int
    grsai_task_id: str | None
    video_url: str | None
    failure_type: str | None
    failure_reason: str | None
    error: str | None
    last_error: str | None
    attempts: int
    poll_count: int
    progress: int
    metadata: dict[str, Any] | None
    created_at: str | None
    submitted_at: str | None
    last_poll_at: str | None
    completed_at: str | None


class AdminTaskPage(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    tasks: list[AdminTask]
    total: int
    limit: int
    offset: int


class LedgerEntry(BaseModel):
    id: int
    type: str
    delta: int = Field(..., description="change to the account's balance")
    frozen_delta: int = Field(..., description="change to the account's frozen credits")
    balance_after: int
    frozen_after: int
    item_id: str | None
    description: str | None
    created_at: str | None


class BillingTotals(Figures):
    entries: int
    balance_delta: int = Field(..., description="Σ delta of the entries (= −charged)")
    frozen_delta: int = Field(..., description="Σ frozen_delta (0 once settled)")


class BatchFigures(Figures):
    held: int


class Billing(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    account_id: str
    status: str
    settlement_status: str
    entries: list[LedgerEntry]
    totals: BillingTotals
    batch: BatchFigures = Field(..., description="the batch's own figures")
    reconciled: bool


class Delivery(BaseModel):
    delivery_id: str
    event_id: str = Field(..., description="sent as `webhook-id`")
    batch_id: str
    event_type: str
    url: str
    state: Literal["pending", "retrying", "delivered", "failed"]
    attempts: int
    max_attempts: int
    last_status: int | None = Field(..., description="HTTP status of the last attempt")
    last_error: str | None = Field(..., description="why the last attempt failed")
    next_attempt_at: str | None
    delivered_at: str | None
    failed_at: str | None
    created_at: str | None
    payload: dict[str, Any] | None = Field(None, description="with `include_payload=true`")


class DeliveryList(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    webhook_status: str
    webhook_attempts: int
    webhook_last_error: str | None
    deliveries: list[Delivery]


class Resent(BaseModel):
    ok: Literal[True] = True
    delivery: Delivery


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: EventType | None = Field(
        None, description="default: the final event (completed/failed), else the latest"
    )


class Cancelled(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    status: str
    cancelled_items: int
    credits_refunded: int = Field(..., description="refunded so far in all")


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_moderation: bool = Field(
        False, description="also retry items refused by moderation (likely refused again)"
    )


class Retried(BaseModel):
    ok: Literal[True] = True
    batch_id: str = Field(..., description="the new child batch")
    parent_batch_id: str
    total_count: int
    required_credits: int = Field(..., description="frozen for the child batch")
    available_credits: int
    retried_indices: list[int] = Field(..., description="the parent's item indexes retried")
    excluded_moderation: int = Field(..., description="failed items left out (moderation)")
    idempotent_replay: bool = Field(..., description="true: this child existed already")


class Account(BaseModel):
    account_id: str
    name: str
    is_active: bool
    balance_credits: int
    frozen_credits: int
    available_credits: int
    created_at: str | None


class AccountList(BaseModel):
    ok: Literal[True] = True
    accounts: list[Account]


class AdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credits: int = Field(..., description="credits to add (+N) or remove (−N); not 0")
    reason: str = Field(..., min_length=1, max_length=500, description="kept in the ledger")
    idempotency_key: str | None = Field(
        None, max_length=128, description="makes a retried adjustment post once"
    )


class AdjustEntry(BaseModel):
    id: int
    type: str
    delta: int
    balance_after: int
    description: str | None
    created_at: str | None


class Adjusted(BaseModel):
    ok: Literal[True] = True
    entry: AdjustEntry
    account: Account


class Key(BaseModel):
    """An API key as shown after its creation: never the key, its hash or secrets."""

    key_id: str
    account_id: str
    name: str
    key_prefix: str = Field(..., description="the key's first characters")
    is_active: bool
    rate_limit_per_min: int
    webhook_secret_rotation_ends_at: str | None = Field(
        ..., description="until then webhooks are also signed with the previous secret"
    )
    created_at: str | None
    revoked_at: str | None
    last_seen_at: str | None


class KeyList(BaseModel):
    ok: Literal[True] = True
    keys: list[Key]


class KeyOut(BaseModel):
    ok: Literal[True] = True
    key: Key


class NewKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("default", min_length=1, max_length=200)
    rate_limit_per_min: int | None = Field(None, gt=0, description="default: the server's")


class NewKeyOut(BaseModel):
    ok: Literal[True] = True
    key: Key
    api_key: str = Field(..., description="shown once: store it now")
    webhook_secret: str = Field(..., description="shown once: the webhooks' signing secret")


class RateLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_limit_per_min: int = Field(..., gt=0, le=1_000_000)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: int = Field(
        86400,
        ge=0,
        le=30 * 86400,
        description="how long webhooks are also signed with the previous secret",
    )


class Rotated(BaseModel):
    ok: Literal[True] = True
    key_id: str
    webhook_secret: str = Field(..., description="shown once: the new signing secret")
    previous_secret_valid_until: str | None


# --- batches -----------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/batches",
    summary="Every account's batches, newest first, with ledger reconciliation",
    response_model=AdminBatchPage,
    responses=_errors(400),
)
async def list_batches(
    request: Request,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[BatchStatus | None, Query()] = None,
    created_from: Annotated[
        datetime | None,
        Query(alias="from", description="created at or after (ISO 8601; UTC if no zone)"),
    ] = None,
    created_to: Annotated[
        datetime | None, Query(alias="to", description="created before (ISO 8601; UTC if no zone)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page")
    ] = None,
) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        page, nxt = await svc.list_batches(
            conn,
            account_id=account_id,
            status=status,
            created_from=_utc(created_from),
            created_to=_utc(created_to),
            limit=limit,
            cursor=decode_cursor(cursor) if cursor else None,
        )
    return {"ok": True, "batches": page, "next_cursor": encode_cursor(*nxt) if nxt else None}


@router.get(
    "/batches/{batch_id}",
    summary="One batch: figures, counts, webhook state",
    response_model=AdminBatchDetail,
)
async def get_batch(request: Request, batch_id: ID) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        return {"ok": True, **await svc.batch_detail(conn, batch_id)}


@router.get(
    "/batches/{batch_id}/tasks",
    summary="A page of a batch's tasks, in index order",
    response_model=AdminTaskPage,
    responses=_errors(400),
)
async def list_tasks(
    request: Request,
    batch_id: ID,
    status: Annotated[TaskStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        tasks, total = await svc.list_tasks(
            conn, batch_id, status=status, limit=limit, offset=offset
        )
    return {
        "ok": True,
        "batch_id": batch_id,
        "tasks": tasks,
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "/batches/{batch_id}/billing",
    summary="A batch's ledger entries and totals",
    response_model=Billing,
)
async def get_billing(request: Request, batch_id: ID) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        return {"ok": True, **await svc.billing(conn, batch_id)}


@router.get(
    "/batches/{batch_id}/webhooks",
    summary="A batch's webhook events: attempts, errors, state",
    response_model=DeliveryList,
)
async def list_webhooks(
    request: Request,
    batch_id: ID,
    include_payload: Annotated[bool, Query(description="add each event's body")] = False,
) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        rows = await svc.list_deliveries(conn, batch_id, limit=100, include_payload=include_payload)
        batch = await batches.get_batch_row(conn, batch_id)
    return {
        "ok": True,
        "batch_id": batch_id,
        "webhook_status": batch.webhook_status,
        "webhook_attempts": batch.webhook_attempts,
        "webhook_last_error": batch.webhook_last_error,
        "deliveries": rows,
    }


@router.post(
    "/batches/{batch_id}/webhooks/resend",
    summary="Send a batch's webhook event again",
    description="Re-arms one event (by default the final one — `batch.completed` or "
    "`batch.failed` — else the latest): attempts start again from zero and it is due now. "
    "It keeps its `webhook-id`, so a receiver that processed it already can tell.",
    response_model=Resent,
    responses=_errors(400, 409),
)
async def resend_webhook(
    request: Request, batch_id: ID, body: ResendIn | None = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    delivery = await svc.resend_webhook(
        rt.engine,
        batch_id,
        event_type=body.event_type if body else None,
        max_attempts=rt.settings.webhook_max_attempts,
    )
    return {"ok": True, "delivery": delivery}


@router.post(
    "/batches/{batch_id}/cancel",
    summary="Cancel a batch",
    description="Items not yet submitted are cancelled and refunded at once; running ones "
    "finish and are charged only if they succeed. 400 `BATCH_ALREADY_ENDED` once settled.",
    response_model=Cancelled,
    responses=_errors(400),
)
async def cancel_batch(request: Request, batch_id: ID) -> dict[str, Any]:
    rt = runtime_of(request)
    done = await batches.cancel_batch(
        rt.engine, batch_id, account_id=None, webhook_max_attempts=rt.settings.webhook_max_attempts
    )
    return {
        "ok": True,
        "batch_id": done.batch_id,
        "status": done.status,
        "cancelled_items": done.cancelled_items,
        "credits_refunded": done.credits_refunded,
    }


@router.post(
    "/batches/{batch_id}/retry-failed",
    summary="Retry a settled batch's failed items as a new, separately charged batch",
    description="Creates a child batch (`source` `admin-retry`, `parent_batch_id` set) of "
    "the failed items — without those refused by moderation unless `include_moderation` — "
    "priced and reserved anew from the same account; the parent's figures do not change. "
    "Items keep their index, parameters and metadata. Asking again returns the same child. "
    "409 `BATCH_NOT_SETTLED` before the batch has ended, 409 `NOTHING_TO_RETRY` without "
    "failed items, 402 `INSUFFICIENT_CREDITS` when the account cannot pay.",
    response_model=Retried,
    responses=_errors(400, 402, 409),
)
async def retry_failed(
    request: Request, batch_id: ID, body: RetryIn | None = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    return await svc.retry_failed(
        rt.engine,
        batch_id,
        include_moderation=bool(body and body.include_moderation),
        catalog=rt.settings.catalog,
        allow_private_webhooks=rt.settings.allow_private_webhooks,
        webhook_max_attempts=rt.settings.webhook_max_attempts,
    )


# --- accounts and keys -------------------------------------------------------------------


@router.get("/accounts", summary="Accounts with their credits", response_model=AccountList)
async def list_accounts(request: Request) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        return {"ok": True, "accounts": await svc.list_accounts(conn)}


@router.post(
    "/accounts/{account_id}/adjust",
    summary="Correct an account's credits by hand",
    description="A ledger entry of type `adjustment` with its reason; available "
    "credits never go below zero (402).",
    response_model=Adjusted,
    responses=_errors(400, 402),
)
async def adjust_account(request: Request, account_id: ID, body: AdjustIn) -> dict[str, Any]:
    return await svc.adjust(
        runtime_of(request).engine,
        account_id,
        body.credits,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
    )


@router.get(
    "/accounts/{account_id}/keys",
    summary="An account's API keys (never the keys)",
    response_model=KeyList,
)
async def list_keys(request: Request, account_id: ID) -> dict[str, Any]:
    async with runtime_of(request).engine.connect() as conn:
        return {"ok": True, "keys": await svc.list_keys(conn, account_id)}


@router.post(
    "/accounts/{account_id}/keys",
    summary="Create an API key",
    description="The key and its webhook signing secret are in this answer only.",
    response_model=NewKeyOut,
    responses=_errors(400),
)
async def create_key(
    request: Request, account_id: ID, body: NewKeyIn | None = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    body = body or NewKeyIn()
    new = await accounts.create_key(
        rt.engine,
        account_id,
        name=body.name,
        rate_limit_per_min=body.rate_limit_per_min or rt.settings.default_rate_limit_per_min,
    )
    async with rt.engine.connect() as conn:
        key = await svc.get_key(conn, new.key_id)
    return {"ok": True, "key": key, "api_key": new.api_key, "webhook_secret": new.webhook_secret}


async def _set_key(request: Request, key_id: str, **change: Any) -> dict[str, Any]:
    await accounts.set_key_state(runtime_of(request).engine, key_id, **change)
    async with runtime_of(request).engine.connect() as conn:
        return {"ok": True, "key": await svc.get_key(conn, key_id)}


@router.post("/keys/{key_id}/activate", summary="Activate an API key", response_model=KeyOut)
async def activate_key(request: Request, key_id: ID) -> dict[str, Any]:
    return await _set_key(request, key_id, active=True)


@router.post(
    "/keys/{key_id}/deactivate",
    summary="Deactivate (revoke) an API key: its requests answer 403",
    response_model=KeyOut,
)
async def deactivate_key(request: Request, key_id: ID) -> dict[str, Any]:
    return await _set_key(request, key_id, active=False)


@router.post(
    "/keys/{key_id}/rate-limit",
    summary="Set an API key's requests per minute",
    response_model=KeyOut,
    responses=_errors(400),
)
async def set_rate_limit(request: Request, key_id: ID, body: RateLimitIn) -> dict[str, Any]:
    return await _set_key(request, key_id, rate_limit_per_min=body.rate_limit_per_min)


@router.post(
    "/keys/{key_id}/rotate-webhook-secret",
    summary="Give an API key a new webhook signing secret",
    description="The new secret is in this answer only. For `overlap_seconds` (default one "
    "day) webhooks carry a second `webhook-signature` entry made with the previous secret, "
    "so the receiver can switch without missing an event.",
    response_model=Rotated,
    responses=_errors(400),
)
async def rotate_webhook_secret(
    request: Request, key_id: ID, body: RotateIn | None = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    overlap = body.overlap_seconds if body else RotateIn().overlap_seconds
    secret = await accounts.rotate_webhook_secret(rt.engine, key_id, overlap_seconds=overlap)
    async with rt.engine.connect() as conn:
        key = await svc.get_key(conn, key_id)
    return {
        "ok": True,
        "key_id": key_id,
        "webhook_secret": secret,
        "previous_secret_valid_until": key["webhook_secret_rotation_ends_at"],
    }
