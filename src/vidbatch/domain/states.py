"""The vocabulary of states, and the task and batch state machines — written once.

Task:  pending|queued → submitting → processing → succeeded|failed;  pending|queued → cancelled.
       submitting → pending (a transient error, retried later); submitting → failed (refused,
       or given up on). A task is refused only once a provider saw it, never while waiting.
Batch: queued → processing → completed|partial|failed|cancelled.
Terminal states never change again.

Every status stored in the database is a member of one of these enums: the schema's CHECK
lists, the API's ``Literal`` types and the dashboard's labels are derived from them, and the
conditional ``WHERE`` clauses that enforce a move name its states through :func:`sources`
(or check a given one with :func:`can_move`).
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A video task's status (``video_tasks.status``)."""

    PENDING = "pending"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    """A batch's status (``batch_jobs.status``), in the original's words."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SettlementStatus(StrEnum):
    """Whether a batch's frozen credits have been settled (``batch_jobs.settlement_status``)."""

    PENDING = "pending"
    FINALIZED = "finalized"
    REFUNDED = "refunded"


class WebhookStatus(StrEnum):
    """A batch's customer-webhook summary (``batch_jobs.webhook_status``)."""

    NONE = "none"
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    RETRYING = "retrying"


class LedgerType(StrEnum):
    """A credit ledger entry's type (``credit_ledger.type``)."""

    PURCHASE = "purchase"
    BONUS = "bonus"
    RESERVE = "reserve"
    SETTLE = "settle"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class FailureType(StrEnum):
    """Why a task failed, coarsely (``video_tasks.failure_type``): the original's five plus
    ``moderation``."""

    MODEL_ERROR = "model_error"
    PARAM_ERROR = "param_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    UNKNOWN = "unknown"
    MODERATION = "moderation"


TASK_WAITING = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED})
#: At the provider, or on its way there: what a fleet-wide cap counts.
TASK_RUNNING = frozenset({TaskStatus.SUBMITTING, TaskStatus.PROCESSING})
TASK_LIVE = TASK_WAITING | TASK_RUNNING
TASK_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})

BATCH_OPEN = frozenset({BatchStatus.QUEUED, BatchStatus.PROCESSING})
BATCH_TERMINAL = frozenset(BatchStatus) - BATCH_OPEN

_TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.SUBMITTING, TaskStatus.CANCELLED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.SUBMITTING, TaskStatus.CANCELLED}),
    TaskStatus.SUBMITTING: frozenset(
        {TaskStatus.PROCESSING, TaskStatus.PENDING, TaskStatus.FAILED}
    ),
    TaskStatus.PROCESSING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED}),
}


def can_move(task_from: str, task_to: str) -> bool:
    """True when a task may go from ``task_from`` to ``task_to``."""
    return task_to in _TASK_MOVES.get(task_from, frozenset())  # type: ignore[call-overload]


def sources(task_to: TaskStatus) -> frozenset[TaskStatus]:
    """The states a task may move to ``task_to`` from: what a conditional UPDATE's
    ``WHERE status IN (…)`` names, so the database enforces this machine."""
    return frozenset(s for s, targets in _TASK_MOVES.items() if task_to in targets)


def batch_final_status(
    succeeded: int, failed: int, cancelled: int, cancel_requested: bool
) -> BatchStatus:
    """The status a batch ends with, from the counts of its ended tasks."""
    if cancel_requested and cancelled > 0:
        return BatchStatus.CANCELLED
    if succeeded and not failed and not cancelled:
        return BatchStatus.COMPLETED
    if succeeded:
        return BatchStatus.PARTIAL
    return BatchStatus.FAILED
