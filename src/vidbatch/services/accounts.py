"""Accounts and their API keys: the operator's side of who may spend what."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.schema import accounts, enterprise_api_keys
from vidbatch.domain.limits import MAX_CREDITS, MAX_RATE_LIMIT_PER_MIN, is_whole
from vidbatch.exceptions import FieldError, InvalidInput, KeyRevoked, NotFound
from vidbatch.services import ledger

KEY_PREFIX = "vb_"
#: Characters of a key kept as its lookup prefix (``vb_`` + 8 random characters).
LOOKUP_CHARS = 11
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: the only moment its secret values are known in full."""

    key_id: str
    account_id: str
    api_key: str
    key_prefix: str
    webhook_secret: str
    rate_limit_per_min: int


@dataclass(frozen=True)
class KeyIdentity:
    """What a verified API key tells a request about its caller."""

    key_id: str
    account_id: str
    rate_limit_per_min: int
    key_prefix: str


def new_id() -> str:
    return str(uuid.uuid4())


def hash_key(api_key: str) -> str:
    """SHA-256 of a key: keys carry 190 random bits, so a fast hash is enough."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput("name must not be empty")
    if len(name) > 200:
        raise InvalidInput("name must be at most 200 characters")
    return name


def _check_rate_limit(rate_limit: int) -> int:
    if not is_whole(rate_limit) or not 0 < rate_limit <= MAX_RATE_LIMIT_PER_MIN:
        raise InvalidInput(
            f"rate_limit_per_min must be a whole number from 1 to {MAX_RATE_LIMIT_PER_MIN}, "
            f"got {rate_limit!r}",
            [FieldError("rate_limit_per_min", f"from 1 to {MAX_RATE_LIMIT_PER_MIN}")],
        )
    return rate_limit


async def create_account(
    engine: AsyncEngine,
    name: str,
    *,
    credits: int = 0,
    rate_limit_per_min: int = 60,
    key_name: str = "default",
) -> tuple[str, NewKey]:
    """Create an account, its opening credits and its first API key, in one transaction."""
    name = _check_name(name)
    _check_rate_limit(rate_limit_per_min)
    if not is_whole(credits) or not 0 <= credits <= MAX_CREDITS:
        raise InvalidInput(
            f"credits must be a whole number from 0 to {MAX_CREDITS}, got {credits!r}"
        )
    account_id = new_id()
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            accounts.insert().values(
                id=account_id, name=name, created_at=now, updated_at=now, is_active=True
            )
        )
        if credits:
            await ledger.topup(
                conn,
                account_id,
                credits,
                key=f"opening:{account_id}",
                description="opening credits",
            )
        key = await _insert_key(conn, account_id, key_name, rate_limit_per_min)
    return account_id, key


async def _insert_key(
    conn: AsyncConnection, account_id: str, name: str, rate_limit_per_min: int
) -> NewKey:
    api_key = generate_key()
    key_id = new_id()
    webhook_secret = new_webhook_secret()
    await conn.execute(
        enterprise_api_keys.insert().values(
            id=key_id,
            account_id=account_id,
            name=_check_name(name),
            key_prefix=api_key[:LOOKUP_CHARS],
            key_hash=hash_key(api_key),
            is_active=True,
            rate_limit_per_min=_check_rate_limit(rate_limit_per_min),
            webhook_secret=webhook_secret,
            created_at=utcnow(),
        )
    )
    return NewKey(
        key_id=key_id,
        account_id=account_id,
        api_key=api_key,
        key_prefix=api_key[:LOOKUP_CHARS],
        webhook_secret=webhook_secret,
        rate_limit_per_min=rate_limit_per_min,
    )


async def create_key(
    engine: AsyncEngine, account_id: str, *, name: str = "default", rate_limit_per_min: int = 60
) -> NewKey:
    """Create another API key for an existing account."""
    async with engine.begin() as conn:
        await get_account(conn, account_id)
        return await _insert_key(conn, account_id, name, rate_limit_per_min)


async def get_account(conn: AsyncConnection, account_id: str) -> dict[str, Any]:
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    data = dict(row._mapping)
    data["available_credits"] = data["balance_credits"] - data["frozen_credits"]
    return data


async def list_accounts(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(accounts).order_by(accounts.c.created_at))).all()
    out = []
    for row in rows:
        data = dict(row._mapping)
        data["available_credits"] = data["balance_credits"] - data["frozen_credits"]
        out.append(data)
    return out


async def topup(
    engine: AsyncEngine,
    account_id: str,
    credits: int,
    *,
    key: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Add purchased credits; ``key`` makes a retried top-up post once."""
    posting, _ = await topup_posting(engine, account_id, credits, key=key, description=description)
    return posting.entry


async def topup_posting(
    engine: AsyncEngine,
    account_id: str,
    credits: int,
    *,
    key: str | None = None,
    description: str | None = None,
) -> tuple[ledger.Posting, dict[str, Any]]:
    """Like :func:`topup`, with whether this call posted it (``created``; False for a
    retried idempotency key) and the account as it is now."""
    async with engine.begin() as conn:
        await get_account(conn, account_id)
        posting = await ledger.topup(
            conn,
            account_id,
            credits,
            key=f"topup:{key or new_id()}",
            description=description or "top-up",
        )
        return posting, dict(await get_account(conn, account_id))


async def adjust(
    engine: AsyncEngine, account_id: str, credits: int, *, reason: str, key: str | None = None
) -> dict[str, Any]:
    """A manual credit correction with its reason (never below zero available)."""
    async with engine.begin() as conn:
        await get_account(conn, account_id)
        posting = await ledger.adjust(
            conn, account_id, credits, reason=reason, key=f"adjust:{key or new_id()}"
        )
        return posting.entry


