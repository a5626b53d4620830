"""The clock: the one place that reads the time, so rules and services take ``now`` as an
argument and tests can move time instead of waiting for it.

The worker reads the time from its runtime's clock (``Runtime.clock``): the real
:class:`SystemClock` in production, a :class:`FakeClock` in tests about deadlines and back-off.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going backwards."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that stands still until told to move (tests). Starts at the real time unless
    given ``start``, so rows written just before by code on the real clock are not in its
    future."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (timezone-aware, not before the current time)."""
        if when.tzinfo is None:
            raise ValueError("the time must be timezone-aware")
        self.advance((when - self._now).total_seconds())
