"""Per-key request limits: one counter row per key and minute, taken by one conditional
upsert, so a burst of concurrent requests cannot exceed the limit (the original's
check-then-insert could).

The upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < limit RETURNING count``)
answers with the new count when the request is admitted and with no row when the minute's
budget is spent. It works on SQLite (3.35+) and PostgreSQL alike.

Each key has two budgets a minute, counted apart: ``write`` (creates and cancels, the key's
``rate_limit_per_min``) and ``read`` (every GET, ``VIDBATCH_READ_RATE_LIMIT``), so a client
polling its batches never gets a 429 on its next create.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.portable import insert_on_conflict
from vidbatch.db.schema import rate_limit_counters
from vidbatch.services import accounts

#: The two budgets of a key.
WRITE = "write"
READ = "read"


@dataclass(frozen=True)
class RateState:
    """Where a key stands in the current minute."""

    allowed: bool
    limit: int
    remaining: int
    #: Epoch seconds at which the current minute's budget is renewed.
    reset_at: int
    #: Whole seconds until then (at least 1).
    retry_after: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


def minute_bucket(now: datetime) -> int:
    return int(now.timestamp()) // 60


def _state(allowed: bool, limit: int, count: int, now: datetime) -> RateState:
    reset_at = (minute_bucket(now) + 1) * 60
    return RateState(
        allowed=allowed,
        limit=limit,
        remaining=max(limit - count, 0),
        reset_at=reset_at,
        retry_after=max(1, math.ceil(reset_at - now.timestamp())),
    )


def _upsert(conn: AsyncConnection, key_id: str, scope: str, bucket: int, limit: int) -> Any:
    stmt = insert_on_conflict(conn, rate_limit_counters).values(
        key_id=key_id, scope=scope, minute_bucket=bucket, count=1
    )
    counters = rate_limit_counters.c
    return stmt.on_conflict_do_update(
        index_elements=[counters.key_id, counters.scope, counters.minute_bucket],
        set_={"count": rate_limit_counters.c.count + 1},
        where=rate_limit_counters.c.count < limit,
    ).returning(rate_limit_counters.c.count)


async def consume(
    conn: AsyncConnection, key_id: str, limit: int, *, now: datetime, scope: str = WRITE
) -> tuple[RateState, bool]:
    """Count one request of ``key_id`` against ``limit`` for this minute in ``scope``.

    Returns the state and whether this was the key's first request of the minute.
    """
    bucket = minute_bucket(now)
    upsert = _upsert(conn, key_id, scope, bucket, limit)
    count = (await conn.execute(upsert)).scalar_one_or_none()
    if count is None:
        return _state(False, limit, limit, now), False
    if count == 1:
        # A new minute for this key: drop its older counters while we hold the row anyway.
        await conn.execute(
            delete(rate_limit_counters).where(
                rate_limit_counters.c.key_id == key_id,
                rate_limit_counters.c.scope == scope,
                rate_limit_counters.c.minute_bucket < bucket,
            )
        )
    return _state(True, limit, int(count), now), count == 1


async def admit(
    engine: AsyncEngine,
    key_id: str,
    limit: int,
    *,
    now: datetime | None = None,
    scope: str = WRITE,
) -> RateState:
    """Count one request in its own short transaction; see :func:`consume`.

    The key's ``last_seen_at`` is refreshed with the first request of each minute, so a
    busy key costs at most one extra write a minute.
    """
    now = now or utcnow()
    async with engine.begin() as conn:
        state, first_of_minute = await consume(conn, key_id, limit, now=now, scope=scope)
        if first_of_minute:
            await accounts.touch_key(conn, key_id)
    return state


async def peek(
    engine: AsyncEngine,
    key_id: str,
    limit: int,
    *,
    now: datetime | None = None,
    scope: str = WRITE,
) -> RateState:
    """The state for this minute without counting a request (for replays)."""
    now = now or utcnow()
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                select(rate_limit_counters.c.count).where(
                    rate_limit_counters.c.key_id == key_id,
                    rate_limit_counters.c.scope == scope,
                    rate_limit_counters.c.minute_bucket == minute_bucket(now),
                )
            )
        ).scalar_one_or_none()
    used = int(count or 0)
    return _state(used < limit, limit, used, now)
