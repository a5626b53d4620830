"""Delivering customer webhooks from the outbox (``webhook_deliveries``).

One call of :func:`deliver_due`:

1. **claims** up to ``limit`` due events, fairly across API keys (:func:`claim`:
   round-robin, at most :data:`PER_KEY_INFLIGHT` of one key in flight across every worker,
   receivers paused by the circuit breaker put off), in one UPDATE that sets the lease and
   moves ``next_attempt_at`` to the lease's end, so an event whose worker dies is due again
   then; the claim is committed before any HTTP is sent;
2. **sends** them all at once over the process's aiohttp session, each bounded by
   ``ENTERPRISE_WEBHOOK_TIMEOUT_MS`` (name resolution, connection and answer together),
   redirects never followed: one slow receiver delays nobody else, and settlement never
   waits for a webhook (events are written by the transaction that settles, sent later);
   time-outs and answers feed :class:`vidbatch.domain.breaker.CircuitBreaker`;
3. **records** each attempt, as soon as it ends, in its own transaction with
   :func:`vidbatch.services.deliveries.record` (fenced on the lease; the next attempt is
   scheduled by :mod:`vidbatch.domain.webhook_retry`).

Delivery is at least once: a worker that dies between a receiver's 2xx and the record sends
that event again once its lease runs out. Receivers de-duplicate on ``webhook-id``.

**Private addresses.** The URL's host is resolved at every attempt; unless
``VIDBATCH_ALLOW_PRIVATE_WEBHOOKS`` is on, an attempt whose host resolves to any loopback,
private, link-local, multicast or reserved address is refused before any connection is
made. The request then goes to the address that was checked (the URL's host is replaced by
it; ``Host`` and the TLS server name stay the original host's), so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot redirect it.

**Signatures** (:mod:`vidbatch.webhooks.signing`) use the secret of the API key that
created the batch (and its previous secret while a rotation overlaps), else
``ENTERPRISE_WEBHOOK_SECRET``; with neither, the event is sent unsigned (only
``webhook-id`` and ``webhook-timestamp``), and receivers cannot tell it from a forgery.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from yarl import URL

from vidbatch import __version__
from vidbatch.db.queue import serialise_claims
from vidbatch.db.schema import batch_jobs, enterprise_api_keys, webhook_deliveries
from vidbatch.domain.urls import non_public_address, parse_target
from vidbatch.runtime import Runtime
from vidbatch.services.deliveries import Outcome, record
from vidbatch.webhooks.signing import encode_body, signature_headers

log = logging.getLogger(__name__)

USER_AGENT = f"vidbatch-webhooks/{__version__}"
#: Events of one API key in flight at once, across every worker: one customer's slow or
#: dead receiver holds at most this many delivery slots.
PER_KEY_INFLIGHT = 4
#: The advisory lock that makes webhook claims take turns (PostgreSQL).
WEBHOOK_LOCK_KEY = 0x76627768  # "vbwh"
#: Addresses of one host tried in turn when a connection fails.
MAX_ADDRESSES = 3

wd = webhook_deliveries


@dataclass(frozen=True)
class Due:
    """A claimed event, with what is needed to send it."""

    id: str
    event_id: str
    batch_id: str
    url: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    secrets: tuple[str, ...]


def lease_seconds(timeout_ms: int) -> float:
    """How long a claim is held: twice the attempt's timeout, plus a margin for the record."""
    return 2 * timeout_ms / 1000 + 30


async def claim(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    per_key: int = PER_KEY_INFLIGHT,
    paused: Callable[[str], float | None] | None = None,
) -> list[Any]:
    """Take up to ``limit`` due events under a lease, fairly across API keys: round-robin
    (every key's oldest event first, then every key's second, …) and never more than
    ``per_key`` of one key in flight at once, across every worker. An event whose receiver
    is paused (``paused(receiver)`` gives the seconds left) is put off that long instead,
    its attempts untouched."""
    await serialise_claims(conn, WEBHOOK_LOCK_KEY)
    key = batch_jobs.c.key_id
    joined = wd.join(batch_jobs, batch_jobs.c.id == wd.c.batch_id)
    in_flight = await conn.execute(
        select(key, func.count())
        .select_from(joined)
        .where(
            wd.c.lease_owner.is_not(None),
            wd.c.lease_expires_at > now,
            wd.c.delivered_at.is_(None),
            wd.c.failed_at.is_(None),
        )
        .group_by(key)
    )
    busy: dict[str | None, int] = {row[0]: int(row[1]) for row in in_flight}
    rank = func.row_number().over(
        partition_by=key, order_by=(wd.c.next_attempt_at, wd.c.created_at)
    )
    ranked = (
        select(
            wd.c.id,
            wd.c.url,
            wd.c.next_attempt_at.label("due_at"),
            key.label("key_id"),
            rank.label("rank"),
        )
        .select_from(joined)
        .where(wd.c.next_attempt_at <= now)
        .subquery()
    )
    candidates = (
        await conn.execute(
            select(ranked)
            .where(ranked.c.rank <= per_key)
            .order_by(ranked.c.rank, ranked.c.due_at)
            .limit(limit * 2)
        )
    ).all()
    chosen: list[str] = []
    put_off: dict[str, float] = {}
    for row in candidates:
        wait = paused(receiver_of(row.url)) if paused else None
        if wait is not None:
            put_off[row.id] = wait
        elif busy.get(row.key_id, 0) < per_key and len(chosen) < limit:
            busy[row.key_id] = busy.get(row.key_id, 0) + 1
            chosen.append(row.id)
    for delivery_id, wait in put_off.items():
        await conn.execute(
            update(wd)
            .where(wd.c.id == delivery_id, wd.c.next_attempt_at <= now)
            .values(
                next_attempt_at=now + timedelta(seconds=wait),
                last_error="receiver paused: it timed out several times in a row",
            )
        )
    if not chosen:
        return []
    rows = await conn.execute(
        update(wd)
        .where(wd.c.id.in_(chosen), wd.c.next_attempt_at <= now)
        .values(lease_owner=owner, lease_expires_at=lease_until, next_attempt_at=lease_until)
        .returning(
            wd.c.id,
            wd.c.event_id,
            wd.c.batch_id,
            wd.c.url,
            wd.c.event_type,
            wd.c.payload,
            wd.c.attempts,
            wd.c.max_attempts,
            wd.c.created_at,
        )
    )
    order = {delivery_id: n for n, delivery_id in enumerate(chosen)}
    return sorted(rows.all(), key=lambda r: order[r.id])


