"""Callback delivery: progress posts while a task runs, then one final post, with faults.

Each task gets its own random generator, seeded from the simulator's one generator when the
task is created, so callback faults stay reproducible even though many tasks deliver
concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp

from vidbatch.providers.simulator.state import SimState, SimTask

logger = logging.getLogger(__name__)

#: Longest real sleep between two looks at the simulator's clock.
_CLOCK_CHECK = 0.05


class CallbackDispatcher:
    """Runs one background coroutine per task that has a ``webHook`` URL."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _get_session(self) -> aiohttp.ClientSession:
        # Made lazily so that the dispatcher also works where no lifespan runs.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def launch(self, task: SimTask) -> None:
        self._spawn(self._drive(task))

    def _spawn(self, coro: Any) -> None:
        background = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(background)
        background.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        for background in list(self._tasks):
            background.cancel()

    async def close(self) -> None:
        self.cancel_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _drive(self, task: SimTask) -> None:
        state = self.state
        rng = random.Random(task.callback_seed)
        held: list[dict[str, Any]] = []
        if not task.shut_progress:
            while task.is_running(now := state.clock()):
                await self._send(task, task.view(now), rng, held, final=False)
                done_at = task.done_at
                pause = state.config.callback_interval
                if done_at is not None:
                    pause = min(pause, max(0.0, done_at - state.clock()))
                await asyncio.sleep(pause)
        # A held task with shutProgress: wait for its release (a flag another request sets).
        while task.awaiting_release:  # noqa: ASYNC110 - a flag, not an event, on the task
            await asyncio.sleep(state.config.callback_interval)
        done_at = task.done_at
        if done_at is None:
            # A task that never finishes never gets a final callback.
            await asyncio.Event().wait()
            return
        wait = done_at - state.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send(task, task.view(state.clock()), rng, held, final=True)
        for body in held:
            await self._post(task, body)

    async def _send(
        self,
        task: SimTask,
        body: dict[str, Any],
        rng: random.Random,
        held: list[dict[str, Any]],
        *,
        final: bool,
    ) -> None:
        """Deliver one callback, applying the configured faults."""
        cfg, stats = self.state.config, self.state.stats
        # Always four draws, so one fault does not shift the others' decisions.
        u_loss, u_reorder, u_dup, u_delay = (rng.random() for _ in range(4))
        if u_loss < cfg.callback_loss_rate:
            stats.callbacks_lost += 1
            return
        if not final and u_reorder < cfg.callback_reorder_rate:
            stats.callbacks_reordered += 1
            held.append(body)
            return
        copies = 1
        if u_dup < cfg.callback_duplicate_rate:
            stats.callbacks_duplicated += 1
            copies = 2
        if u_delay < cfg.callback_delay_rate:
            stats.callbacks_delayed += 1
            self._spawn(self._post_later(task, body, copies, cfg.callback_delay))
            return
        for _ in range(copies):
            await self._post(task, body)

    async def _post_later(
        self, task: SimTask, body: dict[str, Any], copies: int, delay: float
    ) -> None:
        # Late by the simulator's clock, which a test may move forward.
        due = self.state.clock() + delay
        while (left := due - self.state.clock()) > 0:  # noqa: ASYNC110 - no event for time
            await asyncio.sleep(min(left, _CLOCK_CHECK))
        for _ in range(copies):
            await self._post(task, body)

    async def _post(self, task: SimTask, body: dict[str, Any]) -> None:
        assert task.webhook is not None
        state = self.state
        generation = state.generation
        timeout = aiohttp.ClientTimeout(total=state.config.callback_timeout)
        http_status: int | None = None
        try:
            async with self._get_session().post(task.webhook, json=body, timeout=timeout) as resp:
                await resp.read()
                http_status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("callback to %s failed: %r", task.webhook, exc)
        if generation != state.generation:
            return  # the simulator was reset meanwhile: this delivery belongs to the past
        if http_status is None:
            state.stats.callbacks_failed += 1
        else:
            state.stats.callbacks_sent += 1
        state.callbacks.append(
            {
                "task_id": task.id,
                "status": body.get("status"),
                "progress": body.get("progress"),
                "http_status": http_status,
            }
        )
