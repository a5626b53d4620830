"""The archive lane: copy each succeeded video from the provider's short-lived URL into the
result store, with a JPEG thumbnail of its first frame, its SHA-256, size, duration and
resolution; and delete files past retention.

An item is claimed like every other job (a lease; no transaction is held while bytes move):

1. **download** the provider's URL into a private temporary file, streaming: the host is
   resolved and refused when it is private, loopback or link-local (as webhook delivery
   does, unless ``VIDBATCH_ALLOW_PRIVATE_URLS``), the request goes to the checked address,
   redirects are followed by hand (at most :data:`MAX_REDIRECTS`, each checked the same
   way), the first bytes must be an MP4 or WebM, the body may not exceed
   ``VIDBATCH_ARCHIVE_MAX_BYTES``, and it is hashed as it arrives;
2. **probe** it with PyAV (in a thread): resolution, duration, first frame as JPEG;
3. **put** the thumbnail, then the video, under keys derived from the item alone
   (``videos/<batch>/<item>.mp4``): a put is atomic, and a worker that dies mid-archive
   leaves nothing at the key; the one that takes over after the lease writes the same key,
   so an item never has two objects;
4. **record** the outcome fenced on the lease.

The whole attempt is bounded by ``VIDBATCH_ARCHIVE_TIMEOUT_SECONDS``. A 403/404/410, a body
that is not a video, an oversize one or a refused address gives up at once; anything else
(5xx, a dropped connection, the store unreachable) is retried with back-off until
``VIDBATCH_ARCHIVE_DEADLINE_SECONDS`` after the video's success, then given up. An item whose
archive gave up keeps the provider's URL with ``archive_status: failed`` and stays charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from vidbatch import __version__
from vidbatch.db.engine import single
from vidbatch.domain.archive import (
    GONE_STATUSES,
    MAGIC_BYTES,
    ArchiveGiveUp,
    ArchiveRetry,
    expired_before,
    next_attempt,
    thumbnail_key,
    video_key,
    video_kind,
)
from vidbatch.services import archive as records
from vidbatch.services.tasks import Fence
from vidbatch.storage import ResultStore, StoreError, delete, put_file
from vidbatch.storage.media import NotAVideo, Probe, probe
from vidbatch.webhooks.delivery import refused_address, resolve
from vidbatch.worker import claims

if TYPE_CHECKING:
    from vidbatch.runtime import Runtime

log = logging.getLogger(__name__)

USER_AGENT = f"vidbatch-archive/{__version__}"
MAX_REDIRECTS = 3
CHUNK = 256 * 1024
#: Items whose files past retention are deleted per round.
RETENTION_BATCH = 100
#: Added to the attempt's time-out to make the lease: time to record the outcome.
LEASE_MARGIN = 60.0


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str
    kind: str


def _pinned(url: URL, address: str) -> tuple[URL, dict[str, str], str | None]:
    """The URL aimed at ``address``, with the original Host and TLS server name."""
    host = url.raw_host or ""
    headers = {"Host": url.host_port_subcomponent or host, "User-Agent": USER_AGENT}
    return url.with_host(address), headers, host if url.scheme == "https" else None


async def _addresses(url: URL, allow_private: bool) -> list[str]:
    host = url.raw_host
    if url.scheme not in ("http", "https") or not host:
        raise ArchiveGiveUp("invalid result URL: not http(s) with a host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ArchiveRetry(f"DNS failure: cannot resolve {host} ({exc})") from None
    if not addresses:
        raise ArchiveRetry(f"DNS failure: no address for {host}")
    if not allow_private:
        bad = [a for a in addresses if refused_address(a)]
        if bad:
            raise ArchiveGiveUp(
                f"private address refused: {host} resolves to {bad[0]}, "
                "which is not a public address"
            )
    return addresses


async def _save(response: aiohttp.ClientResponse, dest: Path, max_bytes: int) -> Downloaded:
    """Stream the body into ``dest``: checked, bounded and hashed as it arrives."""
    length = response.content_length
    if length is not None and length > max_bytes:
        raise ArchiveGiveUp(f"video too large: {length} bytes (limit {max_bytes})")
    digest = hashlib.sha256()
    size = 0
    head = b""
    kind: str | None = None
    with dest.open("wb") as out:
        async for chunk in response.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ArchiveGiveUp(f"video too large: over {max_bytes} bytes")
            if kind is None:
                head += chunk[: MAGIC_BYTES - len(head)]
                if len(head) >= MAGIC_BYTES:
                    kind = video_kind(head)
                    if kind is None:
                        raise ArchiveGiveUp("not a video: the body is neither MP4 nor WebM")
            digest.update(chunk)
            out.write(chunk)
    if kind is None:
        kind = video_kind(head)
        if kind is None:
            raise ArchiveGiveUp("not a video: the body is neither MP4 nor WebM")
    return Downloaded(size=size, sha256=digest.hexdigest(), kind=kind)


async def download(
    http: aiohttp.ClientSession, url: str, dest: Path, *, max_bytes: int, allow_private: bool
) -> Downloaded:
    """Fetch ``url`` into ``dest``; ArchiveGiveUp or ArchiveRetry when it cannot."""
    target = URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await _addresses(target, allow_private)
        last: Exception | None = None
        for address in addresses[:3]:
            pinned, headers, server_name = _pinned(target, address)
            try:
                async with http.get(
                    pinned,
                    headers=headers,
                    allow_redirects=False,
                    server_hostname=server_name,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                ) as response:
                    status = response.status
                    if 300 <= status < 400 and response.headers.get("Location"):
                        target = target.join(URL(response.headers["Location"]))
                        break
                    if status in GONE_STATUSES:
                        raise ArchiveGiveUp(f"the provider's file answered HTTP {status}")
                    if status != 200:
                        raise ArchiveRetry(f"the provider's file answered HTTP {status}")
                    return await _save(response, dest, max_bytes)
            except aiohttp.ClientConnectorError as exc:
                last = exc
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ArchiveRetry(f"download failed: {type(exc).__name__}: {exc}"[:300]) from None
        else:
            raise ArchiveRetry(f"connection failed: {last}"[:300])
    raise ArchiveGiveUp(f"too many redirects (more than {MAX_REDIRECTS})")


async def copy_to_store(rt: Runtime, store: ResultStore, row: Any, workdir: Path) -> records.Stored:
    """Download, probe and store one item's video and thumbnail."""
    s = rt.settings
    path = workdir / "video"
    got = await download(
        rt.http,
        row.video_url,
        path,
        max_bytes=s.archive_max_bytes,
        allow_private=s.allow_private_urls,
    )
    try:
        found: Probe = await asyncio.to_thread(probe, path)
    except NotAVideo as exc:
        raise ArchiveGiveUp(f"not a video: {exc}") from None
    thumb = thumbnail_key(row.batch_job_id, row.id) if found.thumbnail_jpeg else None
    if thumb and found.thumbnail_jpeg:
        await put_file(store, thumb, found.thumbnail_jpeg)
    key = video_key(row.batch_job_id, row.id)
    await put_file(store, key, path)
    return records.Stored(
        video_key=key,
        thumbnail_key=thumb,
        size_bytes=got.size,
        sha256=got.sha256,
        duration_seconds=found.duration_seconds,
        width=found.width,
        height=found.height,
    )


