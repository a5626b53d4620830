"""When a task next needs attention: poll backoff, submit retries, deadlines. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PollSchedule:
    """The original's backoff: ``first`` seconds before the first poll, ``early`` after
    each of the first three polls, ``late`` after that."""

    first: float = 5.0
    early: float = 15.0
    late: float = 30.0

    def delay_after(self, poll_count: int) -> float:
        """Seconds to wait after ``poll_count`` polls have been made (0 = just submitted)."""
        if poll_count <= 0:
            return self.first
        if poll_count <= 3:
            return self.early
        return self.late

    def next_poll_at(self, now: datetime, poll_count: int) -> datetime:
        return now + timedelta(seconds=self.delay_after(poll_count))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient provider errors."""

    base: float = 2.0
    cap: float = 300.0
    max_attempts: int = 5

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempt`` (1-based); never less than the
        provider's ``Retry-After``."""
        raw = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        jittered = raw * (0.5 + rng.random() / 2)
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, self.cap))
        return jittered

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


def timed_out(
    *, now: datetime, deadline: datetime | None, poll_count: int, max_poll_count: int
) -> bool:
    """A task still running has waited too long: too many polls or past its deadline."""
    return poll_count >= max_poll_count or (deadline is not None and now >= deadline)
