"""Sending one of a batch's webhook events again: due now, with a fresh count of attempts
and its original id, so a receiver that already processed it can tell."""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.clock import utcnow
from vidbatch.db.schema import webhook_deliveries
from vidbatch.exceptions import NoWebhookEvents
from vidbatch.services import batches
from vidbatch.services.deliveries import refresh_batch_status
from vidbatch.services.reads import EVENT_ORDER
from vidbatch.services.views import Delivery, delivery_view

log = logging.getLogger(__name__)

#: Events that end a batch's story; ``resend`` re-arms one of these by default.
FINAL_EVENTS = ("batch.completed", "batch.failed")


async def resend_webhook(
    engine: AsyncEngine,
    batch_id: str,
    *,
    max_attempts: int,
    event_type: str | None = None,
) -> Delivery:
    """Send one of a batch's events again, due now with a fresh count of attempts: the
    given ``event_type``, else its final event (completed or failed), else its latest.

    The event keeps its id, so a receiver that already processed it can tell."""
    wd = webhook_deliveries
    now = utcnow()
    async with engine.begin() as conn:
        await batches.get_batch_row(conn, batch_id)
        rows = list((await conn.execute(select(wd).where(wd.c.batch_id == batch_id))).all())
        if event_type is not None:
            rows = [r for r in rows if r.event_type == event_type]
            if not rows:
                raise NoWebhookEvents(f"batch {batch_id} has no {event_type} event")
        if not rows:
            raise NoWebhookEvents(
                f"batch {batch_id} has no webhook events (it was created without a webhook_url)"
            )
        final = [r for r in rows if r.event_type in FINAL_EVENTS]
        target = max(final or rows, key=lambda r: (r.created_at, EVENT_ORDER.get(r.event_type, 9)))
        await conn.execute(
            update(wd)
            .where(wd.c.id == target.id)
            .values(
                attempts=0,
                max_attempts=max_attempts,
                next_attempt_at=now,
                delivered_at=None,
                failed_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        await refresh_batch_status(conn, batch_id)
        row = (await conn.execute(select(wd).where(wd.c.id == target.id))).one()
    log.info(
        "webhook re-armed",
        extra={"batch_id": batch_id, "action": "webhook_resend", "event": row.event_type},
    )
    return delivery_view(row)
