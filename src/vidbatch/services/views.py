"""What the operator sees of batches, tasks, money, webhooks, accounts and keys: one typed
read model per thing, shared by the admin API, the dashboard and the admin commands, and
the functions that build each from its database row.

Views never hold a stored API key, its hash or a webhook secret; the one exception is
``CreatedKey``, the answer that creates a key.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from vidbatch.domain.archive import ArchiveStatus
from vidbatch.services.customer import archive_fields
from vidbatch.timestamps import iso

if TYPE_CHECKING:
    from vidbatch.storage import Links

#: Where the next page of batches starts: (created_at, batch_id) of the last one shown.
Cursor = tuple[datetime, str]

# --- money ---------------------------------------------------------------------------------


# A batch's credits: reserved, charged, refunded and what it cost (no docstring: it would
# become the schema's description in the admin API's OpenAPI document).
class Figures(BaseModel):
    reserved: int = Field(..., description="credits frozen at creation")
    charged: int = Field(..., description="credits spent on succeeded items")
    refunded: int = Field(..., description="credits returned (cancelled or failed items)")
    net: int = Field(..., description="what the batch cost its account (= charged)")

    @classmethod
    def of(cls, reserved: int = 0, charged: int = 0, refunded: int = 0) -> Figures:
        # What a batch costs its account is its charges: reservations are returned.
        return cls(reserved=reserved, charged=charged, refunded=refunded, net=charged)

    def same_as(self, other: Figures) -> bool:
        return self.model_dump() == other.model_dump()


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


class BatchBilling(BaseModel):
    """A batch's ledger entries with their totals, next to the batch's own figures."""

    batch_id: str
    account_id: str
    status: str
    settlement_status: str
    entries: list[LedgerEntry]
    totals: BillingTotals
    batch: BatchFigures = Field(..., description="the batch's own figures")
    reconciled: bool


# --- batches and tasks -----------------------------------------------------------------------


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


class BatchDetail(AdminBatch):
    """Everything about one batch except its task list."""

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
    video_url: str | None = Field(
        ..., description="the archived copy's URL once stored, else the provider's"
    )
    thumbnail_url: str | None = Field(..., description="first frame, JPEG; null until stored")
    source_url: str | None = Field(..., description="the provider's URL")
    archive_status: ArchiveStatus | None = Field(
        ..., description="pending, stored, failed (gave up), expired; null: not archived"
    )
    archive_error: str | None = Field(..., description="why the archive failed or is retried")
    archive_attempts: int
    video_size_bytes: int | None
    video_sha256: str | None
    video_duration_seconds: float | None
    video_width: int | None
    video_height: int | None
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


class RetriedBatch(BaseModel):
    """The child batch that retries a settled batch's failed items."""

    batch_id: str = Field(..., description="the new child batch")
    parent_batch_id: str
    total_count: int
    required_credits: int = Field(..., description="frozen for the child batch")
    available_credits: int
    retried_indices: list[int] = Field(..., description="the parent's item indexes retried")
    excluded_moderation: int = Field(..., description="failed items left out (moderation)")
    idempotent_replay: bool = Field(..., description="true: this child existed already")


# --- webhooks --------------------------------------------------------------------------------


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


class BatchWebhooks(BaseModel):
    """A batch's webhook state and its events in the order they happened."""

    batch_id: str
    webhook_status: str
    webhook_attempts: int
    webhook_last_error: str | None
    deliveries: list[Delivery]


# --- accounts and keys -----------------------------------------------------------------------


class Account(BaseModel):
    account_id: str
    name: str
    is_active: bool
    balance_credits: int
    frozen_credits: int
    available_credits: int
    created_at: str | None


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


class AccountKeys(BaseModel):
    """An account with its API keys."""

    account: Account
    keys: list[Key]


class CreatedKey(BaseModel):
    """A new key: its secret values are shown in this answer only."""

    key: Key
    api_key: str = Field(..., description="shown once: store it now")
    webhook_secret: str = Field(..., description="shown once: the webhooks' signing secret")


class RotatedSecret(BaseModel):
    key_id: str
    webhook_secret: str = Field(..., description="shown once: the new signing secret")
    previous_secret_valid_until: str | None


class AdjustEntry(BaseModel):
    id: int
    type: str
    delta: int
    balance_after: int
    description: str | None
    created_at: str | None


class Adjustment(BaseModel):
    """A manual correction: its ledger entry and the account's credits after it."""

    entry: AdjustEntry
    account: Account


# --- pages of the dashboard ---------------------------------------------------------------


class BatchListing(BaseModel):
    """A page of batches with each one's tasks by status, and every account."""

    batches: list[AdminBatch]
    next_cursor: Cursor | None
    task_counts: dict[str, dict[str, int]]
    accounts: list[Account]

    def account_name(self, account_id: str) -> str:
        return next((a.name for a in self.accounts if a.account_id == account_id), account_id)


class BatchReport(BaseModel):
    """Everything the operator sees of one batch on one page."""

    detail: BatchDetail
    tasks: list[AdminTask]
    total_tasks: int
    billing: BatchBilling
    deliveries: list[Delivery]
    account_name: str


# --- from rows -------------------------------------------------------------------------------


