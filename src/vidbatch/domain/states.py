"""Task and batch state machines: which states exist and which moves are allowed.

Task:  pending|queued → submitting → processing → succeeded|failed;  pending|queued → cancelled.
       submitting → pending (a transient error, retried later).
Batch: queued → processing → completed|partial|failed|cancelled.
Terminal states never change again.
"""

from __future__ import annotations

TASK_WAITING = frozenset({"pending", "queued"})
TASK_LIVE = frozenset({"pending", "queued", "submitting", "processing"})
TASK_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

BATCH_OPEN = frozenset({"queued", "processing"})
BATCH_TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})

_TASK_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"submitting", "cancelled", "failed"}),
    "queued": frozenset({"submitting", "cancelled", "failed"}),
    "submitting": frozenset({"processing", "pending", "failed"}),
    "processing": frozenset({"succeeded", "failed"}),
}

#: What customers see of a task's status on the /api/v1 items endpoint.
PUBLIC_ITEM_STATUS = {
    "pending": "pending",
    "queued": "pending",
    "submitting": "running",
    "processing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


def can_move(task_from: str, task_to: str) -> bool:
    """True when a task may go from ``task_from`` to ``task_to``."""
    return task_to in _TASK_MOVES.get(task_from, frozenset())


def batch_final_status(succeeded: int, failed: int, cancelled: int, cancel_requested: bool) -> str:
    """The status a batch ends with, from the counts of its ended tasks."""
    if cancel_requested and cancelled > 0:
        return "cancelled"
    if succeeded and not failed and not cancelled:
        return "completed"
    if succeeded:
        return "partial"
    return "failed"
