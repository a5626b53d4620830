"""The operator's changes to accounts and keys, each answered with the views of
``vidbatch.services.views``: create a key, change its state or rate limit, give it a new
webhook secret, correct an account's credits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.services import accounts
from vidbatch.services.views import (
    Adjustment,
    CreatedKey,
    Key,
    RotatedSecret,
    account_view,
    adjust_entry,
    key_view,
)


async def create_key(
    engine: AsyncEngine, account_id: str, *, name: str, rate_limit_per_min: int
) -> CreatedKey:
    """A new key of an existing account, with its secrets (shown this once)."""
    new = await accounts.create_key(
        engine, account_id, name=name, rate_limit_per_min=rate_limit_per_min
    )
    async with engine.connect() as conn:
        key = key_view(await accounts.get_key(conn, new.key_id))
    return CreatedKey(key=key, api_key=new.api_key, webhook_secret=new.webhook_secret)


async def set_key_state(
    engine: AsyncEngine,
    key_id: str,
    *,
    active: bool | None = None,
    rate_limit_per_min: int | None = None,
) -> Key:
    """Activate/deactivate (revoke) a key or change its rate limit; the key after it."""
    await accounts.set_key_state(
        engine, key_id, active=active, rate_limit_per_min=rate_limit_per_min
    )
    async with engine.connect() as conn:
        return key_view(await accounts.get_key(conn, key_id))


async def rotate_webhook_secret(
    engine: AsyncEngine, key_id: str, *, overlap_seconds: int
) -> RotatedSecret:
    """A new webhook secret (shown this once) and until when the previous one still signs."""
    secret = await accounts.rotate_webhook_secret(engine, key_id, overlap_seconds=overlap_seconds)
    async with engine.connect() as conn:
        key = key_view(await accounts.get_key(conn, key_id))
    return RotatedSecret(
        key_id=key_id,
        webhook_secret=secret,
        previous_secret_valid_until=key.webhook_secret_rotation_ends_at,
    )


async def adjust(
    engine: AsyncEngine,
    account_id: str,
    credits: int,
    *,
    reason: str,
    idempotency_key: str | None = None,
) -> Adjustment:
    """A manual correction; the entry and the account's credits after it."""
    entry = await accounts.adjust(engine, account_id, credits, reason=reason, key=idempotency_key)
    async with engine.connect() as conn:
        account = await accounts.get_account(conn, account_id)
    return Adjustment(entry=adjust_entry(entry), account=account_view(account))
