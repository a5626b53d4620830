"""Claiming due rows as a work queue: the one place that knows how each database lets
several claimers take rows without two of them taking the same one.

On PostgreSQL the candidates come from a ``MATERIALIZED`` CTE with ``FOR UPDATE SKIP
LOCKED`` (so concurrent claimers skip each other's rows and the planner cannot claim more
than the limit); on SQLite every transaction is ``BEGIN IMMEDIATE``, which serialises
claimers, and the CTE is a plain one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncConnection


def due_ids(conn: AsyncConnection, query: Select[Any]) -> Select[Any]:
    """The ids ``query`` selects (it must select an ``id`` column), locked for the claiming
    UPDATE that uses them as ``... WHERE id IN (due_ids(...))``."""
    cte = query.with_for_update(skip_locked=True).cte("due")
    if conn.dialect.name == "postgresql":
        cte = cte.prefix_with("MATERIALIZED")
    return select(cte.c.id)


async def serialise_claims(conn: AsyncConnection, key: int) -> None:
    """Make claims under the same ``key`` take turns until this transaction ends: an
    advisory lock on PostgreSQL; on SQLite claimers take turns already."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
