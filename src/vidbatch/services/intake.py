"""Accepting a batch from a customer request: the one use case behind every create
endpoint (``/api/enterprise/video-batch``, ``/api/video/batch``, ``/api/v1/batches``).

Order matters: a replay is answered before the request is counted against the rate limit;
everything refused (invalid input, missing credits, the rate limit) leaves the request id
free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vidbatch.domain.validation import request_fingerprint, validate_batch
from vidbatch.exceptions import IdempotencyKeyReused, InvalidInput
from vidbatch.services.batches import Caller, Created, create_batch, find_replay
from vidbatch.services.context import Context

#: Counts the request against the key's rate limit (raising RateLimited when it is spent),
#: or only looks at the limit (for a replay, which is not counted).
Metering = Callable[[], Awaitable[object]]


async def accept(
    rt: Context,
    caller: Caller,
    body: Any,
    *,
    invalid: InvalidInput | None,
    idempotency_key: str | None,
    request_id: str,
    source: str,
    count_request: Metering,
    show_rate: Metering,
    client_ip: str | None = None,
    user_agent: str | None = None,
    default_aspect_ratio: str | None = None,
) -> Created:
    """Create the batch ``body`` describes, or answer with the earlier batch of the same
    ``idempotency_key`` and body.

    ``invalid`` is why the request could not be read, if it could not: it is raised once
    the request has been counted (a replay of an unreadable request does not exist).
    """
    fingerprint = request_fingerprint(body) if invalid is None and isinstance(body, dict) else None
    if idempotency_key is not None and fingerprint is not None:
        try:
            async with rt.engine.connect() as conn:
                replay = await find_replay(conn, caller, idempotency_key, fingerprint)
        except IdempotencyKeyReused:
            await count_request()
            raise
        if replay is not None:
            await show_rate()
            return replay

    await count_request()
    if invalid is not None:
        raise invalid
    settings = rt.settings
    spec = validate_batch(
        body,
        catalog=settings.catalog,
        max_items=settings.max_items,
        allow_private_webhooks=settings.allow_private_webhooks,
        default_aspect_ratio=default_aspect_ratio,
    )
    created = await create_batch(
        rt.engine,
        caller,
        spec,
        request_id=request_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint if idempotency_key is not None else None,
        source=source,
        client_ip=client_ip,
        user_agent=user_agent,
        webhook_max_attempts=settings.webhook_max_attempts,
    )
    if not created.replay:
        rt.metrics.credits.labels("reserved").inc(created.required_credits)
    return created
