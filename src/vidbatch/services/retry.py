"""Retrying a settled batch's failed items as a new batch of the same account, priced and
reserved anew; the parent's figures do not change."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.domain.catalog import Catalog
from vidbatch.domain.states import BatchStatus, FailureType, TaskStatus
from vidbatch.domain.validation import BatchSpec, request_fingerprint, validate_batch
from vidbatch.exceptions import BatchNotSettled, NotFound, NothingToRetry
from vidbatch.services import batches
from vidbatch.services.batches import Caller, Created
from vidbatch.services.views import RetriedBatch

log = logging.getLogger(__name__)


async def retry_failed(
    engine: AsyncEngine,
    batch_id: str,
    *,
    include_moderation: bool = False,
    catalog: Catalog,
    allow_private_webhooks: bool,
    webhook_max_attempts: int,
) -> RetriedBatch:
    """Create a child batch of a settled batch's failed items, priced and reserved anew.

    Items refused by moderation are left out unless ``include_moderation``: they would most
    likely be refused again, and be paid for nothing. The child keeps each item's index in
    the parent, its prompt, parameters and metadata, and the parent's webhook URL; the
    parent's figures do not change. Asking twice returns the first child (no second charge).
    Raises NotFound, BatchNotSettled, NothingToRetry, InsufficientCredits.
    """
    # One transaction that first locks the parent's row: two retries of the same batch (of
    # either variant, from any process) take turns, so the second sees what the first took.
    # The unique video_tasks.retry_of_task_id refuses a second retry of an item regardless;
    # should a writer that did not take the lock get there first, this transaction fails
    # with IntegrityError and runs once more, now seeing that writer's child: the caller gets
    # the documented answer (the same child, a child of what is left, or NOTHING_TO_RETRY).
    for attempt in (1, 2):
        try:
            created, indices, skipped = await _retry_in_transaction(
                engine,
                batch_id,
                include_moderation=include_moderation,
                catalog=catalog,
                allow_private_webhooks=allow_private_webhooks,
                webhook_max_attempts=webhook_max_attempts,
            )
            break
        except IntegrityError:
            if attempt == 2:
                raise
    log.info(
        "failed items retried",
        extra={
            "batch_id": created.batch_id,
            "action": "retry",
            "parent_batch_id": batch_id,
            "items": len(indices),
            "replay": created.replay,
        },
    )
    return RetriedBatch(
        batch_id=created.batch_id,
        parent_batch_id=batch_id,
        total_count=created.total_count,
        required_credits=created.required_credits,
        available_credits=created.available_credits,
        retried_indices=indices,
        excluded_moderation=skipped,
        idempotent_replay=created.replay,
    )


async def _retry_in_transaction(
    engine: AsyncEngine,
    batch_id: str,
    *,
    include_moderation: bool,
    catalog: Catalog,
    allow_private_webhooks: bool,
    webhook_max_attempts: int,
) -> tuple[Created, list[int], int]:
    """The retry's one transaction: the child (or the replay), the indices it holds and
    how many moderation failures it left out."""
    async with engine.begin() as conn:
        if not batches.storable_id(batch_id):
            raise NotFound(f"batch {batch_id} not found")
        parent = (
            await conn.execute(
                select(batch_jobs).where(batch_jobs.c.id == batch_id).with_for_update()
            )
        ).first()
        if parent is None:
            raise NotFound(f"batch {batch_id} not found")
        if parent.settled_at is None:
            raise BatchNotSettled(
                f"batch {batch_id} is still {parent.status}: retry its failed items once it "
                "has settled"
            )
        failed = list(
            (
                await conn.execute(
                    select(video_tasks)
                    .where(
                        video_tasks.c.batch_job_id == batch_id,
                        video_tasks.c.status == TaskStatus.FAILED,
                    )
                    .order_by(video_tasks.c.batch_index)
                )
            ).all()
        )
        # Items an earlier retry (the other variant) already took are not charged again:
        # those of its children, and those another task names as the task it retries.
        retried = set(
            (
                await conn.execute(
                    select(video_tasks.c.batch_index)
                    .join(batch_jobs, batch_jobs.c.id == video_tasks.c.batch_job_id)
                    .where(batch_jobs.c.parent_batch_id == batch_id)
                )
            ).scalars()
        )
        retrying = video_tasks.alias("retrying")
        retried.update(
            (
                await conn.execute(
                    select(video_tasks.c.batch_index)
                    .join(retrying, retrying.c.retry_of_task_id == video_tasks.c.id)
                    .where(video_tasks.c.batch_job_id == batch_id)
                )
            ).scalars()
        )
        eligible = [
            t for t in failed if include_moderation or t.failure_type != FailureType.MODERATION
        ]
        skipped = len(failed) - len(eligible)
        caller = Caller(account_id=parent.user_id, key_id=parent.key_id)
        variant = "all" if include_moderation else "no-moderation"
        idempotency_key = f"admin-retry:{batch_id}:{variant}"
        fingerprint = request_fingerprint({"retry_of": batch_id, "items": variant})
        replay = await batches.find_replay(conn, caller, idempotency_key, fingerprint)
        chosen = (
            eligible
            if replay is not None
            else [t for t in eligible if t.batch_index not in retried]
        )
        if not chosen:
            why = (
                f" ({skipped} refused by moderation: pass include_moderation to retry them)"
                if skipped
                else ""
            )
            raise NothingToRetry(f"batch {batch_id} has no failed items to retry{why}")
        indices = [t.batch_index for t in chosen]
        if replay is None:
            created = await _create_child(
                conn,
                parent,
                chosen,
                caller=caller,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                catalog=catalog,
                allow_private_webhooks=allow_private_webhooks,
                webhook_max_attempts=webhook_max_attempts,
            )
        else:
            created = replay
    return created, indices, skipped


async def _create_child(
    conn: AsyncConnection,
    parent: Any,
    chosen: list[Any],
    *,
    caller: Caller,
    idempotency_key: str,
    fingerprint: str,
    catalog: Catalog,
    allow_private_webhooks: bool,
    webhook_max_attempts: int,
) -> Created:
    """Price, reserve and insert the child batch of ``chosen`` on ``conn``."""
    body: dict[str, Any] = {
        "items": [
            {
                k: v
                for k, v in {
                    "prompt": t.prompt,
                    "model": t.model,
                    "aspect_ratio": t.aspect_ratio,
                    "duration": t.duration,
                    "reference_url": t.reference_url,
                    "meta": t.meta,
                    "metadata": t.metadata,
                }.items()
                if v is not None
            }
            for t in chosen
        ],
        "metadata": parent.metadata,
    }
    if parent.webhook_url:
        body["webhook_url"] = parent.webhook_url
    spec = validate_batch(
        body,
        catalog=catalog,
        max_items=len(chosen),
        allow_private_webhooks=allow_private_webhooks,
    )
    spec = BatchSpec(
        items=[
            replace(item, index=t.batch_index) for item, t in zip(spec.items, chosen, strict=True)
        ],
        webhook_url=spec.webhook_url,
        metadata=spec.metadata,
    )
    child_id = str(uuid.uuid4())
    request_id = f"retry-of-{parent.id}"
    posting = await batches.insert_batch(
        conn,
        caller,
        spec,
        batch_id=child_id,
        request_id=request_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        source="admin-retry",
        parent_batch_id=parent.id,
        client_ip=None,
        user_agent=None,
        webhook_max_attempts=webhook_max_attempts,
        now=utcnow(),
        retry_of=[t.id for t in chosen],
    )
    return Created(
        batch_id=child_id,
        request_id=request_id,
        total_count=len(spec.items),
        cost_per_video=spec.cost_per_video,
        required_credits=spec.total_credits,
        available_credits=posting.entry["balance_after"] - posting.entry["frozen_after"],
        status=BatchStatus.QUEUED,
        replay=False,
    )
