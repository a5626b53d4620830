"""Where ``download`` puts files and when a file already there counts as downloaded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from vidbatch_client._core import Attempts, RetryPolicy, retry_after, should_retry
from vidbatch_client.errors import DownloadError
from vidbatch_client.models import Item

CHUNK = 1 << 16


class RetryLater(Exception):
    """A file answer worth retrying (429, 5xx, a part to start again, a wrong checksum)."""

    def __init__(self, retry_after: float | None, reason: str = "") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class DownloadedItem:
    """One item's files: ``skipped`` when they were already present and checked out."""

    item_id: str
    index: int
    path: Path
    sha256: str
    size: int
    skipped: bool
    thumbnail_path: Path | None = None


@dataclass
class DownloadReport:
    """What ``download`` did: ``items`` the videos present now (downloaded or skipped),
    ``missing`` the items without a video (failed, or not finished)."""

    items: list[DownloadedItem] = field(default_factory=list)
    missing: list[Item] = field(default_factory=list)

    @property
    def downloaded(self) -> int:
        return sum(1 for i in self.items if not i.skipped)

    @property
    def skipped(self) -> int:
        return sum(1 for i in self.items if i.skipped)


def video_path(dest: Path, item: Item) -> Path:
    """``<dest>/<index, 5 digits>-<item_id>.mp4``: stable across runs, sorted by index."""
    return dest / f"{item.index:05d}-{item.item_id}.mp4"


def thumbnail_path(dest: Path, item: Item, url: str) -> Path:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix not in {".jpg", ".jpeg", ".png", ".webp"}:
        suffix = ".jpg"
    return dest / f"{item.index:05d}-{item.item_id}{suffix}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def already_there(path: Path, sha256: str | None, size: int | None) -> str | None:
    """The file's SHA-256 when it is present and matches what the server says (its size and
    SHA-256 when known), else None. A file is only ever renamed into place complete, so a
    present file without a known hash counts as downloaded."""
    if not path.is_file():
        return None
    if size is not None and path.stat().st_size != size:
        return None
    actual = sha256_of(path)
    if sha256 is not None and actual != sha256.lower():
        return None
    return actual


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def discard(part: Path) -> None:
    part.unlink(missing_ok=True)


def make_folder(dest: str | os.PathLike[str]) -> Path:
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resume_headers(part: Path, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """How much of an interrupted download is there, and the headers asking for the rest."""
    have = part.stat().st_size if part.exists() else 0
    return have, {**headers, "range": f"bytes={have}-"} if have else headers


def open_part(part: Path, status: int, have: int) -> BinaryIO:
    """The part file to write an answer into: appended to for 206 (the rest), else anew."""
    return part.open("ab" if status == 206 and have else "wb")


def finish(part: Path, path: Path, sha256: str | None, size: int | None) -> str | None:
    """Move a complete part into place and return its SHA-256; None (the part removed) when
    it does not match what the server says."""
    actual = sha256_of(part)
    if (sha256 and actual != sha256.lower()) or (size is not None and part.stat().st_size != size):
        discard(part)
        return None
    os.replace(part, path)
    return actual


def split(items: Iterable[Item]) -> tuple[list[Item], list[Item]]:
    """The items with a video to download, and those without (failed or unfinished)."""
    wanted: list[Item] = []
    missing: list[Item] = []
    for item in items:
        (wanted if item.status == "succeeded" and item.video_url else missing).append(item)
    return wanted, missing


@dataclass
class ItemPlan:
    """What to fetch for one item: its video unless ``present`` (its SHA-256) says it is
    there, and its thumbnail when ``thumbnail`` is set and not there yet."""

    item: Item
    path: Path
    present: str | None
    thumbnail: Path | None
    fetch_thumbnail: bool

    def result(self, digest: str) -> DownloadedItem:
        return DownloadedItem(
            item_id=self.item.item_id,
            index=self.item.index,
            path=self.path,
            sha256=digest,
            size=self.path.stat().st_size,
            skipped=self.present is not None and not self.fetch_thumbnail,
            thumbnail_path=self.thumbnail,
        )


def plan_item(folder: Path, item: Item, thumbnails: bool) -> ItemPlan:
    path = video_path(folder, item)
    thumb = None
    if thumbnails and item.thumbnail_url:
        thumb = thumbnail_path(folder, item, item.thumbnail_url)
    return ItemPlan(
        item=item,
        path=path,
        present=already_there(path, item.video_sha256, item.video_size_bytes),
        thumbnail=thumb,
        fetch_thumbnail=thumb is not None and not thumb.is_file(),
    )


def check_file_answer(url: str, part: Path, response: httpx.Response) -> None:
    """Raise RetryLater or DownloadError unless the answer is the file (200) or its rest
    (206)."""
    if response.status_code == 416:  # the part is already whole (or wrong): start again
        discard(part)
        raise RetryLater(0)
    if should_retry(response):
        raise RetryLater(retry_after(response))
    if response.status_code not in (200, 206):
        raise DownloadError(f"GET {url}: HTTP {response.status_code}")


def file_attempts(policy: RetryPolicy, url: str, path: Path) -> Attempts:
    return Attempts(policy, lambda exc: DownloadError(f"{path.name} from {url}: {exc!r}"))


def file_headers(url: str, base_url: str, api_key: str) -> dict[str, str]:
    """The API key goes to the vidbatch server only, never to another host."""
    same_server = httpx.URL(url).join("/") == httpx.URL(base_url).join("/")
    return {"x-api-key": api_key} if same_server else {}


MISMATCH = "the bytes do not match the server's SHA-256/size"
