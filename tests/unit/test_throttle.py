"""The wrong-token throttle: a sliding window per client, time given by the caller."""

from __future__ import annotations

from vidbatch.domain.throttle import FailureThrottle


def test_the_eleventh_attempt_waits_until_the_oldest_failure_leaves_the_window() -> None:
    throttle = FailureThrottle(limit=10, window=60)
    for second in range(10):
        assert throttle.retry_after("a", float(second)) is None
        throttle.failed("a", float(second))
    assert throttle.retry_after("a", 10.0) == 50
    assert throttle.retry_after("b", 10.0) is None
    assert throttle.retry_after("a", 59.5) == 1
    assert throttle.retry_after("a", 60.0) is None  # the failure at 0 s has left the window
    throttle.failed("a", 60.0)
    assert throttle.retry_after("a", 60.0) == 1  # ten again within the last minute
    throttle.succeeded("a")
    assert throttle.retry_after("a", 60.0) is None


def test_memory_stays_bounded() -> None:
    throttle = FailureThrottle(limit=3, window=60, max_clients=100)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", float(n) / 1000)
        throttle.failed("attacker", float(n) / 1000)
    assert len(throttle._failures) <= 100
    assert throttle.retry_after("attacker", 1.0) is not None
