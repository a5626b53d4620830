"""The operator's API under ``/api/admin``: batches with their money reconciled against the
ledger, tasks, billing, webhook deliveries, cancel / retry / resend, accounts and API keys.

Authentication: ``Authorization: Bearer <VIDBATCH_ADMIN_TOKEN>``, compared in constant
time. With no token configured every admin route answers 404 ``ADMIN_DISABLED`` (the admin
surface does not exist on that server); a missing or wrong token is 401
``ADMIN_UNAUTHORIZED``; a customer API key (``vb_...``, as bearer or ``x-api-key``) is 403
``ADMIN_FORBIDDEN``: customers' credentials never open the admin API. After 10 wrong tokens
from one client address within a minute, every attempt from it is 429 ``TOO_MANY_ATTEMPTS``
with ``Retry-After`` until the window passes (counted per process, together with the
dashboard's sign-in; see ``vidbatch.domain.throttle``).

Responses never contain a stored API key, its hash or a webhook secret; a new key and its
webhook secret are shown once, in the answer that creates them.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from vidbatch.api.app import client_address, runtime_of
from vidbatch.api.errors import ApiError, too_many_attempts
from vidbatch.api.schemas import ErrorResponse
from vidbatch.api.v1 import decode_cursor, encode_cursor
from vidbatch.domain.limits import MAX_CREDITS, MAX_RATE_LIMIT_PER_MIN
from vidbatch.domain.states import BatchStatus, TaskStatus
from vidbatch.services import account_admin, accounts, batches, reads, resend, retry, views
from vidbatch.timestamps import as_utc

log = logging.getLogger(__name__)

TAG = "admin"
ACTOR: account_admin.Actor = "admin api"  # who changed a key, in the log
ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]{1,64}$")]
if TYPE_CHECKING:
    BatchStatusName = str
    TaskStatusName = str
else:
    # The enums' values as Literal types: the same schema and 400 as a list written out.
    BatchStatusName = Literal[tuple(s.value for s in BatchStatus)]
    TaskStatusName = Literal[tuple(s.value for s in TaskStatus)]
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
    rt = runtime_of(request)
    client = client_address(request)
    wait = rt.admin_failures.retry_after(client, rt.clock.monotonic())
    if wait is not None:
        raise too_many_attempts(wait, "admin token")
    if presented and hmac.compare_digest(presented.encode(), expected.encode()):
        rt.admin_failures.succeeded(client)
        return
    api_key = (request.headers.get("x-api-key") or "").strip()
    if presented.startswith(accounts.KEY_PREFIX) or api_key.startswith(accounts.KEY_PREFIX):
        raise ApiError(403, "ADMIN_FORBIDDEN", "a customer API key cannot use the admin API")
    if presented:  # a guess; a request without a token guesses nothing
        rt.admin_failures.failed(client, rt.clock.monotonic())
        log.warning("admin token refused", extra={"action": "admin_auth", "client": client})
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
        409: "`BATCH_NOT_SETTLED`, `NOTHING_TO_RETRY`, `NO_WEBHOOK_EVENTS`, "
        "`CREDIT_LIMIT_EXCEEDED` or `KEY_REVOKED`",
        429: "`TOO_MANY_ATTEMPTS`: too many wrong admin tokens from this address; see "
        "`Retry-After`",
    }
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}


router = APIRouter(
    prefix="/api/admin",
    tags=[TAG],
    dependencies=[Depends(require_admin)],
    responses=_errors(401, 403, 404, 429),
)


# --- answers: the services' views with ``ok`` ----------------------------------------------


class Ok(BaseModel):
    """``ok: true`` first in every answer: listed last among a model's bases, it comes first."""

    ok: Literal[True] = True


class AdminBatchPage(Ok):
    batches: list[views.AdminBatch]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


# Ok between the bases puts ``ok`` after the batch's fields and before the detail's, where
# this answer has always had it (a docstring would show in the OpenAPI document).
class AdminBatchDetail(views.BatchDetail, Ok, views.AdminBatch):
    pass


class AdminTaskPage(Ok):
    batch_id: str
    tasks: list[views.AdminTask]
    total: int
    limit: int
    offset: int


class Billing(views.BatchBilling, Ok):
    pass


class DeliveryList(views.BatchWebhooks, Ok):
    pass


class Resent(Ok):
    delivery: views.Delivery


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: EventType | None = Field(
        None, description="default: the final event (completed/failed), else the latest"
    )


class Cancelled(Ok):
    batch_id: str
    status: str
    cancelled_items: int
    credits_refunded: int = Field(..., description="refunded so far in all")


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_moderation: bool = Field(
        False, description="also retry items refused by moderation (likely refused again)"
    )


class Retried(views.RetriedBatch, Ok):
    pass


class AccountList(Ok):
    accounts: list[views.Account]


class AdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credits: StrictInt = Field(
        ...,
        ge=-MAX_CREDITS,
        le=MAX_CREDITS,
        description="credits to add (+N) or remove (−N); not 0; a JSON integer",
    )
    reason: str = Field(..., min_length=1, max_length=500, description="kept in the ledger")
    idempotency_key: str | None = Field(
        None, max_length=128, description="makes a retried adjustment post once"
    )


class Adjusted(views.Adjustment, Ok):
    pass


class KeyList(Ok):
    keys: list[views.Key]


class KeyOut(Ok):
    key: views.Key


class NewKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("default", min_length=1, max_length=200)
    rate_limit_per_min: StrictInt | None = Field(
        None, gt=0, le=MAX_RATE_LIMIT_PER_MIN, description="default: the server's"
    )


class NewKeyOut(views.CreatedKey, Ok):
    pass


class RateLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_limit_per_min: StrictInt = Field(..., gt=0, le=MAX_RATE_LIMIT_PER_MIN)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: StrictInt = Field(
        86400,
        ge=0,
        le=30 * 86400,
        description="how long webhooks are also signed with the previous secret",
    )


class Rotated(views.RotatedSecret, Ok):
    pass


# --- batches -----------------------------------------------------------------------------


@router.get(
    "/batches",
    summary="Every account's batches, newest first, with ledger reconciliation",
    response_model=AdminBatchPage,
    responses=_errors(400),
)
async def list_batches(
    request: Request,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[BatchStatusName | None, Query()] = None,
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
) -> AdminBatchPage:
    async with runtime_of(request).engine.connect() as conn:
        page, nxt = await reads.list_batches(
            conn,
            account_id=account_id,
            status=status,
            created_from=as_utc(created_from) if created_from else None,
            created_to=as_utc(created_to) if created_to else None,
            limit=limit,
            cursor=decode_cursor(cursor) if cursor else None,
        )
    return AdminBatchPage(batches=page, next_cursor=encode_cursor(*nxt) if nxt else None)


@router.get(
    "/batches/{batch_id}",
    summary="One batch: figures, counts, webhook state",
    response_model=AdminBatchDetail,
)
async def get_batch(request: Request, batch_id: ID) -> AdminBatchDetail:
    async with runtime_of(request).engine.connect() as conn:
        return AdminBatchDetail(**dict(await reads.batch_detail(conn, batch_id)))


