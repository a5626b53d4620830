"""Recording customer webhook attempts, and what they come to for their batch.

One attempt's outcome is written in its own transaction, fenced on the lease (owner, and
the attempt count read at claim time): a worker whose lease was taken over writes nothing.
A 2xx marks the event delivered; anything else counts an attempt and schedules the next
one (:mod:`vidbatch.domain.webhook_retry`) or, at ``max_attempts``, marks it failed. The batch's
columns change in the same transaction: ``webhook_attempts`` counts every attempt made for
any of its events, ``webhook_last_sent_at`` is the latest attempt's time,
``webhook_last_error`` the latest failure (``"<event>: <reason>"``, cleared once every
event is delivered), and ``webhook_status`` sums up its events (see
:func:`refresh_batch_status`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import batch_jobs, webhook_deliveries
from vidbatch.domain.states import WebhookStatus
from vidbatch.domain.webhook_retry import next_delay

wd = webhook_deliveries


class Attempted(Protocol):
    """The claimed event an attempt was made for (as read when it was claimed)."""

    @property
    def id(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


async def record(
    conn: AsyncConnection,
    d: Attempted,
    outcome: Outcome,
    *,
    owner: str,
    now: datetime,
    rng: random.Random,
) -> str:
    """Write one attempt's outcome, fenced on the lease; returns ``delivered``, ``retry``,
    ``failed`` (no attempts left) or ``lost`` (the lease was taken: nothing written)."""
    attempts = d.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status": outcome.status,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if outcome.ok:
        result = "delivered"
        values.update(delivered_at=now, next_attempt_at=None, last_error=None)
    elif attempts >= d.max_attempts:
        result = "failed"
        values.update(failed_at=now, next_attempt_at=None, last_error=outcome.error)
    else:
        result = "retry"
        delay = next_delay(attempts, rng, outcome.retry_after)
        values.update(next_attempt_at=now + timedelta(seconds=delay), last_error=outcome.error)
    written = await conn.execute(
        update(wd)
        .where(
            wd.c.id == d.id,
            wd.c.lease_owner == owner,
            wd.c.attempts == d.attempts,
            wd.c.delivered_at.is_(None),
            wd.c.failed_at.is_(None),
        )
        .values(**values)
    )
    if written.rowcount != 1:
        return "lost"
    batch_values: dict[str, Any] = {
        "webhook_attempts": batch_jobs.c.webhook_attempts + 1,
        "webhook_last_sent_at": now,
    }
    if not outcome.ok:
        batch_values["webhook_last_error"] = f"{d.event_type}: {outcome.error}"
    # Taking the batch row's lock first: a concurrent record for another event of the
    # same batch commits before the status below is read (read committed).
    await conn.execute(
        update(batch_jobs).where(batch_jobs.c.id == d.batch_id).values(**batch_values)
    )
    await refresh_batch_status(conn, d.batch_id)
    return result


async def refresh_batch_status(conn: AsyncConnection, batch_id: str) -> WebhookStatus:
    """Set the batch's ``webhook_status`` from its events: ``retrying`` while one waits for
    another attempt, ``pending`` while one waits for its first, else ``failed`` if one ran
    out of attempts, else ``sent`` (every event delivered); ``none`` without events."""
    row = (
        await conn.execute(
            select(
                func.count(),
                func.sum(
                    case(((wd.c.next_attempt_at.is_not(None)) & (wd.c.attempts > 0), 1), else_=0)
                ),
                func.sum(case((wd.c.next_attempt_at.is_not(None), 1), else_=0)),
                func.sum(case((wd.c.failed_at.is_not(None), 1), else_=0)),
            ).where(wd.c.batch_id == batch_id)
        )
    ).one()
    total, retrying, waiting, failed = (int(v or 0) for v in row)
    if not total:
        status = WebhookStatus.NONE
    elif retrying:
        status = WebhookStatus.RETRYING
    elif waiting:
        status = WebhookStatus.PENDING
    elif failed:
        status = WebhookStatus.FAILED
    else:
        status = WebhookStatus.SENT
    values: dict[str, Any] = {"webhook_status": status}
    if status == WebhookStatus.SENT:
        values["webhook_last_error"] = None
    await conn.execute(update(batch_jobs).where(batch_jobs.c.id == batch_id).values(**values))
    return status
