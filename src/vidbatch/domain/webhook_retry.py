"""When a failed webhook is tried again: a pure rule, no clock, no I/O.

After failed attempt ``n`` the next one waits ``SCHEDULE[n-1]`` (the last entry once past
the end), stretched by a random 0–20 % so that receivers coming back from an outage are
not hit by every sender at the same second. With the default ``ENTERPRISE_WEBHOOK_RETRIES``
(3, so 4 attempts) an event is tried at about 0 s, 30 s, 2.5 min and 12.5 min, then marked
failed: short enough that a customer restarting its receiver hears the news within
minutes, long enough to ride out a deploy. More retries continue at 1 h, 4 h and then every
8 h, so a receiver down overnight still gets its events the next morning.

A receiver answering 429 or 503 with ``Retry-After`` is believed, up to the 8 h cap.
"""

from __future__ import annotations

import random

SCHEDULE: tuple[float, ...] = (30, 120, 600, 3600, 4 * 3600, 8 * 3600)
CAP = SCHEDULE[-1]
JITTER = 0.2


def next_delay(attempts: int, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts (``attempts`` ≥ 1)."""
    base = SCHEDULE[min(max(attempts, 1), len(SCHEDULE)) - 1]
    delay = base * (1 + JITTER * rng.random())
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return min(delay, CAP)