def lease_seconds(rt: Runtime) -> float:
    return float(rt.settings.archive_timeout_seconds) + LEASE_MARGIN


async def claim(rt: Runtime, owner: str, limit: int) -> list[Any]:
    now = rt.clock.now()
    async with single(rt.engine) as conn:
        return await claims.claim_for_archive(
            conn,
            owner=owner,
            now=now,
            lease_until=now + timedelta(seconds=lease_seconds(rt)),
            limit=limit,
        )


async def archive_one(rt: Runtime, row: Any, owner: str, rng: random.Random) -> str:
    """Archive one claimed item; returns the outcome (``stored``, ``retry``, ``failed``,
    ``lost`` when the lease was taken over meanwhile)."""
    store = rt.result_store
    fence = Fence(owner, row.lease_token)
    extra = {"task_id": row.id, "batch_id": row.batch_job_id, "action": "archive"}
    error: str
    give_up = False
    succeeded_at: datetime = row.completed_at or rt.clock.now()
    hard_deadline = succeeded_at + timedelta(
        seconds=rt.settings.archive_deadline_seconds + lease_seconds(rt)
    )
    if store is None:  # the store was switched off after this item succeeded
        error, give_up = "no result store configured", True
    elif rt.clock.now() >= hard_deadline:
        # Only an attempt that never recorded its outcome (its worker died, again and
        # again) leaves an item due this late: end it, or its batch would never settle.
        error, give_up = "past the archive deadline: earlier attempts never finished", True
    else:
        try:
            with tempfile.TemporaryDirectory(prefix="vidbatch-archive-") as tmp:
                async with asyncio.timeout(float(rt.settings.archive_timeout_seconds)):
                    stored = await copy_to_store(rt, store, row, Path(tmp))
            async with rt.engine.begin() as conn:
                ok = await records.mark_stored(conn, row.id, fence, stored, now=rt.clock.now())
            outcome = "stored" if ok else "lost"
            log.info(
                "video archived" if ok else "archive result dropped: lease lost",
                extra={**extra, "outcome": outcome, "bytes": stored.size_bytes},
            )
            return outcome
        except ArchiveGiveUp as exc:
            error, give_up = exc.reason, True
        except ArchiveRetry as exc:
            error = exc.reason
        except StoreError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"timeout: not archived within {rt.settings.archive_timeout_seconds:g} s"
        except Exception as exc:  # a full disk, a decoder error: retried until the deadline
            log.exception("archive attempt failed unexpectedly", extra=extra)
            error = f"unexpected error: {type(exc).__name__}: {exc}"[:300]
    return await _failed(rt, row, fence, error, give_up=give_up, rng=rng, extra=extra)


