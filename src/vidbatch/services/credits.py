"""A customer's credits as the customer sees them: the balance and the ledger entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import credit_ledger
from vidbatch.domain import public
from vidbatch.services import customer
from vidbatch.services.ledger import Balance, balance

__all__ = ["Balance", "balance", "list_ledger"]


async def list_ledger(
    conn: AsyncConnection,
    account_id: str,
    *,
    batch_id: str | None = None,
    type: public.PublicLedgerType | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of the account's ledger entries (as :func:`customer.ledger_entry` shows
    them), newest first, and how many match in all.

    ``type`` is a published type (``bonus`` also selects admin adjustments);
    ``created_from`` is inclusive, ``created_to`` exclusive.
    """
    where = [credit_ledger.c.account_id == account_id]
    if batch_id is not None:
        where.append(credit_ledger.c.batch_id == batch_id)
    if type is not None:
        where.append(credit_ledger.c.type.in_(public.ledger_types(type)))
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
    return [customer.ledger_entry(r) for r in rows], int(total)