@router.get(
    "/batches/{batch_id}/tasks",
    summary="A page of a batch's tasks, in index order",
    response_model=AdminTaskPage,
    responses=_errors(400),
)
async def list_tasks(
    request: Request,
    batch_id: ID,
    status: Annotated[TaskStatusName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AdminTaskPage:
    rt = runtime_of(request)
    async with rt.engine.connect() as conn:
        tasks, total = await reads.list_tasks(
            conn,
            batch_id,
            status=status,
            limit=limit,
            offset=offset,
            links=rt.links,
            base_url=str(request.base_url),
        )
    return AdminTaskPage(batch_id=batch_id, tasks=tasks, total=total, limit=limit, offset=offset)


@router.get(
    "/batches/{batch_id}/billing",
    summary="A batch's ledger entries and totals",
    response_model=Billing,
)
async def get_billing(request: Request, batch_id: ID) -> Billing:
    async with runtime_of(request).engine.connect() as conn:
        return Billing(**dict(await reads.billing(conn, batch_id)))


@router.get(
    "/batches/{batch_id}/webhooks",
    summary="A batch's webhook events: attempts, errors, state",
    response_model=DeliveryList,
)
async def list_webhooks(
    request: Request,
    batch_id: ID,
    include_payload: Annotated[bool, Query(description="add each event's body")] = False,
) -> DeliveryList:
    async with runtime_of(request).engine.connect() as conn:
        hooks = await reads.batch_webhooks(conn, batch_id, include_payload=include_payload)
    return DeliveryList(**dict(hooks))


@router.post(
    "/batches/{batch_id}/webhooks/resend",
    summary="Send a batch's webhook event again",
    description="Re-arms one event (by default the final one — `batch.completed` or "
    "`batch.failed` — else the latest): attempts start again from zero and it is due now. "
    "It keeps its `webhook-id`, so a receiver that processed it already can tell.",
    response_model=Resent,
    responses=_errors(400, 409),
)
async def resend_webhook(request: Request, batch_id: ID, body: ResendIn | None = None) -> Resent:
    rt = runtime_of(request)
    delivery = await resend.resend_webhook(
        rt.engine,
        batch_id,
        event_type=body.event_type if body else None,
        max_attempts=rt.settings.webhook_max_attempts,
    )
    return Resent(delivery=delivery)


@router.post(
    "/batches/{batch_id}/cancel",
    summary="Cancel a batch",
    description="Items not yet submitted are cancelled and refunded at once; running ones "
    "finish and are charged only if they succeed. 400 `BATCH_ALREADY_ENDED` once settled.",
    response_model=Cancelled,
    responses=_errors(400),
)
async def cancel_batch(request: Request, batch_id: ID) -> Cancelled:
    rt = runtime_of(request)
    done = await batches.cancel_batch(
        rt.engine,
        batch_id,
        account_id=None,
        webhook_max_attempts=rt.settings.webhook_max_attempts,
        links=rt.links,
    )
    return Cancelled(
        batch_id=done.batch_id,
        status=done.status,
        cancelled_items=done.cancelled_items,
        credits_refunded=done.credits_refunded,
    )


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
async def retry_failed(request: Request, batch_id: ID, body: RetryIn | None = None) -> Retried:
    rt = runtime_of(request)
    retried = await retry.retry_failed(
        rt.engine,
        batch_id,
        include_moderation=bool(body and body.include_moderation),
        catalog=rt.settings.catalog,
        allow_private_webhooks=rt.settings.allow_private_webhooks,
        webhook_max_attempts=rt.settings.webhook_max_attempts,
    )
    return Retried(**dict(retried))


# --- accounts and keys -------------------------------------------------------------------


@router.get("/accounts", summary="Accounts with their credits", response_model=AccountList)
async def list_accounts(request: Request) -> AccountList:
    async with runtime_of(request).engine.connect() as conn:
        return AccountList(accounts=await reads.list_accounts(conn))


@router.post(
    "/accounts/{account_id}/adjust",
    summary="Correct an account's credits by hand",
    description="A ledger entry of type `adjustment` with its reason; available "
    "credits never go below zero (402), the balance never above 10^15 (409).",
    response_model=Adjusted,
    responses=_errors(400, 402, 409),
)
async def adjust_account(request: Request, account_id: ID, body: AdjustIn) -> Adjusted:
    done = await account_admin.adjust(
        runtime_of(request).engine,
        account_id,
        body.credits,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
    )
    return Adjusted(**dict(done))


@router.get(
    "/accounts/{account_id}/keys",
    summary="An account's API keys (never the keys)",
    response_model=KeyList,
)
async def list_keys(request: Request, account_id: ID) -> KeyList:
    async with runtime_of(request).engine.connect() as conn:
        return KeyList(keys=await reads.list_keys(conn, account_id))


@router.post(
    "/accounts/{account_id}/keys",
    summary="Create an API key",
    description="The key and its webhook signing secret are in this answer only.",
    response_model=NewKeyOut,
    responses=_errors(400),
)
async def create_key(request: Request, account_id: ID, body: NewKeyIn | None = None) -> NewKeyOut:
    rt = runtime_of(request)
    body = body or NewKeyIn()
    new = await account_admin.create_key(
        rt.engine,
        account_id,
        name=body.name,
        rate_limit_per_min=body.rate_limit_per_min or rt.settings.default_rate_limit_per_min,
        actor=ACTOR,
    )
    return NewKeyOut(**dict(new))


async def _set_key(request: Request, key_id: str, **change: Any) -> KeyOut:
    key = await account_admin.set_key_state(
        runtime_of(request).engine, key_id, actor=ACTOR, **change
    )
    return KeyOut(key=key)


@router.post(
    "/keys/{key_id}/activate",
    summary="Activate a deactivated API key",
    description="A revoked key is never activated again: 409 `KEY_REVOKED`.",
    response_model=KeyOut,
    responses=_errors(409),
)
async def activate_key(request: Request, key_id: ID) -> KeyOut:
    return await _set_key(request, key_id, active=True)


@router.post(
    "/keys/{key_id}/deactivate",
    summary="Deactivate an API key (reversible): its requests answer 403",
    response_model=KeyOut,
)
async def deactivate_key(request: Request, key_id: ID) -> KeyOut:
    return await _set_key(request, key_id, active=False)


@router.post(
    "/keys/{key_id}/revoke",
    summary="Revoke an API key for good: its requests answer 403, it cannot be activated",
    response_model=KeyOut,
)
async def revoke_key(request: Request, key_id: ID) -> KeyOut:
    key = await account_admin.revoke_key(runtime_of(request).engine, key_id, actor=ACTOR)
    return KeyOut(key=key)


@router.post(
    "/keys/{key_id}/rate-limit",
    summary="Set an API key's requests per minute",
    response_model=KeyOut,
    responses=_errors(400),
)
async def set_rate_limit(request: Request, key_id: ID, body: RateLimitIn) -> KeyOut:
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
) -> Rotated:
    overlap = body.overlap_seconds if body else RotateIn().overlap_seconds
    rotated = await account_admin.rotate_webhook_secret(
        runtime_of(request).engine, key_id, overlap_seconds=overlap, actor=ACTOR
    )
    return Rotated(**dict(rotated))
