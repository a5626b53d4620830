"""Several `vidbatch worker` processes on one PostgreSQL database: they share a large
batch without submitting any task twice, settle it once, survive a SIGKILL, and stop
gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_audit_clean, items, new_account, new_batch
from tests.helpers import keyed_engine as make_engine
from tests.integration.worker_helpers import batch_row, task_rows, unsettled
from tests.simulator_fixture import SimulatorHandle

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BASE_URL_VARS = ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL", "APP_URL")


def worker_env(db_url: str, sim: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in BASE_URL_VARS}
    env.update(
        {
            "DATABASE_URL": db_url,
            "GRSAI_HOST": sim.url,
            "GRSAI_API_KEY": "sk-test",
            "VIDBATCH_CALLBACK_SECRET": "processes-test",
            "VIDBATCH_POLL_INTERVALS": "0.05,0.05,0.05",
            "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": "false",
            "VIDBATCH_WORKER_IDLE_SECONDS": "0.1",
            "BATCH_WORKER_MAX_START_TASKS_PER_BATCH": "20",
            "BATCH_TASK_CONCURRENCY": "4",
            "VIDBATCH_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Any) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "vidbatch", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=20))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(None)
    return codes


async def wait_until(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("n_workers", [2, 3])
async def test_workers_share_one_large_batch(
    pg_url: str, sim: SimulatorHandle, tmp_path: Path, n_workers: int
) -> None:
    engine = make_engine(pg_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim.configure(gen_time=0.05)
        env = worker_env(pg_url, sim)
        procs = [start_worker(env, tmp_path / f"w{i}.log") for i in range(n_workers)]

        async def all_started() -> bool:
            logs = [(tmp_path / f"w{i}.log").read_text() for i in range(n_workers)]
            return all("worker started" in text for text in logs)

        # Every worker is up before there is work: a slow start must not leave one
        # without a share.
        await wait_until(all_started)
        caller = await new_account(engine, credits=10_000)
        created = await new_batch(engine, caller, items(240))

        async def settled() -> bool:
            return await unsettled(engine) == 0

        await wait_until(settled, timeout=90)
        codes = stop(procs)
        assert codes == [0] * n_workers  # graceful on SIGTERM
        stats = sim.stats()
        assert stats["tasks_created"] == 240
        assert set(stats["created_per_prompt"].values()) == {1}  # nothing submitted twice
        batch = await batch_row(engine, created.batch_id)
        assert (batch.status, batch.credits_spent, batch.credits_refunded) == ("completed", 2400, 0)
        owners = set()
        for i in range(n_workers):
            text = (tmp_path / f"w{i}.log").read_text()
            owners |= set(re.findall(r"task submitted .*owner=(\S+)", text))
        assert len(owners) == n_workers, f"not every worker submitted: {owners}"
        await assert_audit_clean(engine)
    finally:
        stop(procs)
        await engine.dispose()


async def test_killed_worker_is_taken_over_after_its_lease(
    pg_url: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        caller = await new_account(engine, credits=10_000)
        created = await new_batch(engine, caller, items(30))
        # Creates reach the provider but hang: the worker is stuck mid-round.
        sim.configure(create_hang_rate=1.0, hang_max=60.0)
        # A short lease (it must still outlast one provider call: 0.5 + 2.5 s).
        env = worker_env(
            pg_url,
            sim,
            VIDBATCH_LEASE_SECONDS="4",
            VIDBATCH_PROVIDER_CONNECT_TIMEOUT="0.5",
            VIDBATCH_PROVIDER_READ_TIMEOUT="2.5",
        )
        first = start_worker(env, tmp_path / "a.log")
        procs.append(first)

        async def some_submitting() -> bool:
            rows = await task_rows(engine, created.batch_id)
            return sum(r.status == "submitting" for r in rows) >= 4

        await wait_until(some_submitting)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        stuck = {
            r.id for r in await task_rows(engine, created.batch_id) if r.status == "submitting"
        }
        sim.configure(create_hang_rate=0.0, gen_time=0.05)
        procs.append(start_worker(env, tmp_path / "b.log"))

        async def settled() -> bool:
            return await unsettled(engine) == 0

        await wait_until(settled, timeout=90)
        rows = await task_rows(engine, created.batch_id)
        for r in rows:
            if r.id in stuck:  # outcome unknown: failed and refunded (default policy)
                assert (r.status, r.failure_reason) == ("failed", "ambiguous_submit")
            else:
                assert r.status == "succeeded"
        assert max(sim.stats()["created_per_prompt"].values()) == 1  # never paid twice
        batch = await batch_row(engine, created.batch_id)
        assert batch.credits_spent + batch.credits_refunded == batch.frozen_credits
        assert batch.credits_refunded == 10 * len(stuck)
        await assert_audit_clean(engine)
    finally:
        stop(procs)
        await engine.dispose()
