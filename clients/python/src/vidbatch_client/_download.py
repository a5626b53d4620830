"""Where ``download`` puts files and when a file already there counts as downloaded."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

from vidbatch_client.models import Item

CHUNK = 1 << 16


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