def batch_view(row: Any, ledger: Figures) -> AdminBatch:
    """One batch as the operator's list shows it, its figures next to the ledger's."""
    return AdminBatch(**_batch_fields(row, ledger))


def _batch_fields(row: Any, ledger: Figures) -> dict[str, Any]:
    own = Figures.of(row.frozen_credits, row.credits_spent, row.credits_refunded)
    return {
        "batch_id": row.id,
        "account_id": row.user_id,
        "key_id": row.key_id,
        "request_id": row.request_id,
        "source": row.source,
        "parent_batch_id": row.parent_batch_id,
        "status": row.status,
        "settlement_status": row.settlement_status,
        "total_count": row.total_count,
        "success_count": row.success_count,
        "failed_count": row.failed_count,
        "cancelled_count": row.cancelled_count,
        "cost_per_video": row.cost_per_video,
        "reserved": own.reserved,
        "charged": own.charged,
        "refunded": own.refunded,
        "net": own.net,
        # still frozen for the batch: what is neither charged nor refunded yet
        "held": own.reserved - own.charged - own.refunded if row.settled_at is None else 0,
        "ledger": ledger,
        "reconciled": ledger.same_as(own),
        "webhook_status": row.webhook_status,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
    }


def batch_detail(
    row: Any,
    ledger: Figures,
    *,
    task_counts: dict[str, int],
    failure_types: dict[str, int],
    child_batch_ids: list[str],
) -> BatchDetail:
    return BatchDetail(
        **_batch_fields(row, ledger),
        task_counts=task_counts,
        failure_types=failure_types,
        child_batch_ids=child_batch_ids,
        metadata=row.metadata,
        webhook_url=row.webhook_url,
        webhook_attempts=row.webhook_attempts,
        webhook_last_error=row.webhook_last_error,
        webhook_last_sent_at=iso(row.webhook_last_sent_at),
        cancel_requested_at=iso(row.cancel_requested_at),
        settled_at=iso(row.settled_at),
        updated_at=iso(row.updated_at),
    )


def task_view(row: Any, links: Links | None = None, base_url: str | None = None) -> AdminTask:
    return AdminTask(
        task_id=row.id,
        index=row.batch_index,
        status=row.status,
        model=row.model,
        prompt=row.prompt,
        cost_credits=row.cost_credits,
        grsai_task_id=row.grsai_task_id,
        **archive_fields(row, links, base_url),
        archive_error=row.archive_error,
        archive_attempts=row.archive_attempts,
        failure_type=row.failure_type,
        failure_reason=row.failure_reason,
        error=row.error_message,
        last_error=row.last_error,
        attempts=row.attempts,
        poll_count=row.poll_count,
        progress=row.progress,
        metadata=row.metadata,
        created_at=iso(row.created_at),
        submitted_at=iso(row.submitted_at),
        last_poll_at=iso(row.last_poll_at),
        completed_at=iso(row.completed_at),
    )


def ledger_entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        type=row.type,
        delta=row.delta,
        frozen_delta=row.frozen_delta,
        balance_after=row.balance_after,
        frozen_after=row.frozen_after,
        item_id=row.item_id,
        description=row.description,
        created_at=iso(row.created_at),
    )


def delivery_view(row: Any, *, include_payload: bool = False) -> Delivery:
    view = Delivery(
        delivery_id=row.id,
        event_id=row.event_id,
        batch_id=row.batch_id,
        event_type=row.event_type,
        url=row.url,
        state=(
            "delivered"
            if row.delivered_at
            else "failed"
            if row.failed_at
            else "retrying"
            if row.attempts
            else "pending"
        ),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        last_status=row.last_status,
        last_error=row.last_error,
        next_attempt_at=iso(row.next_attempt_at),
        delivered_at=iso(row.delivered_at),
        failed_at=iso(row.failed_at),
        created_at=iso(row.created_at),
    )
    if include_payload:
        view.payload = row.payload
    return view


def account_view(data: dict[str, Any]) -> Account:
    return Account(
        account_id=data["id"],
        name=data["name"],
        is_active=data["is_active"],
        balance_credits=data["balance_credits"],
        frozen_credits=data["frozen_credits"],
        available_credits=data["available_credits"],
        created_at=iso(data["created_at"]),
    )


def key_view(data: dict[str, Any]) -> Key:
    """A key without anything secret: never the key, its hash or a webhook secret."""
    return Key(
        key_id=data["id"],
        account_id=data["account_id"],
        name=data["name"],
        key_prefix=data["key_prefix"],
        is_active=data["is_active"],
        rate_limit_per_min=data["rate_limit_per_min"],
        webhook_secret_rotation_ends_at=iso(data.get("webhook_secret_previous_expires_at")),
        created_at=iso(data["created_at"]),
        revoked_at=iso(data.get("revoked_at")),
        last_seen_at=iso(data.get("last_seen_at")),
    )


def adjust_entry(entry: dict[str, Any]) -> AdjustEntry:
    return AdjustEntry(
        id=entry["id"],
        type=entry["type"],
        delta=entry["delta"],
        balance_after=entry["balance_after"],
        description=entry["description"],
        created_at=iso(entry["created_at"]),
    )
