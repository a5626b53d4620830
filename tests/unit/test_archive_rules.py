"""The result archive's pure rules: store specs, object keys, video signatures, back-off
and the deadline, retention."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vidbatch.domain.archive import (
    DEFAULT_LOCAL_DIR,
    expired_before,
    next_attempt,
    parse_store_spec,
    thumbnail_key,
    video_key,
    video_kind,
)
from vidbatch.providers.simulator.app import padded_video, sample_video

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_store_specs(tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path}/db/v.db"
    assert parse_store_spec("", database_url=sqlite).root == tmp_path / "db" / DEFAULT_LOCAL_DIR
    assert parse_store_spec(None, database_url="postgresql://h/db").kind == "none"
    assert parse_store_spec(" NONE ", database_url=sqlite).kind == "none"
    assert parse_store_spec("results", database_url=sqlite).root == Path("results").resolve()
    s3 = parse_store_spec("s3://b/x/y/", database_url=sqlite)
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "b", "x/y")


@pytest.mark.parametrize("bad", ["s3://", "gs:///x", "ftp://h/x", "file://host/x", "file://rel"])
def test_store_specs_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_store_spec(bad, database_url="sqlite:///v.db")


def test_keys_are_the_items_own() -> None:
    assert video_key("b1", "i1") == "videos/b1/i1.mp4"
    assert thumbnail_key("b1", "i1") == "thumbnails/b1/i1.jpg"


def test_video_kind() -> None:
    assert video_kind(sample_video()[:12]) == "mp4"
    assert video_kind(padded_video(sample_video(), 100)[:12]) == "mp4"
    assert video_kind(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f") == "webm"
    assert video_kind(b"<!doctype html>") is None
    assert video_kind(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d") is None
    assert video_kind(b"") is None


def test_back_off_grows_and_stops_at_the_deadline() -> None:
    rng = random.Random(1)
    delays = []
    for attempts in range(1, 9):
        at = next_attempt(attempts, now=NOW, succeeded_at=NOW, deadline_seconds=900, rng=rng)
        assert at is not None
        delays.append((at - NOW).total_seconds())
    assert 1.0 <= delays[0] <= 2.0  # 2 s, jittered down to half
    assert all(d <= 60.0 for d in delays)
    assert delays[-1] >= 30.0
    late = NOW + timedelta(seconds=890)
    assert next_attempt(8, now=late, succeeded_at=NOW, deadline_seconds=900, rng=rng) is None


def test_retention() -> None:
    assert expired_before(NOW, 0) is None
    assert expired_before(NOW, 30) == NOW - timedelta(days=30)
