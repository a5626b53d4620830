"""The customer API's shapes, for the OpenAPI document.

Request bodies are parsed and validated by :mod:`vidbatch.domain.validation` (so that every
problem is reported at once, with the item index and field); the request models here only
document them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- errors ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    index: int | None = Field(None, description="position of the item in `items`, if any")
    field: str = Field(..., examples=["prompt"])
    message: str = Field(..., examples=["is required and must be a non-empty string"])


class ErrorResponse(BaseModel):
    """Every error: a stable code for programs, a message for humans."""

    ok: Literal[False] = False
    error: str = Field(..., description="stable error code", examples=["INVALID_PAYLOAD"])
    message: str
    request_id: str | None = None
    details: list[ErrorDetail] | None = Field(
        None, description="per-field problems (400 INVALID_PAYLOAD / TOO_MANY_ITEMS)"
    )
    required: int | None = Field(None, description="402: credits the batch needs")
    available: int | None = Field(None, description="402: credits available")


_ERROR_TEXT = {
    400: "`INVALID_PAYLOAD` (bad JSON, no items, an invalid item: see `details`), "
    "`TOO_MANY_ITEMS`, or `BATCH_ALREADY_ENDED` (cancel)",
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
    aspect_ratio: Literal["9:16", "16:9"] | None = None
    duration: int | None = Field(
        None,
        description="Sora only: 10 or 15 seconds (default 10). Veo clips have a fixed length; "
        "a duration sent with a Veo model is ignored.",
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
    cost_per_video: int | None = Field(
        None, description="the price of one item, when every item costs the same"
    )
    required_credits: int = Field(..., description="credits frozen for this batch")
    available_credits: int = Field(..., description="credits left available after freezing")
    status: str = Field(..., examples=["queued"])
    mode: str = Field(..., examples=["enterprise"])
    request_id: str
    idempotent_replay: bool | None = Field(
        None, description="present (true) when this answers a repeat of an earlier request"
    )


# --- reading batches ---------------------------------------------------------------------


class BatchOut(BaseModel):
    ok: Literal[True] = True
    batch_id: str
    request_id: str
    status: Literal["queued", "processing", "completed", "partial", "failed", "cancelled"]
    total_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int
    pending_count: int
    cost_per_video: int | None
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


PublicItemStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


class ItemOut(BaseModel):
    item_id: str
    index: int
    status: PublicItemStatus
    prompt: str
    model: str | None
    video_url: str | None
    error: str | None
    failure_type: str | None
    metadata: dict[str, Any] | None
    created_at: str
    completed_at: str | None


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
    status: str = Field(..., examples=["cancelled"])
    cancelled_items: int = Field(..., description="items that had not started, now cancelled")
    credits_refunded: int = Field(..., description="credits refunded for this batch so far")


# --- credits -----------------------------------------------------------------------------


class BalanceOut(BaseModel):
    ok: Literal[True] = True
    available: int = Field(..., description="credits available for new batches")
    reserved: int = Field(..., description="credits frozen for unsettled batches")
    total: int = Field(..., description="credits owned (available + reserved)")


LedgerType = Literal["purchase", "bonus", "reserve", "settle", "refund", "adjustment"]


class LedgerEntryOut(BaseModel):
    id: int
    type: LedgerType
    delta: int = Field(..., description="change of the balance")
    frozen_delta: int = Field(..., description="change of the reserved credits")
    balance_after: int
    batch_id: str | None
    item_id: str | None
    description: str | None
    created_at: str


class LedgerPageOut(BaseModel):
    ok: Literal[True] = True
    entries: list[LedgerEntryOut]
    total: int
    limit: int
    offset: int
