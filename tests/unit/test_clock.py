"""The clock the worker reads: the real one is timezone-aware UTC; the fake one moves only
when told to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vidbatch.clock import FakeClock, SystemClock, utcnow


def test_the_system_clock_is_aware_utc_and_monotonic_goes_forward() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs((now - utcnow()).total_seconds()) < 60
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_the_fake_clock_stands_still_until_advanced() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = FakeClock(start)
    assert clock.now() == clock.now() == start
    assert clock.advance(1.5) == start + timedelta(seconds=1.5)
    assert clock.now() == start + timedelta(seconds=1.5)
    assert clock.monotonic() == 1.5
    clock.set(start + timedelta(hours=1))
    assert clock.now() == start + timedelta(hours=1)
    assert clock.monotonic() == 3600


def test_the_fake_clock_starts_at_the_real_time_and_never_goes_back() -> None:
    before = utcnow()
    clock = FakeClock()
    assert before <= clock.now() <= utcnow()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(clock.now() - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2030, 1, 1))  # naive: refused