def receiver_of(url: str) -> str:
    """The receiver a URL leads to (host and port), as the breaker counts it."""
    target = parse_target(url)
    return url if isinstance(target, str) else f"{target.host}:{target.port}"


async def signing_secrets(
    conn: AsyncConnection, batch_ids: list[str], *, fallback: str | None, now: datetime
) -> dict[str, tuple[str, ...]]:
    """Per batch, the secrets to sign with: the key's current one (else ``fallback``), then
    its previous one while the rotation's overlap lasts."""
    keys = enterprise_api_keys
    rows = (
        await conn.execute(
            select(
                batch_jobs.c.id,
                keys.c.webhook_secret,
                keys.c.webhook_secret_previous,
                keys.c.webhook_secret_previous_expires_at,
            )
            .select_from(batch_jobs.outerjoin(keys, keys.c.id == batch_jobs.c.key_id))
            .where(batch_jobs.c.id.in_(batch_ids))
        )
    ).all()
    out: dict[str, tuple[str, ...]] = {}
    for row in rows:
        current = row.webhook_secret or fallback
        found = [current] if current else []
        expires = row.webhook_secret_previous_expires_at
        if (
            current
            and row.webhook_secret_previous
            and expires is not None
            and expires > now
            and row.webhook_secret_previous != current
        ):
            found.append(row.webhook_secret_previous)
        out[row.id] = tuple(found)
    return out


async def deliver_due(
    rt: Runtime, *, owner: str, limit: int = 50, rng: random.Random | None = None
) -> tuple[int, int]:
    """Send every due webhook (up to ``limit``); returns (delivered, failed attempts)."""
    due = await claim_due(rt, owner=owner, limit=limit)
    if not due:
        return 0, 0
    return await send_claimed(rt, due, owner=owner, rng=rng)


async def claim_due(rt: Runtime, *, owner: str, limit: int = 50) -> list[Due]:
    """Claim due events (see :func:`claim`) with what is needed to send them."""
    settings = rt.settings
    now = rt.clock.now()
    lease_until = now + timedelta(seconds=lease_seconds(settings.webhook_timeout_ms))
    async with rt.engine.begin() as conn:
        rows = await claim(
            conn,
            owner=owner,
            now=now,
            lease_until=lease_until,
            limit=limit,
            paused=lambda receiver: rt.webhook_breaker.paused_for(receiver, rt.clock.monotonic()),
        )
        if not rows:
            return []
        secrets = await signing_secrets(
            conn, sorted({r.batch_id for r in rows}), fallback=settings.webhook_secret, now=now
        )
    return [
        Due(
            id=r.id,
            event_id=r.event_id,
            batch_id=r.batch_id,
            url=r.url,
            event_type=r.event_type,
            payload=r.payload,
            attempts=r.attempts,
            max_attempts=r.max_attempts,
            secrets=secrets.get(r.batch_id, ()),
        )
        for r in rows
    ]


async def send_claimed(
    rt: Runtime, due: list[Due], *, owner: str, rng: random.Random | None = None
) -> tuple[int, int]:
    """Send claimed events at once; returns (delivered, failed attempts)."""
    rng = rng or random.Random()
    # Each event is recorded as soon as its attempt ends: a receiver that answers at once
    # is done while a slow one is still waited for.
    results = await asyncio.gather(*(_deliver_one(rt, d, owner=owner, rng=rng) for d in due))
    sent = sum(1 for r in results if r is True)
    failed = sum(1 for r in results if r is False)
    return sent, failed


