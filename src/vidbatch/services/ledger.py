"""The credit ledger: every change to an account's credits is one append-only entry.

An account has ``balance_credits`` (credits it owns) and ``frozen_credits`` (the part of
them reserved for batches not yet settled); ``available = balance - frozen``. Each entry
records its change to both (``delta``, ``frozen_delta``) and the values after it, so
``balance == Σ delta`` and ``frozen == Σ frozen_delta`` for every account, always.

Every posting is one conditional UPDATE (the database refuses a change that would make
available credits negative, or the balance exceed :data:`MAX_CREDITS`; no read-then-write
race) plus one INSERT whose unique
``(account_id, idempotency_key)`` makes a repeated operation post nothing. The functions
take a connection and never commit: the use case that calls them owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.clock import utcnow
from vidbatch.db.schema import accounts, credit_ledger
from vidbatch.domain.limits import MAX_CREDITS, is_whole
from vidbatch.domain.states import LedgerType
from vidbatch.exceptions import (
    CreditLimitExceeded,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidInput,
    NotFound,
)

#: The largest change one posting may make (the balance is capped at MAX_CREDITS too).
MAX_AMOUNT = MAX_CREDITS


@dataclass(frozen=True)
class Posting:
    """The outcome of a posting: the entry, and whether this call created it."""

    entry: dict[str, Any]
    created: bool


async def post(
    conn: AsyncConnection,
    *,
    account_id: str,
    type: LedgerType,
    delta: int,
    frozen_delta: int = 0,
    key: str,
    batch_id: str | None = None,
    item_id: str | None = None,
    description: str | None = None,
    now: datetime | None = None,
) -> Posting:
    """Apply one change to an account and record it, at most once per ``key``.

    Raises :class:`InsufficientCredits` when the change would leave available credits (or
    frozen credits) negative, :class:`CreditLimitExceeded` when the balance would exceed
    :data:`MAX_CREDITS`, :class:`NotFound` for an unknown account. A repeat of an
    earlier key changes nothing and returns the first entry with ``created=False``.
    """
    if abs(delta) > MAX_AMOUNT or abs(frozen_delta) > MAX_AMOUNT:
        raise InvalidInput(f"an amount of credits must be at most {MAX_AMOUNT}")
    now = now or utcnow()
    existing = await _entry_by_key(conn, account_id, key)
    if existing is not None:
        return _repeat(existing, type, delta, frozen_delta, key)
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    update(accounts)
                    .where(
                        and_(
                            accounts.c.id == account_id,
                            accounts.c.balance_credits + delta
                            >= accounts.c.frozen_credits + frozen_delta,
                            accounts.c.frozen_credits + frozen_delta >= 0,
                            # only a credit is capped: an account above the cap (stored
                            # before it existed) can still reserve and spend
                            accounts.c.balance_credits + delta <= MAX_CREDITS
                            if delta > 0
                            else true(),
                        )
                    )
                    .values(
                        balance_credits=accounts.c.balance_credits + delta,
                        frozen_credits=accounts.c.frozen_credits + frozen_delta,
                        updated_at=now,
                    )
                    .returning(accounts.c.balance_credits, accounts.c.frozen_credits)
                )
            ).first()
            if row is None:
                await _raise_refusal(conn, account_id, delta, frozen_delta)
            assert row is not None
            entry = {
                "account_id": account_id,
                "type": type,
                "delta": delta,
                "frozen_delta": frozen_delta,
                "balance_after": row.balance_credits,
                "frozen_after": row.frozen_credits,
                "batch_id": batch_id,
                "item_id": item_id,
                "idempotency_key": key,
                "description": description,
                "created_at": now,
            }
            result = await conn.execute(
                credit_ledger.insert().values(**entry).returning(credit_ledger.c.id)
            )
            entry["id"] = result.scalar_one()
            return Posting(entry, created=True)
    except IntegrityError:
        # A concurrent call posted the same key first; the savepoint undid our update.
        existing = await _entry_by_key(conn, account_id, key)
        if existing is None:
            raise
        return _repeat(existing, type, delta, frozen_delta, key)


def _repeat(
    existing: dict[str, Any], type: LedgerType, delta: int, frozen_delta: int, key: str
) -> Posting:
    """The earlier entry for a repeated key — refused when it asked for something else."""
    if (existing["type"], existing["delta"], existing["frozen_delta"]) != (
        type,
        delta,
        frozen_delta,
    ):
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was already used for a {existing['type']} of "
            f"{existing['delta']:+d} credits"
        )
    return Posting(existing, created=False)


async def _entry_by_key(conn: AsyncConnection, account_id: str, key: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(credit_ledger).where(
                credit_ledger.c.account_id == account_id,
                credit_ledger.c.idempotency_key == key,
            )
        )
    ).first()
    return dict(row._mapping) if row is not None else None


@dataclass(frozen=True)
class Balance:
    #: Credits that may be spent on new batches (``total - reserved``).
    available: int
    #: Credits frozen for batches that have not been settled yet.
    reserved: int
    #: Credits the account owns.
    total: int


async def balance(conn: AsyncConnection, account_id: str) -> Balance:
    """An account's credits: available, reserved (frozen) and total (its balance)."""
    row = (
        await conn.execute(
            select(accounts.c.balance_credits, accounts.c.frozen_credits).where(
                accounts.c.id == account_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    total, reserved = int(row.balance_credits), int(row.frozen_credits)
    return Balance(available=total - reserved, reserved=reserved, total=total)


async def _raise_refusal(
    conn: AsyncConnection, account_id: str, delta: int, frozen_delta: int
) -> None:
    held = await balance(conn, account_id)
    if delta > 0 and held.total + delta > MAX_CREDITS:
        raise CreditLimitExceeded(
            f"account {account_id} holds {held.total} credits: {delta:+d} would exceed the "
            f"most one account may hold ({MAX_CREDITS})"
        )
    available = held.available
    required = frozen_delta - delta if frozen_delta > 0 else -delta
    raise InsufficientCredits(required=max(required, 0), available=available)


def _positive(amount: int, what: str = "credits") -> None:
    if not is_whole(amount) or amount <= 0:
        raise InvalidInput(f"{what} must be a positive whole number, got {amount!r}")


async def topup(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    key: str,
    type: LedgerType = LedgerType.PURCHASE,
    description: str | None = None,
) -> Posting:
    """Add ``amount`` purchased (or bonus) credits."""
    _positive(amount)
    return await post(
        conn, account_id=account_id, type=type, delta=amount, key=key, description=description
    )


async def reserve(conn: AsyncConnection, account_id: str, amount: int, *, batch_id: str) -> Posting:
    """Freeze ``amount`` of the account's available credits for a batch (once per batch)."""
    if amount < 0:
        raise InvalidInput("a reservation cannot be negative")
    return await post(
        conn,
        account_id=account_id,
        type=LedgerType.RESERVE,
        delta=0,
        frozen_delta=amount,
        key=f"reserve:{batch_id}",
        batch_id=batch_id,
        description=f"reserve for batch {batch_id}",
    )


async def release(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    batch_id: str,
    key: str,
    description: str | None = None,
    now: datetime | None = None,
) -> Posting:
    """Unfreeze ``amount`` reserved for a batch: credits not used (a refund)."""
    if amount < 0:
        raise InvalidInput("a refund cannot be negative")
    return await post(
        conn,
        account_id=account_id,
        type=LedgerType.REFUND,
        delta=0,
        frozen_delta=-amount,
        key=key,
        batch_id=batch_id,
        description=description or f"refund for batch {batch_id}",
        now=now,
    )


async def charge(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    batch_id: str,
    key: str,
    now: datetime | None = None,
) -> Posting:
    """Spend ``amount`` of the credits reserved for a batch."""
    if amount < 0:
        raise InvalidInput("a charge cannot be negative")
    return await post(
        conn,
        account_id=account_id,
        type=LedgerType.SETTLE,
        delta=-amount,
        frozen_delta=-amount,
        key=key,
        batch_id=batch_id,
        description=f"charge for batch {batch_id}",
        now=now,
    )


async def adjust(
    conn: AsyncConnection, account_id: str, amount: int, *, reason: str, key: str
) -> Posting:
    """A manual correction by the operator, positive or negative, with its reason."""
    if not is_whole(amount) or amount == 0:
        raise InvalidInput("an adjustment must be a non-zero whole number of credits")
    if not reason or not reason.strip():
        raise InvalidInput("an adjustment needs a reason")
    return await post(
        conn,
        account_id=account_id,
        type=LedgerType.ADJUSTMENT,
        delta=amount,
        key=key,
        description=reason.strip(),
    )