async def _failed(
    rt: Runtime,
    row: Any,
    fence: Fence,
    error: str,
    *,
    give_up: bool,
    rng: random.Random,
    extra: dict[str, Any],
) -> str:
    now = rt.clock.now()
    succeeded_at: datetime = row.completed_at or now
    at = None
    if not give_up:
        at = next_attempt(
            row.archive_attempts,
            now=now,
            succeeded_at=succeeded_at,
            deadline_seconds=rt.settings.archive_deadline_seconds,
            rng=rng,
        )
        if at is None:
            error = f"gave up at the archive deadline: {error}"
    async with rt.engine.begin() as conn:
        if at is not None:
            ok = await records.retry_later(conn, row.id, fence, at=at, error=error, now=now)
            outcome = "retry"
        else:
            ok = await records.give_up(conn, row.id, fence, reason=error, now=now)
            outcome = "failed"
    if not ok:
        outcome = "lost"
    if outcome == "failed":
        log.warning("archive gave up: %s", error, extra={**extra, "outcome": outcome})
    else:
        log.info("archive attempt failed: %s", error, extra={**extra, "outcome": outcome})
    return outcome


async def expire_due(rt: Runtime) -> int:
    """Delete the files of items past retention and mark them ``expired``."""
    store = rt.result_store
    now = rt.clock.now()
    before = expired_before(now, rt.settings.result_retention_days)
    if store is None or before is None:
        return 0
    async with rt.engine.connect() as conn:
        rows = await records.past_retention(conn, before=before, limit=RETENTION_BATCH)
    if not rows:
        return 0
    keys = [k for r in rows for k in (r.archive_key, r.thumbnail_key) if k]
    await delete(store, keys)
    async with rt.engine.begin() as conn:
        expired = await records.mark_expired(conn, [r.id for r in rows], now=now)
    log.info("archived files expired", extra={"action": "retention", "count": expired})
    return expired
