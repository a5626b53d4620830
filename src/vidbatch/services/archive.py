"""Recording the result archive: an item stored, retried later, given up, expired or
purged (:func:`purge_batch` deletes a batch's files through ``vidbatch.storage`` too).
Every write by the archive lane is one conditional UPDATE fenced on the lease its claim took
(a worker whose lease ran out changes nothing; the one that took over decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.db.schema import video_tasks
from vidbatch.domain.archive import ArchiveStatus, batch_prefixes
from vidbatch.exceptions import ConfigError
from vidbatch.services import batches
from vidbatch.services.tasks import Fence
from vidbatch.storage import ResultStore, delete_prefix

MAX_TEXT = 2000


@dataclass(frozen=True)
class Stored:
    """What the archive lane found out about a video it stored."""

    video_key: str
    thumbnail_key: str | None
    size_bytes: int
    sha256: str
    duration_seconds: float | None
    width: int | None
    height: int | None


def _held(task_id: str, fence: Fence) -> list[Any]:
    return [
        video_tasks.c.id == task_id,
        video_tasks.c.archive_status == ArchiveStatus.PENDING,
        video_tasks.c.lease_owner == fence.owner,
        video_tasks.c.lease_token == fence.token,
    ]


_RELEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


async def mark_stored(
    conn: AsyncConnection, task_id: str, fence: Fence, stored: Stored, *, now: datetime
) -> bool:
    result = await conn.execute(
        update(video_tasks)
        .where(*_held(task_id, fence))
        .values(
            archive_status=ArchiveStatus.STORED,
            archive_due_at=None,
            archive_error=None,
            archived_at=now,
            archive_key=stored.video_key,
            thumbnail_key=stored.thumbnail_key,
            video_size_bytes=stored.size_bytes,
            video_sha256=stored.sha256,
            video_duration_seconds=stored.duration_seconds,
            video_width=stored.width,
            video_height=stored.height,
            updated_at=now,
            **_RELEASE,
        )
    )
    return result.rowcount == 1


async def retry_later(
    conn: AsyncConnection, task_id: str, fence: Fence, *, at: datetime, error: str, now: datetime
) -> bool:
    result = await conn.execute(
        update(video_tasks)
        .where(*_held(task_id, fence))
        .values(archive_due_at=at, archive_error=error[:MAX_TEXT], updated_at=now, **_RELEASE)
    )
    return result.rowcount == 1


async def give_up(
    conn: AsyncConnection, task_id: str, fence: Fence, *, reason: str, now: datetime
) -> bool:
    """The item keeps the provider's URL, marked failed with the reason; it stays charged
    (the video was made)."""
    result = await conn.execute(
        update(video_tasks)
        .where(*_held(task_id, fence))
        .values(
            archive_status=ArchiveStatus.FAILED,
            archive_due_at=None,
            archive_error=reason[:MAX_TEXT],
            updated_at=now,
            **_RELEASE,
        )
    )
    return result.rowcount == 1


async def past_retention(conn: AsyncConnection, *, before: datetime, limit: int) -> list[Any]:
    """Stored items archived before ``before``: their files are due for deletion."""
    rows = await conn.execute(
        select(
            video_tasks.c.id,
            video_tasks.c.batch_job_id,
            video_tasks.c.archive_key,
            video_tasks.c.thumbnail_key,
        )
        .where(
            video_tasks.c.archive_status == ArchiveStatus.STORED,
            video_tasks.c.archived_at < before,
        )
        .order_by(video_tasks.c.archived_at)
        .limit(limit)
    )
    return list(rows.all())


async def mark_expired(conn: AsyncConnection, task_ids: list[str], *, now: datetime) -> int:
    """Stored items whose files were deleted: ``expired`` (their URL is the provider's
    again, long dead by then)."""
    if not task_ids:
        return 0
    result = await conn.execute(
        update(video_tasks)
        .where(
            video_tasks.c.id.in_(task_ids),
            video_tasks.c.archive_status == ArchiveStatus.STORED,
        )
        .values(archive_status=ArchiveStatus.EXPIRED, updated_at=now)
    )
    return int(result.rowcount or 0)


async def stored_in_batch(conn: AsyncConnection, batch_id: str) -> list[str]:
    """The ids of a batch's items whose files are stored."""
    rows = await conn.execute(
        select(video_tasks.c.id).where(
            video_tasks.c.batch_job_id == batch_id,
            video_tasks.c.archive_status == ArchiveStatus.STORED,
        )
    )
    return [str(r) for r in rows.scalars()]


@dataclass(frozen=True)
class Purged:
    batch_id: str
    files_deleted: int
    items_expired: int


async def purge_batch(
    engine: AsyncEngine, store: ResultStore | None, batch_id: str, *, now: datetime
) -> Purged:
    """Delete one batch's archived files now and mark its stored items ``expired``
    (NotFound for an unknown batch). The files go first: a failure leaves the items
    stored, and the purge can be run again."""
    async with engine.connect() as conn:
        await batches.get_batch_row(conn, batch_id)
        ids = await stored_in_batch(conn, batch_id)
    if store is None:
        if ids:  # the files are somewhere this process was not told about
            raise ConfigError(
                "VIDBATCH_RESULT_STORE is none here: set it to the store holding the files"
            )
        return Purged(batch_id=batch_id, files_deleted=0, items_expired=0)
    deleted = 0
    for prefix in batch_prefixes(batch_id):
        deleted += await delete_prefix(store, prefix)
    async with engine.begin() as conn:
        expired = await mark_expired(conn, ids, now=now)
    return Purged(batch_id=batch_id, files_deleted=deleted, items_expired=expired)
