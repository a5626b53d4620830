"""Typed answers of the vidbatch ``/api/v1`` (the published contract).

Every field the published contract names is here with its published type. vidbatch adds
fields over time; the models keep them (``model_extra``) instead of failing, so a newer server
never breaks an older client. Fields marked *added* are vidbatch's own and may be absent on
other servers, so they are optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

BatchStatus = Literal["pending", "running", "succeeded", "partial", "failed", "cancelled"]
ItemStatus = Literal["pending", "running", "succeeded", "failed"]
FailureType = Literal["model_error", "param_error", "timeout", "network", "unknown"]
LedgerType = Literal["reserve", "settle", "refund", "purchase", "bonus"]
ArchiveStatus = Literal["pending", "stored", "failed", "expired"]

#: A batch in one of these statuses has ended: every item has ended and it is settled.
ENDED_STATUSES: frozenset[str] = frozenset({"succeeded", "partial", "failed", "cancelled"})


class Model(BaseModel):
    """Every answer: unknown (added) fields are kept, never an error."""

    model_config = ConfigDict(extra="allow", frozen=True)


class CreatedBatch(Model):
    """``POST /api/v1/batches``."""

    batch_id: str
    request_id: str
    status: BatchStatus
    total_count: int
    cost_per_video: int
    required_credits: int
    available_credits: int
    #: True when this answer is the batch an earlier request with the same request id made
    #: (nothing new was created or charged).
    idempotent_replay: bool


class Batch(Model):
    """``GET /api/v1/batches/{id}``."""

    batch_id: str
    request_id: str | None
    status: BatchStatus
    total_count: int
    succeeded_count: int
    failed_count: int
    cost_per_video: int
    credits_reserved: int
    credits_settled: int
    credits_refunded: int
    created_at: datetime
    completed_at: datetime | None
    # added by vidbatch
    running_count: int | None = None
    pending_count: int | None = None
    cancelled_count: int | None = None

    @property
    def ended(self) -> bool:
        """True once the batch reached ``succeeded``, ``partial``, ``failed`` or ``cancelled``."""
        return self.status in ENDED_STATUSES

    @property
    def done_count(self) -> int:
        """Items that have ended (succeeded or failed)."""
        return self.succeeded_count + self.failed_count


class Item(Model):
    """One item of ``GET /api/v1/batches/{id}/items``."""

    item_id: str
    index: int
    status: ItemStatus
    prompt: str
    model: str
    video_url: str | None
    thumbnail_url: str | None
    error: str | None
    failure_type: FailureType | None
    metadata: dict[str, Any] | None
    created_at: datetime
    completed_at: datetime | None
    # added by vidbatch
    duration: int | None = None
    failure_reason: str | None = None
    # added by vidbatch's result archive (absent on servers without one)
    source_url: str | None = None
    archive_status: ArchiveStatus | None = None
    video_size_bytes: int | None = None
    #: lowercase hex SHA-256 of the video file, when the server knows it
    video_sha256: str | None = None
    video_duration_seconds: float | None = None
    video_width: int | None = None
    video_height: int | None = None


class ItemsPage(Model):
    items: list[Item]
    total: int
    limit: int
    offset: int


class BatchesPage(Model):
    """``GET /api/v1/batches`` (vidbatch's addition): newest first, cursor paged."""

    batches: list[Batch]
    next_cursor: str | None = None


class CancelResult(Model):
    """``POST /api/v1/batches/{id}/cancel``."""

    batch_id: str
    status: BatchStatus
    credits_refunded: int
    # added by vidbatch
    cancelled_items: int | None = None
    running_items: int | None = None


class Balance(Model):
    """``GET /api/v1/credits/balance``: ``total = available + reserved``."""

    available: int
    reserved: int
    total: int


class LedgerEntry(Model):
    """One entry of ``GET /api/v1/credits/ledger``. ``delta`` is signed as the customer reads
    it (reserve and settle negative, refund and purchase positive); ``balance_after`` is the
    *available* balance after it."""

    id: str
    type: LedgerType
    delta: int
    balance_after: int
    batch_id: str | None
    item_id: str | None
    description: str | None
    created_at: datetime


class ResultLine(Model):
    """One line of ``GET /api/v1/batches/{id}/results?format=jsonl``."""

    index: int
    item_id: str
    status: ItemStatus
    video_url: str | None = None
    thumbnail_url: str | None = None
    error: str | None = None
    failure_type: FailureType | None = None
    failure_reason: str | None = None
    metadata: dict[str, Any] | None = None
