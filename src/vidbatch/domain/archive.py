"""The result archive's pure rules: where a store is, what its objects are called, what a
video's first bytes look like, and when a failed archive is tried again or given up.

No I/O here: ``vidbatch.storage`` talks to the store, the worker's archive lane downloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: The store chosen when ``VIDBATCH_RESULT_STORE`` is unset: this directory beside the
#: SQLite file. On PostgreSQL (several machines) there is no good local default: none.
DEFAULT_LOCAL_DIR = "vidbatch-results"


class ArchiveStatus(StrEnum):
    """A succeeded item's archive (``video_tasks.archive_status``); NULL when no store is
    configured or the item did not succeed."""

    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class StoreSpec:
    """Where results go: ``kind`` is ``none``, ``local`` (``root`` is an absolute
    directory), or ``s3``, ``gcs``, ``azure`` (``bucket`` and ``prefix``)."""

    kind: str
    root: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def enabled(self) -> bool:
        return self.kind != "none"


NONE = StoreSpec("none")

#: URL schemes of object stores, and the kind each opens: S3 and anything S3-compatible,
#: Google Cloud Storage, Azure Blob Storage (container as the "bucket").
CLOUD_SCHEMES = {"s3": "s3", "gs": "gcs", "az": "azure"}


def _sqlite_dir(database_url: str) -> Path | None:
    """The directory of a SQLite database file, None for anything else."""
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return Path.cwd()
    return Path(path).expanduser().resolve().parent


def parse_store_spec(value: str | None, *, database_url: str) -> StoreSpec:
    """The store ``VIDBATCH_RESULT_STORE`` names; ValueError with a clear message when it
    names none. Unset means ``./vidbatch-results`` beside a SQLite file (none on PostgreSQL)."""
    text = (value or "").strip()
    if not text:
        where = _sqlite_dir(database_url)
        return StoreSpec("local", root=where / DEFAULT_LOCAL_DIR) if where else NONE
    if text.lower() == "none":
        return NONE
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in CLOUD_SCHEMES:
        if not parts.netloc:
            raise ValueError(f"a {scheme}:// store needs a bucket: {scheme}://bucket/prefix")
        return StoreSpec(CLOUD_SCHEMES[scheme], bucket=parts.netloc, prefix=parts.path.strip("/"))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// store must be file:///absolute/path")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ValueError("a file:// store must be file:///absolute/path")
        return StoreSpec("local", root=path)
    if scheme and len(scheme) > 1:  # a Windows drive letter is not a scheme
        raise ValueError(
            f"unknown store {scheme}://; use a directory, file:///abs/path, s3://bucket/prefix "
            "(gs://, az:// too) or none"
        )
    return StoreSpec("local", root=Path(text).expanduser().resolve())


def video_key(batch_id: str, item_id: str) -> str:
    """The object a video is stored under: one per item, whoever archives it."""
    return f"videos/{batch_id}/{item_id}.mp4"


def thumbnail_key(batch_id: str, item_id: str) -> str:
    return f"thumbnails/{batch_id}/{item_id}.jpg"


def batch_prefixes(batch_id: str) -> tuple[str, str]:
    """The two prefixes holding one batch's files."""
    return f"videos/{batch_id}/", f"thumbnails/{batch_id}/"


#: Bytes needed to recognise a video.
MAGIC_BYTES = 12
#: ISO base media boxes an MP4 (or QuickTime) file may begin with.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_EBML = b"\x1a\x45\xdf\xa3"  # WebM / Matroska


def video_kind(head: bytes) -> str | None:
    """``mp4`` or ``webm`` from a file's first bytes, None when it is neither."""
    if head.startswith(_EBML):
        return "webm"
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mp4"
    return None


#: HTTP statuses of a result URL that will never serve the file: give up at once.
GONE_STATUSES = frozenset({403, 404, 410})


class ArchiveGiveUp(Exception):
    """Archiving this item can never succeed (the file is gone, not a video, too large,
    at a refused address): it keeps the provider's URL, marked failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ArchiveRetry(Exception):
    """A transient failure (the provider's file server or the store): try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Back-off between archive attempts: 2 s doubling up to a minute, with jitter.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 60.0


def next_attempt(
    attempts: int,
    *,
    now: datetime,
    succeeded_at: datetime,
    deadline_seconds: int,
    rng: random.Random,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None when the next try would
    fall after the deadline (``deadline_seconds`` after the video's success): give up."""
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempts - 1))
    delay *= 0.5 + rng.random() / 2
    at = now + timedelta(seconds=delay)
    if at >= succeeded_at + timedelta(seconds=deadline_seconds):
        return None
    return at


def expired_before(now: datetime, retention_days: int) -> datetime | None:
    """Files archived before this time are past retention; None when kept forever."""
    if retention_days <= 0:
        return None
    return now - timedelta(days=retention_days)
