"""Timestamps as vidbatch keeps them: timezone-aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """A time as the APIs write it: ISO 8601, UTC, ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
