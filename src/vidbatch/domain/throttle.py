"""Throttling wrong admin tokens: a sliding window of failed attempts per client address.

After ``limit`` failures within ``window`` seconds a client is refused — right token or
wrong, so a refusal tells a guesser nothing — until the oldest of them leaves the window.
The counts live in the process that saw the attempts: each process (each ``vidbatch
serve``) throttles on its own, and a restart forgets them.
"""

from __future__ import annotations

import math
from collections import deque

#: Failed attempts allowed per client within the window.
FAILURE_LIMIT = 10
#: Seconds a failed attempt counts.
WINDOW_SECONDS = 60.0
#: Clients remembered at most; beyond it the quietest are forgotten (bounded memory).
MAX_CLIENTS = 10_000


class FailureThrottle:
    """Failed attempts per client; ``now`` is a monotonic time in seconds, given by the
    caller (the runtime's clock), so tests move time instead of waiting."""

    def __init__(
        self,
        limit: int = FAILURE_LIMIT,
        window: float = WINDOW_SECONDS,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[-self.limit] + self.window - now))

    def failed(self, client: str, now: float) -> None:
        """Count a wrong attempt."""
        failures = self._recent(client, now)
        if failures is None:
            if len(self._failures) >= self.max_clients:
                self._forget_quietest()
            failures = self._failures[client] = deque()
        failures.append(now)
        while len(failures) > self.limit:
            failures.popleft()  # only the newest ``limit`` decide when it may try again

    def succeeded(self, client: str) -> None:
        """The right token: the client's failures are forgotten."""
        self._failures.pop(client, None)

    def _forget_quietest(self) -> None:
        by_last = sorted(self._failures, key=lambda c: self._failures[c][-1])
        for client in by_last[: max(1, len(by_last) // 10)]:
            del self._failures[client]
