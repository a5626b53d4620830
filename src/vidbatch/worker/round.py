"""The worker's steps: rescue, dispatch, poll (with time-outs), archive, settle, deliver
webhooks. ``run_once`` runs them in turn (a round: ``vidbatch worker --once``, the cron
endpoint, tests); the daemon (``worker/loop.py``) runs each as a stage of its own.

No transaction stays open across a provider call: a task is claimed (and committed) first,
the provider is called, then the outcome is written in a new transaction fenced on the
claim's lease token. Provider calls in flight are bounded by ``BATCH_TASK_CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vidbatch.db.engine import single
from vidbatch.domain.callback_tokens import callback_url
from vidbatch.domain.catalog import ModelSpec
from vidbatch.domain.provider import TaskSpec
from vidbatch.domain.schedule import PollSchedule, RetryPolicy, timed_out
from vidbatch.domain.states import FailureType, TaskStatus
from vidbatch.exceptions import (
    ProviderAmbiguous,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderTransient,
)
from vidbatch.runtime import Runtime
from vidbatch.services import provider_calls, settlement, tasks
from vidbatch.services.tasks import Fence
from vidbatch.webhooks.delivery import deliver_due
from vidbatch.worker import archive, claims

log = logging.getLogger(__name__)

#: Webhook mode: warn after this many tasks in a row ended with no provider callback.
MISSED_CALLBACKS_WARNING = 5


def new_owner() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class RoundSummary:
    """The original's summary of a round, plus vidbatch's own counters."""

    dispatch: dict[str, int] = field(
        default_factory=lambda: {
            "claimed": 0,
            "tasks_started": 0,
            "transientErrors": 0,
            "rejected": 0,
            "ambiguous": 0,
            "rescued": 0,
            "capReached": 0,
        }
    )
    poll: dict[str, int] = field(
        default_factory=lambda: {
            "scanned": 0,
            "succeeded": 0,
            "failed": 0,
            "stillProcessing": 0,
            "transientErrors": 0,
            "skippedBackoff": 0,
            "maxPollReached": 0,
        }
    )
    settle: dict[str, int] = field(
        default_factory=lambda: {
            "scanned": 0,
            "settled": 0,
            "webhook_sent": 0,
            "webhook_failed": 0,
            "errors": 0,
        }
    )
    archive: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "retry": 0, "failed": 0, "lost": 0, "expired": 0}
    )
    duration_ms: int = 0

    @property
    def did_work(self) -> bool:
        return any(self.archive.values()) or bool(
            self.dispatch["tasks_started"]
            or self.dispatch["rescued"]
            or self.dispatch["transientErrors"]
            or self.dispatch["rejected"]
            or self.poll["scanned"]
            or self.settle["settled"]
            or self.settle["webhook_sent"]
            or self.settle["webhook_failed"]
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            # The original's ``dispatch.frozen`` is always 0: credits are frozen when a
            # batch is created, never by a round. Kept in second place for its clients.
            "dispatch": {"claimed": self.dispatch["claimed"], "frozen": 0, **self.dispatch},
            "poll": self.poll,
            "settle": self.settle,
            "archive": self.archive,
            "duration_ms": self.duration_ms,
        }


class Round:
    """The state of one round; ``run_once`` is the public entry point."""

    def __init__(
        self,
        rt: Runtime,
        owner: str,
        rng: random.Random,
        sem: asyncio.Semaphore | None = None,
        started_batches: set[str] | None = None,
    ) -> None:
        self.rt = rt
        self.s = rt.settings
        self.owner = owner
        self.rng = rng
        self.summary = RoundSummary()
        #: Bounds the provider calls (and archive copies) in flight: shared by the worker's
        #: stages, so together they never exceed ``BATCH_TASK_CONCURRENCY``.
        self.sem = sem or asyncio.Semaphore(self.s.task_concurrency)
        first, early, late = self.s.poll_schedule
        self.polls = PollSchedule(first, early, late)
        self.retries = RetryPolicy(max_attempts=self.s.submit_max_attempts)
        self.webhook_attempts = self.s.webhook_max_attempts
        #: Batches already moved queued → processing (one UPDATE each): in this round, or
        #: by this worker (the pipeline passes its own set).
        self.started_batches: set[str] = set() if started_batches is None else started_batches

    @staticmethod
    def _buffered(
        claim_chunk: Callable[[], Awaitable[list[Any]]],
    ) -> Callable[[], Awaitable[Any | None]]:
        """One task at a time out of chunks claimed one statement each (at most a lane's
        worth, so a claimed task waits for at most one provider call before its own)."""
        ready: list[Any] = []
        lock = asyncio.Lock()

        async def next_task() -> Any | None:
            async with lock:
                if not ready:
                    ready.extend(await claim_chunk())
                return ready.pop(0) if ready else None

        return next_task

    async def _lanes(
        self, claim: Callable[[], Awaitable[Any | None]], work: Callable[[Any], Awaitable[None]]
    ) -> None:
        """``BATCH_TASK_CONCURRENCY`` lanes, each claiming one task and working on it
        until ``claim`` finds nothing more."""

        async def lane() -> None:
            while True:
                async with self.sem:
                    row = await claim()
                    if row is None:
                        return
                    try:
                        await work(row)
                    except Exception:
                        # One task's failure (e.g. the database going away) must not stop
                        # the lane; the task's lease brings it back.
                        log.exception(
                            "task step failed", extra={"task_id": row.id, "action": "lane"}
                        )

        await asyncio.gather(*(lane() for _ in range(self.s.task_concurrency)))

    def lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.s.lease_seconds)

    # --- rescue -------------------------------------------------------------------------

    async def rescue(self) -> None:
        """Apply the ambiguous-submit policy to submissions whose worker vanished, and
        cancel tasks that went back to waiting after their batch was cancelled."""
        now = self.rt.clock.now()
        async with single(self.rt.engine) as conn:
            await claims.cancel_waiting_of_cancelled_batches(conn, now=now)
            lost = await claims.expired_submissions(conn, now=now, limit=200)
        for row in lost:
            self.rt.metrics.lease_expiries.labels("submit").inc()
            await self._ambiguous(
                row.id,
                Fence("rescue", row.lease_token),
                row.attempts,
                "the worker submitting this task stopped before the provider's answer was recorded",
            )
            self.summary.dispatch["rescued"] += 1

    async def _ambiguous(self, task_id: str, fence: Fence, attempts: int, why: str) -> None:
        policy = self.s.ambiguous_submit
        self.rt.metrics.ambiguous_submits.labels(policy).inc()
        now = self.rt.clock.now()
        log.warning(
            "ambiguous submit", extra={"task_id": task_id, "action": "ambiguous", "policy": policy}
        )
        async with self.rt.engine.begin() as conn:
            if policy == "retry" and not self.retries.exhausted(attempts):
                delay = self.retries.delay(max(1, attempts), self.rng)
                await tasks.reschedule_submit(
                    conn,
                    task_id,
                    fence,
                    error=f"outcome unknown, submitting again: {why}",
                    retry_at=now + timedelta(seconds=delay),
                    now=now,
                )
            else:
                # It may run at the provider all the same: under a fleet cap it keeps its
                # slot until the time it would have had.
                await tasks.fail(
                    conn,
                    task_id,
                    from_status=TaskStatus.SUBMITTING,
                    failure_type=FailureType.NETWORK,
                    failure_reason="ambiguous_submit",
                    error=f"submission outcome unknown ({why}); failed and refunded so it "
                    "is never paid twice",
                    now=now,
                    fence=fence,
                    extra={"deadline_at": now + timedelta(seconds=self.s.max_wait_seconds)},
                )

    # --- dispatch -----------------------------------------------------------------------

    async def dispatch(self) -> None:
        now = self.rt.clock.now()
        async with single(self.rt.engine) as conn:
            batch_ids = await claims.pick_batches(conn, now, self.s.worker_max_claim)
        self.summary.dispatch["claimed"] = len(batch_ids)
        budget = dict.fromkeys(batch_ids, self.s.worker_max_start_tasks_per_batch)
        rotation = list(batch_ids)
        stop = False
        chunk = self.s.task_concurrency

        async def claim_chunk() -> list[Any]:
            """Up to one task per lane from the next batch in the rotation."""
            nonlocal stop
            while rotation and not stop:
                batch_id = rotation.pop(0)
                want = min(chunk, budget[batch_id])
                now = self.rt.clock.now()
                cap = self.s.provider_max_inflight
                # Under a fleet cap, counting the room and claiming are one transaction.
                async with self.rt.engine.begin() if cap else single(self.rt.engine) as conn:
                    if cap:
                        want = min(want, await claims.inflight_room(conn, cap, now))
                        if want < 1:
                            self.summary.dispatch["capReached"] += 1
                            stop = True
                            return []
                    rows = await claims.claim_for_submit(
                        conn,
                        batch_id,
                        owner=self.owner,
                        now=now,
                        lease_until=self.lease_until(now),
                        limit=want,
                    )
                budget[batch_id] -= len(rows)
                if rows and len(rows) == want and budget[batch_id] > 0:
                    rotation.append(batch_id)  # more may be due: its turn comes again
                if rows:
                    return rows
            return []

        await self._lanes(self._buffered(claim_chunk), self.submit)

    def _spec(self, row: Any) -> TaskSpec:
        base = self.s.public_base_url
        return TaskSpec(
            task_id=row.id,
            model=row.model or "sora-2",
            prompt=row.prompt,
            aspect_ratio=row.aspect_ratio,
            duration=row.duration,
            reference_url=row.reference_url,
            meta=row.meta,
            callback_url=callback_url(base, row.id, self.rt.callback_key) if base else None,
        )

    async def submit(self, row: Any) -> None:
        fence = Fence(self.owner, row.lease_token)
        now = self.rt.clock.now()
        call_time = timedelta(
            seconds=self.s.provider_connect_timeout + self.s.provider_read_timeout
        )
        if now + call_time >= row.lease_expires_at:
            # Claimed with others and waited for a lane: the call could outlive the lease,
            # and another worker might then decide this task's fate. Give it back instead.
            async with self.rt.engine.begin() as conn:
                await tasks.reschedule_submit(
                    conn,
                    row.id,
                    fence,
                    now=now,
                    retry_at=now,
                    error="lease too short for a provider call",
                    count_attempt=False,
                )
            return
        started = time.perf_counter()
        try:
            remote_id = await self.rt.provider_for(row.provider).create_task(self._spec(row))
        except ProviderAmbiguous as exc:
            self.rt.metrics.count_call("submit", "ambiguous")
            self.summary.dispatch["ambiguous"] += 1
            await self._ambiguous(row.id, fence, row.attempts, exc.message)
            return
        except ProviderTransient as exc:
            self.rt.metrics.count_call("submit", "transient")
            self.summary.dispatch["transientErrors"] += 1
            await self._submit_transient(row, fence, exc)
            return
        except ProviderError as exc:  # rejected (or not found): fails at once
            self.rt.metrics.count_call("submit", "rejected")
            self.summary.dispatch["rejected"] += 1
            async with self.rt.engine.begin() as conn:
                await tasks.fail(
                    conn,
                    row.id,
                    from_status=TaskStatus.SUBMITTING,
                    failure_type=exc.failure_type or FailureType.PARAM_ERROR,
                    failure_reason="rejected",
                    error=exc.message,
                    now=self.rt.clock.now(),
                    fence=fence,
                )
            return
        finally:
            self.rt.metrics.provider_latency.labels("create").observe(time.perf_counter() - started)
        self.rt.metrics.count_call("submit", "ok")
        now = self.rt.clock.now()
        spec = self.s.catalog.get(row.model or "")
        max_wait = spec.max_wait_seconds if spec else self.s.max_wait_seconds
        max_wait = min(max_wait, self.s.max_wait_seconds)
        first_check = self.first_check_seconds(spec)
        first_of_batch = row.batch_job_id not in self.started_batches
        # The batch's start (queued → processing and its event) goes with its first task.
        async with self.rt.engine.begin() if first_of_batch else single(self.rt.engine) as conn:
            recorded = await tasks.mark_submitted(
                conn,
                row.id,
                fence,
                remote_id=remote_id,
                now=now,
                next_check_at=now + timedelta(seconds=first_check),
                deadline_at=now + timedelta(seconds=max_wait),
            )
            ok = recorded is not None
            if ok and first_of_batch:
                await tasks.mark_batch_started(
                    conn, row.batch_job_id, now=now, webhook_max_attempts=self.webhook_attempts
                )
        if ok and first_of_batch:
            self.started_batches.add(row.batch_job_id)  # committed
        if ok:
            self.summary.dispatch["tasks_started"] += 1
            log.info(
                "task submitted",
                extra={
                    "task_id": row.id,
                    "batch_id": row.batch_job_id,
                    "action": "submit",
                    "owner": self.owner,
                },
            )
        else:  # our lease was taken over meanwhile: the rescuer owns the outcome now
            log.warning(
                "submit result dropped: lease lost", extra={"task_id": row.id, "action": "submit"}
            )
            return
        if recorded is not None and recorded.callback_at is not None:
            # The provider's final callback came before this record: the task is still
            # ours (leased), so it is polled now rather than claimed again later.
            await self.poll(recorded)

    def first_check_seconds(self, spec: ModelSpec | None) -> float:
        """Seconds from a submit to the task's first poll. In webhook mode, the model's
        typical generation time (at most the callback grace): a callback URL the provider
        cannot reach then costs about one generation, not the whole grace period."""
        if not self.s.public_base_url:
            return self.polls.delay_after(0)
        typical = spec.typical_seconds if spec else self.s.callback_grace_seconds
        return min(float(typical), self.s.callback_grace_seconds)

    def _note_callbacks(self, row: Any, ended: bool) -> None:
        """Webhook mode: warn when tasks keep ending with no provider callback at all."""
        if not self.s.public_base_url:
            return
        if row.callback_at is not None:
            self.rt.missed_callbacks = 0
            return
        if not ended:
            return
        self.rt.missed_callbacks += 1
        if self.rt.missed_callbacks % MISSED_CALLBACKS_WARNING == 0:
            log.warning(
                "no provider callback arrived for the last %d tasks that ended: is %s "
                "reachable from the provider? Polling covers it, later.",
                self.rt.missed_callbacks,
                f"{self.s.public_base_url}/api/video/callback",
                extra={"action": "callbacks_missing"},
            )

    async def _submit_transient(self, row: Any, fence: Fence, exc: ProviderTransient) -> None:
        now = self.rt.clock.now()
        rate_limited = exc.http_status == 429
        async with self.rt.engine.begin() as conn:
            if not rate_limited and self.retries.exhausted(row.attempts):
                await tasks.fail(
                    conn,
                    row.id,
                    from_status=TaskStatus.SUBMITTING,
                    failure_type=FailureType.NETWORK,
                    failure_reason="provider_unavailable",
                    error=f"provider unavailable after {row.attempts} attempts: {exc.message}",
                    now=now,
                    fence=fence,
                )
                return
            delay = self.retries.delay(max(1, row.attempts), self.rng, exc.retry_after)
            await tasks.reschedule_submit(
                conn,
                row.id,
                fence,
                error=exc.message,
                retry_at=now + timedelta(seconds=delay),
                now=now,
                count_attempt=not rate_limited,
            )

    # --- poll ---------------------------------------------------------------------------

    async def poll_all(self, *, count_waiting: bool = True) -> None:
        """Poll due tasks, at most ``BATCH_WORKER_MAX_POLL``; ``count_waiting`` also counts
        the tasks not due yet (the original's ``skippedBackoff``, a round's summary)."""
        remaining = self.s.worker_max_poll

        async def claim_chunk() -> list[Any]:
            nonlocal remaining
            if remaining <= 0:
                return []
            now = self.rt.clock.now()
            async with single(self.rt.engine) as conn:
                rows = await claims.claim_for_poll(
                    conn,
                    owner=self.owner,
                    now=now,
                    lease_until=self.lease_until(now),
                    limit=min(remaining, self.s.task_concurrency),
                )
            remaining = remaining - len(rows) if rows else 0
            return rows

        await self._lanes(self._buffered(claim_chunk), self.poll)
        if not count_waiting:
            return
        async with single(self.rt.engine, write=False) as conn:
            self.summary.poll["skippedBackoff"] = await claims.count_waiting_polls(
                conn, self.rt.clock.now()
            )

    async def poll(self, row: Any) -> None:
        self.summary.poll["scanned"] += 1
        fence = Fence(self.owner, row.lease_token)
        started = time.perf_counter()
        try:
            result = await self.rt.provider_for(row.provider).get_result(row.grsai_task_id)
        except ProviderNotFound as exc:
            self.rt.metrics.count_call("poll", "not_found")
            async with self.rt.engine.begin() as conn:
                if await tasks.fail(
                    conn,
                    row.id,
                    from_status=TaskStatus.PROCESSING,
                    failure_type=FailureType.UNKNOWN,
                    failure_reason="not_found",
                    error=f"the provider does not know this task: {exc.message}",
                    now=self.rt.clock.now(),
                    fence=fence,
                ):
                    self.summary.poll["failed"] += 1
            return
        except ProviderRejected as exc:
            # A refused poll (e.g. a bad key) is the operator's problem, not the task's:
            # keep it and try later; the deadline still bounds the wait.
            await self._poll_transient(row, fence, exc.message)
            return
        except ProviderError as exc:
            await self._poll_transient(row, fence, exc.message)
            return
        finally:
            self.rt.metrics.provider_latency.labels("result").observe(time.perf_counter() - started)
        now = self.rt.clock.now()
        polls_done = row.poll_count + 1
        too_long = timed_out(
            now=now,
            deadline=row.deadline_at,
            poll_count=polls_done,
            max_poll_count=self.s.max_poll_count,
        )
        async with single(self.rt.engine) as conn:
            applied = await tasks.apply_result(
                conn,
                row.id,
                result,
                now=now,
                require_https=self.s.require_https_video_url,
                fence=fence,
                next_check_at=self.polls.next_poll_at(now, polls_done),
                count_poll=True,
                timed_out=too_long,
                archive=self.s.result_store_spec.enabled,
            )
        self.rt.metrics.count_call("poll", applied.outcome)
        if not applied.applied:
            return
        self._note_callbacks(row, ended=applied.outcome != "running")
        if applied.outcome == TaskStatus.SUCCEEDED:
            self.summary.poll["succeeded"] += 1
        elif applied.outcome == TaskStatus.FAILED:
            self.summary.poll["failed"] += 1
            if too_long and result.status == "running":
                self.summary.poll["maxPollReached"] += 1
        else:
            self.summary.poll["stillProcessing"] += 1

    async def _poll_transient(self, row: Any, fence: Fence, message: str) -> None:
        """A failed poll neither fails the task nor counts as a poll; past the deadline,
        though, the task times out."""
        self.rt.metrics.count_call("poll", "transient")
        self.summary.poll["transientErrors"] += 1
        now = self.rt.clock.now()
        async with self.rt.engine.begin() as conn:
            if row.deadline_at is not None and now >= row.deadline_at:
                await tasks.fail(
                    conn,
                    row.id,
                    from_status=TaskStatus.PROCESSING,
                    failure_type=FailureType.TIMEOUT,
                    failure_reason="timeout",
                    error=f"deadline passed while the provider was unreachable: {message}",
                    now=now,
                    fence=fence,
                )
                return
            await tasks.reschedule_poll(
                conn,
                row.id,
                fence,
                error=message,
                now=now,
                next_check_at=self.polls.next_poll_at(now, max(1, row.poll_count)),
            )

    # --- archive ------------------------------------------------------------------------

    async def archive_all(self, *, expire: bool = True) -> None:
        """Copy succeeded videos into the result store, then (``expire``) delete files
        past retention."""
        remaining = self.s.worker_max_poll

        async def claim_chunk() -> list[Any]:
            nonlocal remaining
            if remaining <= 0:
                return []
            rows = await archive.claim(self.rt, self.owner, min(remaining, self.s.task_concurrency))
            remaining = remaining - len(rows) if rows else 0
            return rows

        async def work(row: Any) -> None:
            outcome = await archive.archive_one(self.rt, row, self.owner, self.rng)
            self.summary.archive[outcome] += 1
            self.rt.metrics.archives.labels(outcome).inc()

        await self._lanes(self._buffered(claim_chunk), work)
        if not expire:
            return
        expired = await archive.expire_due(self.rt)
        if expired:
            self.summary.archive["expired"] += expired
            self.rt.metrics.archives.labels("expired").inc(expired)

    # --- settle -------------------------------------------------------------------------

    async def settle_all(self) -> None:
        async with single(self.rt.engine, write=False) as conn:
            ready = await claims.settleable_batches(conn, self.s.worker_max_settle)
        self.summary.settle["scanned"] = len(ready)
        for batch_id in ready:
            try:
                async with self.rt.engine.begin() as conn:
                    done = await settlement.settle_batch(
                        conn,
                        batch_id,
                        self.rt.clock.now(),
                        webhook_max_attempts=self.webhook_attempts,
                        links=self.rt.links,
                    )
            except Exception:
                # One batch's failure must not stop the others; it is retried next round.
                self.summary.settle["errors"] += 1
                log.exception("settlement failed", extra={"batch_id": batch_id, "action": "settle"})
                await self._touch_batch(batch_id)
                continue
            if done is not None:
                self.summary.settle["settled"] += 1
                m = self.rt.metrics
                m.batches_settled.labels(done.status).inc()
                m.credits.labels("charged").inc(done.charged)
                m.credits.labels("refunded").inc(done.refunded)

    async def _touch_batch(self, batch_id: str) -> None:
        from vidbatch.db.schema import batch_jobs

        try:
            async with self.rt.engine.begin() as conn:
                await conn.execute(
                    batch_jobs.update()
                    .where(batch_jobs.c.id == batch_id)
                    .values(updated_at=self.rt.clock.now())
                )
        except Exception:  # best effort: only affects ordering
            log.debug("could not touch batch", exc_info=True)

    async def deliver_webhooks(self) -> None:
        sent, failed = await deliver_due(self.rt, owner=self.owner)
        self.summary.settle["webhook_sent"] += sent
        self.summary.settle["webhook_failed"] += failed


async def run_once(
    rt: Runtime,
    *,
    owner: str | None = None,
    rng: random.Random | None = None,
    deliver_webhooks: bool = True,
) -> RoundSummary:
    """One round of work; returns the original's summary shape."""
    started = time.perf_counter()
    rnd = Round(rt, owner or new_owner(), rng or random.Random())
    for step in (rnd.rescue, rnd.dispatch, rnd.poll_all, rnd.archive_all, rnd.settle_all):
        try:
            await step()
        except Exception:
            # A database hiccup in one step is logged; the next round tries again.
            log.exception("worker step failed", extra={"action": step.__name__})
    if deliver_webhooks:
        try:
            await rnd.deliver_webhooks()
        except Exception:
            log.exception("webhook delivery failed", extra={"action": "webhooks"})
    try:  # this process's provider calls, for the fleet-wide figures
        await provider_calls.record(rt.engine, rt.metrics.take_pending_calls(), rt.clock.now())
    except Exception:
        log.warning("provider call counts not recorded", exc_info=True)
    rnd.summary.duration_ms = int((time.perf_counter() - started) * 1000)
    rt.metrics.round_duration.observe(rnd.summary.duration_ms / 1000)
    return rnd.summary
