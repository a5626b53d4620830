"""The worker daemon: rounds back to back while there is work, sleeping only until the
next task is due (at most ``VIDBATCH_WORKER_IDLE_SECONDS``), woken early by a callback or
a new batch (in this process, or by NOTIFY on PostgreSQL). Customer webhooks are delivered
by a second loop beside it, so a slow receiver never lengthens a round. Stops gracefully:
the current round gets ``VIDBATCH_SHUTDOWN_GRACE_SECONDS`` to finish; after that its
provider calls still in flight are abandoned (cancelled), and their tasks, still leased,
come back to a worker when the lease runs out."""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import suppress

from vidbatch.db.notify import Listener
from vidbatch.runtime import Runtime
from vidbatch.webhooks.delivery import claim_due, send_claimed
from vidbatch.worker import claims
from vidbatch.worker.round import RoundSummary, new_owner, run_once

log = logging.getLogger(__name__)

#: After a failed round (e.g. the database is down), wait this long before the next.
ERROR_BACKOFF = 2.0
#: Claims of webhook events being sent at once by one worker.
DELIVERY_SENDS = 4


class WorkerLoop:
    def __init__(self, rt: Runtime, *, owner: str | None = None) -> None:
        self.rt = rt
        self.owner = owner or new_owner()
        self.rng = random.Random()
        self._wake = asyncio.Event()
        self._deliver_wake = asyncio.Event()
        self._stopping = False
        self._abandoned = False
        self._round: asyncio.Task[RoundSummary] | None = None
        self._abandon_timer: asyncio.TimerHandle | None = None
        self.rounds = 0
        self.last_summary: RoundSummary | None = None

    def wake(self) -> None:
        """Run the next round now (a callback landed, a batch was created), and look for
        webhook events to send (a callback may have settled a batch itself)."""
        self._wake.set()
        self._deliver_wake.set()

    def stop(self) -> None:
        """Stop after the current round, or abandon it after the shutdown grace."""
        if not self._stopping:
            grace = self.rt.settings.shutdown_grace_seconds
            self._abandon_timer = asyncio.get_running_loop().call_later(grace, self._abandon)
        self._stopping = True
        self._wake.set()
        self._deliver_wake.set()

    def _abandon(self) -> None:
        if self._round is not None and not self._round.done():
            self._abandoned = True
            log.warning(
                "shutdown grace of %g s passed: abandoning the provider calls in flight; "
                "their tasks come back when their leases run out",
                self.rt.settings.shutdown_grace_seconds,
                extra={"action": "abandon", "owner": self.owner},
            )
            self._round.cancel()

    async def run(self) -> None:
        log.info("worker started", extra={"action": "worker_start", "owner": self.owner})
        listener = Listener(self.rt.engine, self.wake)
        listener.start()
        delivery = asyncio.create_task(self._deliver_loop(), name="vidbatch-webhooks")
        try:
            await self._loop()
        finally:
            self._deliver_wake.set()
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(delivery, timeout=self.rt.settings.shutdown_grace_seconds)
            await listener.stop()
            if self._abandon_timer is not None:
                self._abandon_timer.cancel()
        log.info("worker stopped", extra={"action": "worker_stop", "owner": self.owner})

    async def _loop(self) -> None:
        while not self._stopping:
            self._round = asyncio.create_task(
                run_once(self.rt, owner=self.owner, rng=self.rng, deliver_webhooks=False)
            )
            try:
                summary = await self._round
                self.rounds += 1
                self.last_summary = summary
                if summary.settle["settled"] or summary.dispatch["tasks_started"]:
                    self._deliver_wake.set()  # new events in the outbox
                if summary.did_work:
                    continue
                delay = await self._idle_delay()
            except asyncio.CancelledError:
                if self._abandoned:  # the grace ran out: the round was given up
                    return
                raise
            except Exception:
                log.exception("worker round failed", extra={"action": "round"})
                delay = ERROR_BACKOFF
            await self._sleep(delay)

    async def _deliver_loop(self) -> None:
        """Claim due events and send them in the background, claiming again at once: a
        claim whose receivers are slow does not hold back the events due after it (at most
        ``DELIVERY_SENDS`` claims are being sent at a time)."""
        idle = self.rt.settings.worker_idle_seconds
        sending: set[asyncio.Task[tuple[int, int]]] = set()
        try:
            while not self._stopping:
                try:
                    due = await claim_due(self.rt, owner=self.owner)
                except Exception:
                    log.exception("webhook delivery failed", extra={"action": "webhooks"})
                    due = []
                if due:
                    task = asyncio.create_task(
                        send_claimed(self.rt, due, owner=self.owner, rng=self.rng)
                    )
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                    task.add_done_callback(self._sent)
                    if len(sending) >= DELIVERY_SENDS:
                        await asyncio.wait(set(sending), return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._deliver_wake.clear()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._deliver_wake.wait(), timeout=idle)
        finally:
            if sending:  # the attempts under way are recorded before the worker stops
                await asyncio.wait(set(sending))

    def _sent(self, task: asyncio.Task[tuple[int, int]]) -> None:
        """A claim's events are sent: its key's next events may be claimable now."""
        self._deliver_wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "webhook delivery failed: %s",
                type(task.exception()).__name__,
                exc_info=task.exception(),
                extra={"action": "webhooks"},
            )

    async def _idle_delay(self) -> float:
        idle = self.rt.settings.worker_idle_seconds
        async with self.rt.engine.connect() as conn:
            due = await claims.next_due_at(conn)
        if due is None:
            return idle
        return max(0.0, min(idle, (due - self.rt.clock.now()).total_seconds()))

    async def _sleep(self, delay: float) -> None:
        if delay <= 0 or self._stopping:
            return
        self._wake.clear()
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
