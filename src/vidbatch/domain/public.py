"""The published ``/api/v1`` vocabulary, and the one mapping from vidbatch's own words to it.

The original system published an OpenAPI document, a Node client and a webhook specification
for ``/api/v1``; customers wrote code against them. ``/api/v1`` and customer webhooks speak
those words exactly; ``/api/enterprise/*``, the admin API, the dashboard and the database keep
vidbatch's (the original code's) words. Everything that translates goes through this module.
"""

from __future__ import annotations

from enum import StrEnum

from vidbatch.domain.states import BatchStatus, FailureType, LedgerType, TaskStatus


class PublicBatchStatus(StrEnum):
    """A batch's status as published: a client waits for one of the four ended ones."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PublicItemStatus(StrEnum):
    """An item's status as published."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PublicFailureType(StrEnum):
    """An item's ``failure_type`` as published (vidbatch's finer reason is ``failure_reason``)."""

    MODEL_ERROR = "model_error"
    PARAM_ERROR = "param_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    UNKNOWN = "unknown"


class PublicLedgerType(StrEnum):
    """A ledger entry's ``type`` as published; admin adjustments are ``bonus``."""

    RESERVE = "reserve"
    SETTLE = "settle"
    REFUND = "refund"
    PURCHASE = "purchase"
    BONUS = "bonus"


PUBLIC_BATCH_ENDED = frozenset(
    {
        PublicBatchStatus.SUCCEEDED,
        PublicBatchStatus.PARTIAL,
        PublicBatchStatus.FAILED,
        PublicBatchStatus.CANCELLED,
    }
)

_BATCH: dict[BatchStatus, PublicBatchStatus] = {
    BatchStatus.QUEUED: PublicBatchStatus.PENDING,
    BatchStatus.PROCESSING: PublicBatchStatus.RUNNING,
    BatchStatus.COMPLETED: PublicBatchStatus.SUCCEEDED,
    BatchStatus.PARTIAL: PublicBatchStatus.PARTIAL,
    BatchStatus.FAILED: PublicBatchStatus.FAILED,
    BatchStatus.CANCELLED: PublicBatchStatus.CANCELLED,
}

_ITEM: dict[TaskStatus, PublicItemStatus] = {
    TaskStatus.PENDING: PublicItemStatus.PENDING,
    TaskStatus.QUEUED: PublicItemStatus.PENDING,
    TaskStatus.SUBMITTING: PublicItemStatus.RUNNING,
    TaskStatus.PROCESSING: PublicItemStatus.RUNNING,
    TaskStatus.SUCCEEDED: PublicItemStatus.SUCCEEDED,
    TaskStatus.FAILED: PublicItemStatus.FAILED,
    # Cancelled before it started: failed, failure_type unknown, failure_reason cancelled.
    TaskStatus.CANCELLED: PublicItemStatus.FAILED,
}

_FAILURE: dict[FailureType, PublicFailureType] = {
    FailureType.MODEL_ERROR: PublicFailureType.MODEL_ERROR,
    FailureType.PARAM_ERROR: PublicFailureType.PARAM_ERROR,
    FailureType.TIMEOUT: PublicFailureType.TIMEOUT,
    FailureType.NETWORK: PublicFailureType.NETWORK,
    FailureType.UNKNOWN: PublicFailureType.UNKNOWN,
    # The provider's model refused the content: a model error, as the original reported it.
    FailureType.MODERATION: PublicFailureType.MODEL_ERROR,
}

_LEDGER: dict[LedgerType, PublicLedgerType] = {
    LedgerType.RESERVE: PublicLedgerType.RESERVE,
    LedgerType.SETTLE: PublicLedgerType.SETTLE,
    LedgerType.REFUND: PublicLedgerType.REFUND,
    LedgerType.PURCHASE: PublicLedgerType.PURCHASE,
    LedgerType.BONUS: PublicLedgerType.BONUS,
    LedgerType.ADJUSTMENT: PublicLedgerType.BONUS,
}


def batch_status(status: str) -> PublicBatchStatus:
    """The published status of a batch in vidbatch's ``status``."""
    return _BATCH[BatchStatus(status)]


def item_status(status: str) -> PublicItemStatus:
    """The published status of a task in vidbatch's ``status``."""
    return _ITEM[TaskStatus(status)]


def task_statuses(public: PublicItemStatus) -> tuple[TaskStatus, ...]:
    """Every task status shown as ``public`` (what an item filter selects)."""
    return tuple(s for s, p in _ITEM.items() if p == public)


def batch_statuses(public: PublicBatchStatus) -> tuple[BatchStatus, ...]:
    """Every batch status shown as ``public`` (what a batch filter selects)."""
    return tuple(s for s, p in _BATCH.items() if p == public)


def ledger_types(kind: PublicLedgerType) -> tuple[LedgerType, ...]:
    """Every ledger type shown as ``kind`` (what a ledger filter selects)."""
    return tuple(t for t, p in _LEDGER.items() if p == kind)


def failure(
    status: str, failure_type: str | None, reason: str | None
) -> tuple[str | None, str | None]:
    """An item's published ``(failure_type, failure_reason)``.

    ``failure_type`` is one of the published five (``None`` unless the item failed);
    ``failure_reason`` is vidbatch's finer word: ``moderation``, ``cancelled``, ``timeout``,
    ``ambiguous_submit``, the provider's own reason, …
    """
    if status == TaskStatus.CANCELLED:
        return PublicFailureType.UNKNOWN, "cancelled"
    if status != TaskStatus.FAILED:
        return None, None
    kind = FailureType(failure_type) if failure_type else FailureType.UNKNOWN
    if kind is FailureType.MODERATION:
        return _FAILURE[kind], str(kind)
    return _FAILURE[kind], reason or str(kind)


def ledger_type(kind: str) -> PublicLedgerType:
    """The published type of a ledger entry of vidbatch's ``type``."""
    return _LEDGER[LedgerType(kind)]


def ledger_delta(kind: str, delta: int, frozen_delta: int) -> int:
    """An entry's signed amount as the customer reads it: a reserve and a settle are
    negative, a refund and a purchase positive (``reserved = settled + refunded``).

    vidbatch books a reserve as frozen credits (balance unchanged), a settle as balance and
    frozen both going down, a refund as frozen going down.
    """
    if kind in (LedgerType.RESERVE, LedgerType.REFUND):
        return -frozen_delta
    return delta
