"""Small helpers shared by tests: create accounts and batches through the real services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.schema import accounts, video_tasks
from vidbatch.domain.catalog import default_catalog
from vidbatch.domain.validation import validate_batch
from vidbatch.services import accounts as account_svc
from vidbatch.services.audit import audit
from vidbatch.services.batches import Caller, Created, create_batch

#: The VIDBATCH_SECRET_KEY of the tests (settings_factory sets it too).
TEST_SECRET_KEY = "test-secret-key-of-at-least-32-characters"


def keyed(engine: AsyncEngine, secret_key: str = TEST_SECRET_KEY) -> AsyncEngine:
    """``engine`` with the tests' keyring, as open_database would give it."""
    from vidbatch.db.secrets import attach_keyring
    from vidbatch.domain.sealing import Keyring

    return attach_keyring(engine, Keyring.from_secrets(secret_key))


def keyed_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """A new engine on ``url`` with the tests' keyring."""
    from vidbatch.db.engine import make_engine

    return keyed(make_engine(url, **kwargs))


async def new_account(engine: AsyncEngine, credits: int = 1000, name: str = "acme") -> Caller:
    account_id, key = await account_svc.create_account(engine, name, credits=credits)
    return Caller(account_id=account_id, key_id=key.key_id)


def items(n: int, model: str = "sora-2", **extra: Any) -> list[dict[str, Any]]:
    return [{"prompt": f"video {i}", "model": model, **extra} for i in range(n)]


async def new_batch(
    engine: AsyncEngine,
    caller: Caller,
    body: dict[str, Any] | list[dict[str, Any]],
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> Created:
    if isinstance(body, list):
        body = {"items": body}
    spec = validate_batch(
        body, catalog=default_catalog(), max_items=10_000, allow_private_webhooks=True
    )
    from vidbatch.domain.validation import request_fingerprint

    return await create_batch(
        engine,
        caller,
        spec,
        request_id=request_id or "req",
        idempotency_key=request_id,
        fingerprint=request_fingerprint(body) if request_id else None,
        now=now,
    )


async def finish_tasks(engine: AsyncEngine, batch_id: str, outcomes: dict[int, str]) -> None:
    """Move tasks to a terminal state as the worker would (index -> succeeded|failed)."""
    now = utcnow()
    async with engine.begin() as conn:
        for index, status in outcomes.items():
            await conn.execute(
                update(video_tasks)
                .where(video_tasks.c.batch_job_id == batch_id, video_tasks.c.batch_index == index)
                .values(
                    status=status,
                    next_attempt_at=None,
                    completed_at=now,
                    video_url="https://cdn.example/v.mp4" if status == "succeeded" else None,
                    failure_type=None if status == "succeeded" else "model_error",
                )
            )


async def balance(engine: AsyncEngine, account_id: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(accounts.c.balance_credits, accounts.c.frozen_credits).where(
                    accounts.c.id == account_id
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def assert_audit_clean(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        violations = await audit(conn)
    assert violations == [], "\n".join(map(str, violations))
