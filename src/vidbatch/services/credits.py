"""A customer's credits as the customer sees them: the balance and the ledger entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import credit_ledger
from vidbatch.services.batches import iso
from vidbatch.services.ledger import Balance, balance

__all__ = ["Balance", "balance", "entry_view"]


def entry_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "delta": row.delta,
        "frozen_delta": row.frozen_delta,
        "balance_after": row.balance_after,
        "batch_id": row.batch_id,
        "item_id": row.item_id,
        "description": row.description,
        "created_at": iso(row.created_at),
    }


async def list_ledger(
    conn: AsyncConnection,
    account_id: str,
    *,
    batch_id: str | None = None,
    type: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of the account's ledger entries, newest first, and how many match in all.

    ``created_from`` is inclusive, ``created_to`` exclusive.
    """
    where = [credit_ledger.c.account_id == account_id]
    if batch_id is not None:
        where.append(credit_ledger.c.batch_id == batch_id)
    if type is not None:
        where.append(credit_ledger.c.type == type)
    if created_from is not None:
        where.append(credit_ledger.c.created_at >= created_from)
    if created_to is not None:
        where.append(credit_ledger.c.created_at < created_to)
    total = (
        await conn.execute(select(func.count()).select_from(credit_ledger).where(*where))
    ).scalar_one()
    rows = (
        await conn.execute(
            select(credit_ledger)
            .where(*where)
            .order_by(credit_ledger.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return [entry_view(r) for r in rows], int(total)
