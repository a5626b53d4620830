"""The worker daemon: a continuous pipeline of stages that run side by side.

* **submit**: rescue abandoned submissions, then claim due tasks and submit them;
* **poll**: claim processing tasks whose next check is due and poll the provider;
* **archive**: copy succeeded videos into the result store, expire old ones;
* **settle**: settle every batch whose tasks have all ended, record provider call counts.

Each stage repeats its pass at once while it finds work, and otherwise sleeps until its own
next due time (at most ``VIDBATCH_WORKER_IDLE_SECONDS``), woken early by the stage before
it: a submit wakes the poll stage, a task that ends wakes settlement (so a batch is settled
the moment its last task ends, not at the next round's turn), an archived video wakes
settlement, a settlement wakes webhook delivery. A callback or a new batch (in this
process, or by NOTIFY on PostgreSQL) wakes every stage. The stages share one
``BATCH_TASK_CONCURRENCY`` bound on provider calls in flight.

Customer webhooks are delivered by a loop of their own, so a slow receiver never holds up
the pipeline. Stops gracefully: the passes under way get ``VIDBATCH_SHUTDOWN_GRACE_SECONDS``
to finish; after that their provider calls still in flight are abandoned (cancelled), and
their tasks, still leased, come back to a worker when the lease runs out.

``run_once`` (one round of every step in turn) stays for ``vidbatch worker --once`` and the
original's cron endpoint."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.engine import single
from vidbatch.db.notify import Listener
from vidbatch.runtime import Runtime
from vidbatch.services import provider_calls
from vidbatch.webhooks.delivery import claim_due, send_claimed
from vidbatch.worker import claims
from vidbatch.worker.round import Round, new_owner

log = logging.getLogger(__name__)

#: After a failed pass (e.g. the database is down), wait this long before the next.
ERROR_BACKOFF = 2.0
#: Claims of webhook events being sent at once by one worker.
DELIVERY_SENDS = 4
#: Abandoned submissions and cancelled batches' waiting tasks are looked for at most this
#: often (seconds): leases last far longer.
RESCUE_EVERY = 1.0
#: Provider call counts are written to the database at most this often (seconds).
RECORD_CALLS_EVERY = 1.0
#: Started batches remembered; past this many the set starts again (costs one UPDATE each).
STARTED_BATCHES_KEPT = 10_000
#: Archived files past retention are looked for at most this often (seconds).
EXPIRE_EVERY = 60.0


@dataclass
class Stage:
    """One loop of the pipeline: ``work`` does a pass and says which stages it fed (its
    own name included when there may be more to do at once); ``due`` says when the stage
    next has something to do (None: only when woken, or after the idle time)."""

    name: str
    work: Callable[[Round], Coroutine[Any, Any, set[str]]]
    due: Callable[[AsyncConnection], Awaitable[datetime | None]] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerLoop:
    def __init__(self, rt: Runtime, *, owner: str | None = None) -> None:
        self.rt = rt
        self.owner = owner or new_owner()
        self.rng = random.Random()
        self.sem = asyncio.Semaphore(rt.settings.task_concurrency)
        #: Batches this worker has moved queued → processing (a lookup saves an UPDATE).
        self.started_batches: set[str] = set()
        self._deliver_wake = asyncio.Event()
        self._stopping = False
        self._abandoned = False
        self._passes: set[asyncio.Task[set[str]]] = set()
        self._abandon_timer: asyncio.TimerHandle | None = None
        self._calls_recorded = 0.0
        self._rescued = 0.0
        self._expired_checked = 0.0
        self.stages = {
            s.name: s
            for s in (
                Stage("submit", self._submit, lambda c: claims.next_due_at(c, claims.SUBMIT_DUE)),
                Stage("poll", self._poll, lambda c: claims.next_due_at(c, claims.POLL_DUE)),
                Stage("archive", self._archive, claims.next_archive_due_at),
                Stage("settle", self._settle),
            )
        }

    def wake(self) -> None:
        """Look for work in every stage now (a callback landed, a batch was created), and
        for webhook events to send (a callback may have settled a batch itself)."""
        for stage in self.stages.values():
            stage.wake.set()
        self._deliver_wake.set()

    def stop(self) -> None:
        """Stop after the passes under way, or abandon them after the shutdown grace."""
        if not self._stopping:
            grace = self.rt.settings.shutdown_grace_seconds
            self._abandon_timer = asyncio.get_running_loop().call_later(grace, self._abandon)
        self._stopping = True
        self.wake()

    def _abandon(self) -> None:
        running = [t for t in self._passes if not t.done()]
        if running:
            self._abandoned = True
            log.warning(
                "shutdown grace of %g s passed: abandoning the provider calls in flight; "
                "their tasks come back when their leases run out",
                self.rt.settings.shutdown_grace_seconds,
                extra={"action": "abandon", "owner": self.owner},
            )
            for task in running:
                task.cancel()

    async def run(self) -> None:
        log.info("worker started", extra={"action": "worker_start", "owner": self.owner})
        listener = Listener(self.rt.engine, self.wake)
        listener.start()
        delivery = asyncio.create_task(self._deliver_loop(), name="vidbatch-webhooks")
        loops = [
            asyncio.create_task(self._stage_loop(s), name=f"vidbatch-{s.name}")
            for s in self.stages.values()
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self._deliver_wake.set()
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(delivery, timeout=self.rt.settings.shutdown_grace_seconds)
            await listener.stop()
            if self._abandon_timer is not None:
                self._abandon_timer.cancel()
            await self._record_calls(force=True)
        log.info("worker stopped", extra={"action": "worker_stop", "owner": self.owner})

    # --- the stages ---------------------------------------------------------------------

    async def _stage_loop(self, stage: Stage) -> None:
        look = True  # the first pass looks for work left by an earlier worker
        while not self._stopping:
            if look:
                fed = await self._pass(stage)
                if fed is None or self._stopping:  # failed (backed off already), or stopping
                    continue
                for name in fed - {stage.name}:
                    self._feed(name)
                if stage.name in fed:
                    continue
            wait = await self._wait(stage, after_empty_pass=look)
            if wait <= 0:
                look = True
                continue
            woken = await self._sleep(stage, wait)
            # Woken: fed by another stage or a wake-up. Otherwise the due time is read again
            # (a read, never the write lock of a claim) before another pass; a stage with
            # no due time looks at every idle tick.
            look = woken or stage.due is None

    async def _pass(self, stage: Stage) -> set[str] | None:
        """One pass of ``stage``: the stages it fed, or None when it failed."""
        stage.wake.clear()  # a wake-up during the pass brings another pass
        started = time.perf_counter()
        if len(self.started_batches) > STARTED_BATCHES_KEPT:
            self.started_batches.clear()
        rnd = Round(self.rt, self.owner, self.rng, self.sem, self.started_batches)
        task = asyncio.create_task(stage.work(rnd), name=f"vidbatch-{stage.name}-pass")
        self._passes.add(task)
        try:
            fed = await task
        except asyncio.CancelledError:
            if self._abandoned:  # the grace ran out: the pass was given up
                return set()
            raise
        except Exception:
            log.exception("worker step failed", extra={"action": stage.name})
            await self._sleep(stage, ERROR_BACKOFF)
            return None
        finally:
            self._passes.discard(task)
        self.rt.metrics.stage_duration.labels(stage.name).observe(time.perf_counter() - started)
        return fed

    def _feed(self, name: str) -> None:
        if name == "deliver":
            self._deliver_wake.set()
        else:
            self.stages[name].wake.set()

    async def _wait(self, stage: Stage, *, after_empty_pass: bool) -> float:
        """Seconds until the stage's next due time (0: due now), at most the idle time. A
        pass that found nothing although something is due (a fleet cap reached, another
        worker holding it) waits the idle time, or for a wake-up."""
        idle = self.rt.settings.worker_idle_seconds
        if stage.due is None:
            return idle
        try:
            async with single(self.rt.engine, write=False) as conn:
                due = await stage.due(conn)
        except Exception:
            log.warning("next due time unknown", exc_info=True, extra={"action": stage.name})
            return ERROR_BACKOFF
        if due is None:
            return idle
        wait = (due - self.rt.clock.now()).total_seconds()
        if wait <= 0:
            return idle if after_empty_pass else 0.0
        return min(idle, wait)

    async def _sleep(self, stage: Stage, delay: float) -> bool:
        """Sleep up to ``delay`` seconds; True when woken before."""
        if self._stopping:
            return True
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stage.wake.wait(), timeout=delay)
        return stage.wake.is_set()

    async def _submit(self, rnd: Round) -> set[str]:
        now = time.monotonic()
        if now - self._rescued >= RESCUE_EVERY:  # two writes: not on every pass
            self._rescued = now
            await rnd.rescue()
        await rnd.dispatch()
        d = rnd.summary.dispatch
        fed: set[str] = set()
        if d["tasks_started"]:
            fed |= {"submit", "poll", "deliver"}  # batch.running events in the outbox
        if d["rescued"] or d["rejected"] or d["transientErrors"] or d["ambiguous"]:
            fed |= {"submit", "settle"}  # a task may have ended
        return fed | self._ended(rnd)

    @staticmethod
    def _ended(rnd: Round) -> set[str]:
        """The stages that tasks ended by polls feed (a submit polls a task at once when
        its final callback came first)."""
        p = rnd.summary.poll
        if p["succeeded"]:
            return {"archive", "settle"}
        return {"settle"} if p["failed"] else set()

    async def _poll(self, rnd: Round) -> set[str]:
        await rnd.poll_all(count_waiting=False)
        p = rnd.summary.poll
        return ({"poll"} if p["scanned"] else set()) | self._ended(rnd)

    async def _archive(self, rnd: Round) -> set[str]:
        now = time.monotonic()
        expire = now - self._expired_checked >= EXPIRE_EVERY
        if expire:
            self._expired_checked = now
        await rnd.archive_all(expire=expire)
        a = rnd.summary.archive
        if a["stored"] or a["failed"] or a["lost"]:
            return {"archive", "settle"}
        return {"archive"} if a["retry"] else set()

    async def _settle(self, rnd: Round) -> set[str]:
        await rnd.settle_all()
        await self._record_calls()
        return {"settle", "deliver"} if rnd.summary.settle["settled"] else set()

    async def _record_calls(self, *, force: bool = False) -> None:
        """This process's provider calls, for the fleet-wide figures (about once a second)."""
        now = time.monotonic()
        if not force and now - self._calls_recorded < RECORD_CALLS_EVERY:
            return
        self._calls_recorded = now
        try:
            await provider_calls.record(
                self.rt.engine, self.rt.metrics.take_pending_calls(), self.rt.clock.now()
            )
        except Exception:
            log.warning("provider call counts not recorded", exc_info=True)

    # --- webhook delivery ---------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        """Claim due events and send them in the background, claiming again at once: a
        claim whose receivers are slow does not hold back the events due after it (at most
        ``DELIVERY_SENDS`` claims are being sent at a time)."""
        idle = self.rt.settings.worker_idle_seconds
        sending: set[asyncio.Task[tuple[int, int]]] = set()
        try:
            while not self._stopping:
                self._deliver_wake.clear()
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


__all__ = ["Stage", "WorkerLoop"]
