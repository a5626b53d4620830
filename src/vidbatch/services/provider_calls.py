"""Provider calls of every process, kept in the database per minute: each worker adds what
it counted about once a second (a ``--once`` round at its end), and the dashboard reads the
fleet's totals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.db.portable import insert_on_conflict
from vidbatch.db.schema import provider_calls


def minute_of(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


async def record(engine: AsyncEngine, counts: dict[tuple[str, str], int], now: datetime) -> None:
    """Add ``counts`` (by call and outcome) to the minute of ``now``."""
    if not counts:
        return
    minute = minute_of(now)
    async with engine.begin() as conn:
        for (call, outcome), n in sorted(counts.items()):
            stmt = insert_on_conflict(conn, provider_calls).values(
                minute=minute, call=call, outcome=outcome, count=n
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["minute", "call", "outcome"],
                    set_={"count": provider_calls.c.count + stmt.excluded.count},
                )
            )


async def totals(conn: AsyncConnection, *, since: datetime) -> dict[str, dict[str, int]]:
    """Calls since ``since`` (whole minutes), by call then outcome, across every process."""
    rows = await conn.execute(
        select(provider_calls.c.call, provider_calls.c.outcome, func.sum(provider_calls.c.count))
        .where(provider_calls.c.minute >= minute_of(since))
        .group_by(provider_calls.c.call, provider_calls.c.outcome)
    )
    out: dict[str, dict[str, int]] = {}
    for call, outcome, n in rows:
        out.setdefault(call, {})[outcome] = int(n)
    return out


async def last_answer_at(conn: AsyncConnection) -> datetime | None:
    """The latest minute in which some process got an answer from the provider (a submit
    accepted or refused, or a poll with a usable answer)."""
    answered = provider_calls.c.outcome.not_in(("transient", "ambiguous", "not_found"))
    value = (await conn.execute(select(func.max(provider_calls.c.minute)).where(answered))).scalar()
    return value if isinstance(value, datetime) else None
