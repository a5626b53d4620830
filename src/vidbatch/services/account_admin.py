"""The operator's changes to accounts and keys, each answered with the views of
``vidbatch.services.views``: create a key, change its state or rate limit, revoke it, give
it a new webhook secret, correct an account's credits.

Every change to a key is logged: who (``actor``: "admin api", "dashboard" or "cli"), what
(``action``) and which key (``key_id``) — never the key or a secret."""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.exceptions import KeyRevoked
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

log = logging.getLogger(__name__)

#: Who changed a key, as the log shows it.
Actor = Literal["admin api", "dashboard", "cli"]


def log_key_action(actor: Actor, action: str, key_id: str, **fields: object) -> None:
    """One line per change to a key: who, what, which key id (never the key)."""
    log.info(
        "key %s by %s",
        action,
        actor,
        extra={"action": f"key_{action}", "actor": actor, "key_id": key_id, **fields},
    )


async def create_key(
    engine: AsyncEngine, account_id: str, *, name: str, rate_limit_per_min: int, actor: Actor
) -> CreatedKey:
    """A new key of an existing account, with its secrets (shown this once)."""
    new = await accounts.create_key(
        engine, account_id, name=name, rate_limit_per_min=rate_limit_per_min
    )
    log_key_action(actor, "created", new.key_id, account_id=account_id)
    async with engine.connect() as conn:
        key = key_view(await accounts.get_key(conn, new.key_id))
    return CreatedKey(key=key, api_key=new.api_key, webhook_secret=new.webhook_secret)


async def set_key_state(
    engine: AsyncEngine,
    key_id: str,
    *,
    active: bool | None = None,
    rate_limit_per_min: int | None = None,
    actor: Actor,
) -> Key:
    """Activate/deactivate a key or change its rate limit; the key after it (KeyRevoked
    for activating a revoked key)."""
    try:
        await accounts.set_key_state(
            engine, key_id, active=active, rate_limit_per_min=rate_limit_per_min
        )
    except KeyRevoked:
        log_key_action(actor, "activation_refused", key_id, reason="revoked")
        raise
    if active is not None:
        log_key_action(actor, "activated" if active else "deactivated", key_id)
    if rate_limit_per_min is not None:
        log_key_action(actor, "rate_limited", key_id, rate_limit_per_min=rate_limit_per_min)
    async with engine.connect() as conn:
        return key_view(await accounts.get_key(conn, key_id))


async def revoke_key(engine: AsyncEngine, key_id: str, *, actor: Actor) -> Key:
    """Revoke a key for good; the key after it."""
    await accounts.revoke_key(engine, key_id)
    log_key_action(actor, "revoked", key_id)
    async with engine.connect() as conn:
        return key_view(await accounts.get_key(conn, key_id))


async def rotate_webhook_secret(
    engine: AsyncEngine, key_id: str, *, overlap_seconds: int, actor: Actor
) -> RotatedSecret:
    """A new webhook secret (shown this once) and until when the previous one still signs."""
    secret = await accounts.rotate_webhook_secret(engine, key_id, overlap_seconds=overlap_seconds)
    log_key_action(actor, "webhook_secret_rotated", key_id)
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
