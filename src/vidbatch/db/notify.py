"""Wake-ups between processes: on PostgreSQL a transaction that makes work (a batch
created, a callback recorded) sends ``NOTIFY vidbatch_work``; worker loops LISTEN and run
a round at once. A missed notification costs latency, never work: workers also poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "vidbatch_work"


async def notify_work(conn: AsyncConnection) -> None:
    """Queue a wake-up, delivered when ``conn``'s transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"NOTIFY {CHANNEL}"))


class Listener:
    """Keeps one LISTEN connection open and calls ``on_notify`` for each wake-up;
    reconnects after a failure. Does nothing on SQLite."""

    def __init__(self, engine: AsyncEngine, on_notify: Callable[[], None]) -> None:
        self.engine = engine
        self.on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.engine.dialect.name == "postgresql" and self._task is None:
            self._task = asyncio.create_task(self._run(), name="vidbatch-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with self.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    lost = asyncio.Event()

                    def _callback(*_args: Any) -> None:
                        self.on_notify()

                    await driver.add_listener(CHANNEL, _callback)
                    driver.add_termination_listener(lambda *_, ev=lost: ev.set())
                    await conn.rollback()  # no transaction held open while listening
                    await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "listen connection lost; retrying",
                    extra={"action": "listen", "error": type(exc).__name__},
                )
            await asyncio.sleep(1.0)
