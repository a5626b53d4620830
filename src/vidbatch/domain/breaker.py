"""A circuit breaker for webhook receivers that keep timing out.

Each attempt that gets no answer within the timeout costs a delivery slot for the whole
timeout. After ``threshold`` time-outs in a row, a receiver is paused for ``cooldown``
seconds: its events wait (without using up attempts) instead of holding slots the other
customers' events need. When the pause ends its events are tried again; if one times out
too, the pause doubles (up to ``max_cooldown``); any answer — even an error status —
closes the breaker. State lives in the process (each worker pauses on its own); ``now`` is
a monotonic time in seconds given by the caller, so tests move time instead of waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Time-outs in a row that pause a receiver.
TIMEOUT_THRESHOLD = 3
#: First pause, in seconds; each further time-out after a pause doubles it.
COOLDOWN_SECONDS = 60.0
MAX_COOLDOWN_SECONDS = 900.0
#: Receivers remembered at most (bounded memory): the oldest state is forgotten.
MAX_RECEIVERS = 10_000


@dataclass
class _State:
    timeouts: int = 0
    paused_until: float = 0.0
    cooldown: float = 0.0


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = TIMEOUT_THRESHOLD,
        cooldown: float = COOLDOWN_SECONDS,
        max_cooldown: float = MAX_COOLDOWN_SECONDS,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._states: dict[str, _State] = {}

    def paused_for(self, receiver: str, now: float) -> float | None:
        """Seconds ``receiver`` stays paused, or None when it may be tried now."""
        state = self._states.get(receiver)
        if state is None or state.paused_until <= now:
            return None
        return state.paused_until - now

    def timed_out(self, receiver: str, now: float) -> None:
        """Count a time-out; the threshold-th in a row (or one after a pause) pauses."""
        state = self._states.get(receiver)
        if state is None:
            if len(self._states) >= MAX_RECEIVERS:
                self._states.pop(next(iter(self._states)))
            state = self._states[receiver] = _State()
        state.timeouts += 1
        # Attempts sent together time out together: one pause for them, not one each.
        if state.timeouts >= self.threshold and state.paused_until <= now:
            state.cooldown = min(self.max_cooldown, state.cooldown * 2 or self.cooldown)
            state.paused_until = now + state.cooldown

    def answered(self, receiver: str) -> None:
        """The receiver answered: it is alive, whatever it said."""
        self._states.pop(receiver, None)

    def timeouts(self, receiver: str) -> int:
        state = self._states.get(receiver)
        return state.timeouts if state else 0