def _public_key(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for secret in ("key_hash", "webhook_secret", "webhook_secret_previous"):
        data.pop(secret, None)
    return data


async def list_keys(conn: AsyncConnection, account_id: str | None = None) -> list[dict[str, Any]]:
    """Keys without anything secret: id, prefix, name, state, limits, times."""
    query = select(enterprise_api_keys).order_by(enterprise_api_keys.c.created_at)
    if account_id is not None:
        await get_account(conn, account_id)
        query = query.where(enterprise_api_keys.c.account_id == account_id)
    return [_public_key(r) for r in (await conn.execute(query)).all()]


async def get_key(conn: AsyncConnection, key_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(select(enterprise_api_keys).where(enterprise_api_keys.c.id == key_id))
    ).first()
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return _public_key(row)


async def set_key_state(
    engine: AsyncEngine,
    key_id: str,
    *,
    active: bool | None = None,
    rate_limit_per_min: int | None = None,
) -> dict[str, Any]:
    """Activate or deactivate a key (reversible) or change its rate limit.

    A revoked key stays revoked: activating it raises :class:`KeyRevoked`.
    """
    values: dict[str, Any] = {}
    if active is not None:
        values["is_active"] = active
    if rate_limit_per_min is not None:
        values["rate_limit_per_min"] = _check_rate_limit(rate_limit_per_min)
    async with engine.begin() as conn:
        if values:
            query = update(enterprise_api_keys).where(enterprise_api_keys.c.id == key_id)
            if active:  # in the same statement: a revocation in between is never undone
                query = query.where(enterprise_api_keys.c.revoked_at.is_(None))
            result = await conn.execute(query.values(**values))
            if result.rowcount == 0:
                await get_key(conn, key_id)  # NotFound for an unknown key
                raise KeyRevoked(f"API key {key_id} is revoked: create a new key instead")
        return await get_key(conn, key_id)


async def revoke_key(engine: AsyncEngine, key_id: str) -> dict[str, Any]:
    """Revoke a key for good: its requests are refused and it can never be activated
    again. Revoking a revoked key changes nothing (it keeps its first ``revoked_at``)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(enterprise_api_keys)
            .where(enterprise_api_keys.c.id == key_id)
            .values(
                is_active=False,
                revoked_at=func.coalesce(enterprise_api_keys.c.revoked_at, utcnow()),
            )
        )
        if result.rowcount == 0:
            raise NotFound(f"API key {key_id} not found")
        return await get_key(conn, key_id)


async def verify_key(conn: AsyncConnection, api_key: str) -> KeyIdentity | None:
    """The identity behind an API key, or None for an unknown, revoked or inactive key.

    The row is found by its prefix and the hash compared in constant time.
    """
    if not api_key or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
        return None
    row = (
        await conn.execute(
            select(
                enterprise_api_keys.c.id,
                enterprise_api_keys.c.account_id,
                enterprise_api_keys.c.key_hash,
                enterprise_api_keys.c.is_active,
                enterprise_api_keys.c.revoked_at,
                enterprise_api_keys.c.rate_limit_per_min,
                enterprise_api_keys.c.key_prefix,
                accounts.c.is_active.label("account_active"),
            )
            .join(accounts, accounts.c.id == enterprise_api_keys.c.account_id)
            .where(enterprise_api_keys.c.key_prefix == api_key[:LOOKUP_CHARS])
        )
    ).first()
    if row is None:
        hmac.compare_digest(hash_key(api_key), hash_key(api_key))  # same work either way
        return None
    if not hmac.compare_digest(row.key_hash, hash_key(api_key)):
        return None
    if not (row.is_active and row.revoked_at is None and row.account_active):
        return None
    return KeyIdentity(
        key_id=row.id,
        account_id=row.account_id,
        rate_limit_per_min=row.rate_limit_per_min,
        key_prefix=row.key_prefix,
    )


async def touch_key(conn: AsyncConnection, key_id: str) -> None:
    await conn.execute(
        update(enterprise_api_keys)
        .where(enterprise_api_keys.c.id == key_id)
        .values(last_seen_at=utcnow())
    )


def new_webhook_secret() -> str:
    """``whsec_`` + standard base64 of 32 random bytes: the form the Standard Webhooks
    libraries expect (they sign with the decoded bytes, as vidbatch does)."""
    import base64

    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


async def rotate_webhook_secret(
    engine: AsyncEngine, key_id: str, overlap_seconds: int = 86400
) -> str:
    """Give a key a new webhook secret and return it (shown once).

    For ``overlap_seconds`` webhooks carry a second signature made with the old secret, so
    receivers can switch without missing an event; rotating again within the overlap drops
    the oldest secret at once. ``overlap_seconds=0`` stops using the old secret now.
    """
    from datetime import timedelta

    if (
        isinstance(overlap_seconds, bool)
        or not isinstance(overlap_seconds, int)
        or not 0 <= overlap_seconds <= 30 * 86400
    ):
        raise InvalidInput("overlap_seconds must be a whole number from 0 to 2592000 (30 days)")
    secret = new_webhook_secret()
    keys = enterprise_api_keys
    now = utcnow()
    async with engine.begin() as conn:
        result = await conn.execute(
            update(keys)
            .where(keys.c.id == key_id)
            .values(
                webhook_secret=secret,
                webhook_secret_previous=keys.c.webhook_secret if overlap_seconds else None,
                webhook_secret_previous_expires_at=(
                    now + timedelta(seconds=overlap_seconds) if overlap_seconds else None
                ),
            )
        )
        if result.rowcount == 0:
            raise NotFound(f"API key {key_id} not found")
    return secret
