"""The customer API's shapes, for the OpenAPI document.

Request bodies are parsed and validated by :mod:`vidbatch.domain.validation` (so that every
problem is reported at once, with the item index and field); the request models here only
document them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.public import (
    PublicBatchStatus,
    PublicFailureType,
    PublicItemStatus,
    PublicLedgerType,
)
from vidbatch.domain.states import BatchStatus

# --- errors ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    index: int | None = Field(None, description="position of the item in `items`, if any")
    field: str = Field(..., examples=["prompt"])
    message: str = Field(..., examples=["is required and must be a non-empty string"])


class ErrorDetails(BaseModel):
    """Every problem with the input, at once."""

    items: list[ErrorDetail] = Field(..., description="problems of items (`index` is set)")
    fields: list[ErrorDetail] = Field(..., description="problems of the body's own fields")


class ErrorResponse(BaseModel):
    """Every error: a stable code for programs, a message for humans."""

    ok: Literal[False] = False
    error: str = Field(..., description="stable error code", examples=["INVALID_PAYLOAD"])
    message: str
    request_id: str | None = None
    details: ErrorDetails | None = Field(
        None,
        description="invalid input (400 `INVALID_PAYLOAD`, `TOO_MANY_ITEMS`, "
        "`INVALID_REQUEST_ID`): every problem",
    )
    required: int | None = Field(None, description="402: credits the batch needs")
    available: int | None = Field(None, description="402: credits available")


_ERROR_TEXT = {
    400: "`INVALID_PAYLOAD` (bad JSON, no items, an invalid item: see `details`), "
    "`TOO_MANY_ITEMS`, `INVALID_REQUEST_ID` (a request id over 128 characters or with a "
    "control character), or `BATCH_ALREADY_ENDED` (cancel)",
    401: "`MISSING_API_KEY`: no `x-api-key` or `Authorization: Bearer` header",
    402: "`INSUFFICIENT_CREDITS`, with `required` and `available`; nothing was written",
    403: "`INVALID_API_KEY`: unknown, revoked or inactive key",
    404: "`NOT_FOUND`: no such batch for this key's account",
    409: "`IDEMPOTENCY_CONFLICT_NO_BATCH`: the same request id is still being processed",
    413: "`PAYLOAD_TOO_LARGE`: the body is over the server's limit",
    422: "`IDEMPOTENCY_KEY_REUSED`: this request id was used with a different body",
    429: "`RATE_LIMIT_EXCEEDED`: too many requests this minute; see `Retry-After`",
}

_RATE_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "requests allowed per minute for this key",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "requests left in the current minute",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "epoch seconds when the minute's budget renews",
        "schema": {"type": "integer"},
    },
    "x-request-id": {
        "description": "the request id (yours, or generated)",
        "schema": {"type": "string"},
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _ERROR_TEXT[status]}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "seconds until the next minute",
                    "schema": {"type": "integer"},
                },
                **_RATE_HEADERS,
            }
        out[status] = entry
    return out


def success_headers() -> dict[str, Any]:
    return dict(_RATE_HEADERS)


# --- creating a batch --------------------------------------------------------------------


class ItemMeta(BaseModel):
    """Veo frames and references (for Veo models)."""

    model_config = ConfigDict(extra="forbid")

    firstFrameUrl: str | None = Field(None, description="http(s) URL of the first frame")
    lastFrameUrl: str | None = Field(
        None, description="http(s) URL of the last frame; needs `firstFrameUrl`"
    )
    urls: list[str] | None = Field(None, max_length=3, description="up to 3 reference URLs")


class BatchItemIn(BaseModel):
    """One video to generate. Unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(..., min_length=1, max_length=4000)
    model: str = Field(
        "sora-2",
        description="`sora-2`, `veo-flash` or `veo-pro` (or an operator-added model)",
    )
    aspect_ratio: Literal["9:16", "16:9"] | None = Field(
        None, description="default: `16:9` on `/api/v1`, the provider's on the others"
    )
    duration: Literal[5, 10, 15] | None = Field(
        None,
        description="Sora only: 10 or 15 seconds (default 10; `5`, the published default, is "
        "made and priced as 10). Veo clips have a fixed length; a duration sent with a Veo "
        "model is ignored.",
    )
    reference_url: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL of a reference image (Veo: used when `meta` has none)",
    )
    meta: ItemMeta | None = None
    metadata: dict[str, Any] | None = Field(
        None, description="any object up to 4 KB as JSON, echoed back with the item"
    )


class BatchRequest(BaseModel):
    """A batch of videos. Unknown fields are ignored (as the original system did)."""

    model_config = ConfigDict(extra="allow")

    items: list[BatchItemIn] = Field(..., min_length=1)
    webhook_url: str | None = Field(
        None, description="https URL on a public host; receives the batch's signed events"
    )
    request_id: str | None = Field(
        None,
        max_length=128,
        description="idempotency key, used when no request-id header is sent: the same id "
        "with the same body returns the first batch; with another body it is refused (422)",
    )
    metadata: dict[str, Any] | None = Field(
        None, description="any object up to 4 KB as JSON, echoed back with the batch"
    )


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, usable in ``openapi_extra``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result