async def _deliver_one(rt: Runtime, d: Due, *, owner: str, rng: random.Random) -> bool | None:
    """Send one claimed event and record it: True delivered, False failed, None unrecorded."""
    outcome = await attempt(rt, d)
    receiver = receiver_of(d.url)
    if outcome.status is not None:
        rt.webhook_breaker.answered(receiver)
    elif (outcome.error or "").startswith("timeout"):
        rt.webhook_breaker.timed_out(receiver, rt.clock.monotonic())
    try:
        async with rt.engine.begin() as conn:
            result = await record(conn, d, outcome, owner=owner, now=rt.clock.now(), rng=rng)
    except Exception:
        # The lease runs out and the event is tried again: at least once.
        log.exception(
            "could not record a webhook attempt",
            extra={"batch_id": d.batch_id, "event_id": d.event_id, "action": "webhook"},
        )
        return None
    rt.metrics.webhooks.labels(result).inc()
    extra = {
        "batch_id": d.batch_id,
        "event_id": d.event_id,
        "event": d.event_type,
        "action": "webhook",
        "outcome": result,
        "status": outcome.status,
        "attempt": d.attempts + 1,
    }
    if outcome.ok:
        log.info("webhook delivered", extra=extra)
    else:
        log.warning("webhook attempt failed: %s", outcome.error, extra=extra)
    return outcome.ok


# --- one attempt -----------------------------------------------------------------------


def refused_address(address: str) -> bool:
    """True for an address a webhook must not reach: anything not globally routable."""
    return non_public_address(address)


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, in the resolver's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    out: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in out:
            out.append(address)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def attempt(rt: Runtime, d: Due) -> Outcome:
    """Send one event once; never raises."""
    timeout = rt.settings.webhook_timeout_ms / 1000
    try:
        async with asyncio.timeout(timeout):
            return await _send(rt, d, timeout)
    except TimeoutError:
        return Outcome(ok=False, error=f"timeout: no answer within {timeout:g} s")
    except Exception as exc:  # anything unexpected is a failed attempt, not a crash
        log.exception(
            "webhook attempt crashed", extra={"batch_id": d.batch_id, "action": "webhook"}
        )
        return Outcome(ok=False, error=f"error: {type(exc).__name__}")


def _answered(status: int, headers: Mapping[str, str]) -> Outcome:
    """What the receiver's answer makes of the attempt: a 2xx delivers; a redirect is
    refused (never followed); anything else fails, with its Retry-After."""
    if 200 <= status < 300:
        return Outcome(ok=True, status=status)
    if 300 <= status < 400:
        where = headers.get("Location", "")
        return Outcome(
            ok=False,
            status=status,
            error=f"redirect refused: HTTP {status}" + (f" to {where[:200]}" if where else ""),
        )
    return Outcome(
        ok=False,
        status=status,
        error=f"HTTP {status}",
        retry_after=_retry_after(headers.get("Retry-After")),
    )


async def _send(rt: Runtime, d: Due, timeout: float) -> Outcome:
    # The same parse as at creation: a URL refused there is refused here, without a
    # traceback, and ``2130706433`` or ``0x7f.1`` is the loopback address it means.
    target = parse_target(d.url)
    if isinstance(target, str):
        return Outcome(ok=False, error=f"invalid URL: {target}")
    url = URL(d.url)
    host, port = target.host, target.port
    if target.literal:
        addresses = [host]
    else:
        try:
            addresses = await resolve(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            return Outcome(ok=False, error=f"DNS failure: cannot resolve {host} ({exc})")
    if not addresses:
        return Outcome(ok=False, error=f"DNS failure: no address for {host}")
    if not rt.settings.allow_private_webhooks:
        bad = [a for a in addresses if refused_address(a)]
        if bad:
            return Outcome(
                ok=False,
                error=f"private address refused: {host} resolves to "
                f"{bad[0]}, which is not a public address",
            )
    body = encode_body(d.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": url.host_port_subcomponent or host,
        "x-batch-id": d.batch_id,
        "x-webhook-event": d.event_type,
        **signature_headers(d.secrets, d.event_id, int(time.time()), body),
    }
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    last = Outcome(ok=False, error=f"connection failed: {host}")
    for address in addresses[:MAX_ADDRESSES]:
        try:
            async with rt.http.post(
                url.with_host(address),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=client_timeout,
                server_hostname=host if url.scheme == "https" else None,
            ) as response:
                return _answered(response.status, response.headers)
        except aiohttp.ClientConnectorCertificateError as exc:
            return Outcome(ok=False, error=f"TLS certificate refused: {exc.certificate_error}")
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            last = Outcome(
                ok=False,
                error=("connection refused" if refused else f"connection failed: {exc.os_error}")
                + f" ({address} port {port})",
            )
            continue  # the host's next address, if any
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return Outcome(ok=False, error=f"timeout: no answer within {timeout:g} s")
        except aiohttp.ClientError as exc:
            return Outcome(ok=False, error=f"connection error: {type(exc).__name__}: {exc}"[:500])
    return last