EXAMPLE_BODY = {
    "items": [
        {
            "prompt": "A cinematic video of a city",
            "model": "sora-2",
            "aspect_ratio": "9:16",
            "duration": 10,
        },
        {
            "prompt": "An anime style video",
            "model": "veo-flash",
            "aspect_ratio": "16:9",
            "meta": {"firstFrameUrl": "https://example.com/first.jpg"},
        },
    ],
    "webhook_url": "https://example.com/hooks/vidbatch",
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route parses itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(model), "example": EXAMPLE_BODY}
            },
        }
    }


class CreatedBatch(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    total_count: int
    cost_per_video: int = Field(
        ..., description="the price of one item; for a batch mixing prices, the highest"
    )
    required_credits: int = Field(..., description="credits frozen for this batch")
    available_credits: int = Field(..., description="credits left available after freezing")
    status: BatchStatus = Field(..., examples=["queued"])
    mode: str = Field(..., examples=["enterprise"])
    request_id: str
    idempotent_replay: bool = Field(
        ..., description="true when this answers a repeat of an earlier request"
    )


class CreatedBatchV1(CreatedBatch):
    status: PublicBatchStatus = Field(..., examples=["pending"])  # type: ignore[assignment]


# --- reading batches ---------------------------------------------------------------------


class BatchOut(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    request_id: str
    status: PublicBatchStatus = Field(
        ...,
        description="`pending` (not started), `running`, then once every item has ended "
        "`succeeded` (all), `partial`, `failed` (none) or `cancelled`",
    )
    total_count: int
    succeeded_count: int
    failed_count: int = Field(..., description="failed items, cancelled ones included")
    running_count: int
    pending_count: int
    cancelled_count: int = Field(..., description="items cancelled before they started")
    cost_per_video: int = Field(..., description="for a batch mixing prices, the highest")
    credits_reserved: int
    credits_settled: int
    credits_refunded: int
    settlement_status: str
    webhook_status: str
    metadata: dict[str, Any] | None
    parent_batch_id: str | None
    created_at: str
    completed_at: str | None


class BatchListOut(BaseModel):
    ok: Literal[True] = True
    batches: list[BatchOut]
    limit: int
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next (older) page; null on the last page"
    )


class ItemOut(BaseModel):
    item_id: str
    index: int
    status: PublicItemStatus = Field(
        ...,
        description="an item cancelled before it started is `failed` (`failure_reason` "
        "`cancelled`)",
    )
    prompt: str
    model: str
    duration: int | None = Field(..., description="seconds generated (Sora); null for Veo")
    video_url: str | None = Field(
        ...,
        description="the archived copy (a link signed afresh at each read) once "
        "`archive_status` is `stored`, else the provider's URL",
    )
    thumbnail_url: str | None = Field(
        ..., description="a JPEG of the first frame; null until one is stored"
    )
    error: str | None
    failure_type: PublicFailureType | None
    failure_reason: str | None = Field(
        ..., description="vidbatch's finer reason: `moderation`, `cancelled`, `timeout`, …"
    )
    metadata: dict[str, Any] | None
    created_at: str
    completed_at: str | None
    source_url: str | None = Field(
        None, description="the provider's URL (it expires about 2 hours after the video)"
    )
    archive_status: ArchiveStatus | None = Field(
        None,
        description="`pending`, `stored`, `failed` (gave up: the provider's URL is kept, "
        "the item is still charged) or `expired` (deleted after the retention period); "
        "null when no result store is configured or the item did not succeed",
    )
    video_size_bytes: int | None = None
    video_sha256: str | None = Field(None, description="SHA-256 of the video, lowercase hex")
    video_duration_seconds: float | None = None
    video_width: int | None = None
    video_height: int | None = None


class ItemPageOut(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class CancelledOut(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    status: PublicBatchStatus = Field(
        ..., description="`cancelled` when nothing was left running, else still `running`"
    )
    cancelled_items: int = Field(..., description="items that had not started, now cancelled")
    running_items: int = Field(
        ..., description="items already at the provider: they finish, charged if they succeed"
    )
    credits_refunded: int = Field(..., description="credits refunded for this batch so far")


# --- credits -----------------------------------------------------------------------------


class BalanceOut(BaseModel):
    ok: Literal[True] = True
    available: int = Field(..., description="credits available for new batches")
    reserved: int = Field(..., description="credits frozen for unsettled batches")
    total: int = Field(..., description="credits owned (available + reserved)")


class LedgerEntryOut(BaseModel):
    id: str
    type: PublicLedgerType = Field(..., description="admin adjustments are `bonus`")
    delta: int = Field(
        ...,
        description="the entry's amount: reserve and settle negative, refund and purchase positive",
    )
    balance_after: int = Field(..., description="available credits after the entry")
    batch_id: str | None
    item_id: str | None
    description: str | None
    created_at: str
    entry_type: str = Field(..., description="vidbatch's own type (`adjustment`, …)")
    balance_delta: int = Field(..., description="change of the credits owned")
    reserved_delta: int = Field(..., description="change of the reserved credits")
    total_after: int = Field(..., description="credits owned after the entry")
    reserved_after: int = Field(..., description="credits reserved after the entry")


class LedgerPageOut(BaseModel):
    ok: Literal[True] = True
    entries: list[LedgerEntryOut]
    total: int
    limit: int
    offset: int
