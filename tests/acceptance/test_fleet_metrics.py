"""Metrics from every process: a real `vidbatch worker --metrics-port` on PostgreSQL is
scraped, and the dashboard of an API process that made no provider call itself shows the
worker's calls, read from the database."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import pytest

from tests.acceptance.processes import Proc, clean_env, free_port, wait_until
from tests.helpers import TEST_SECRET_KEY, keyed_engine, new_account, new_batch
from tests.integration.worker_helpers import unsettled
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import utcnow
from vidbatch.services import stats

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKEN = "metrics-token-of-at-least-32-characters"


def scrape(port: int, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{{want}}} not in\n{text}"
    return float(found.group(1))


def test_a_worker_serves_its_metrics_and_the_dashboard_sees_the_fleet(
    pg_url: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    sim.configure(gen_time=0.0)

    async def create() -> str:
        engine = keyed_engine(pg_url)
        try:
            caller = await new_account(engine, credits=1000)
            return (await new_batch(engine, caller, [{"prompt": "a"}, {"prompt": "b"}])).batch_id
        finally:
            await engine.dispose()

    asyncio.run(create())
    port = free_port()
    env = clean_env(
        DATABASE_URL=pg_url,
        GRSAI_HOST=sim.url,
        GRSAI_API_KEY="sk-fleet",
        VIDBATCH_METRICS_TOKEN=TOKEN,
        VIDBATCH_REQUIRE_HTTPS_VIDEO_URL="false",
        VIDBATCH_POLL_INTERVALS="0.05,0.05,0.05",
        VIDBATCH_WORKER_IDLE_SECONDS="0.1",
        VIDBATCH_SECRET_KEY=TEST_SECRET_KEY,
    )
    worker = Proc(["worker", "--metrics-port", str(port)], env, tmp_path / "w.log", tmp_path)

    async def settled() -> int:
        engine = keyed_engine(pg_url)
        try:
            return await unsettled(engine)
        finally:
            await engine.dispose()

    try:
        worker.wait_for("worker metrics on")
        wait_until(lambda: asyncio.run(settled()) == 0, what="the batch settling")
        assert scrape(port, None)[0] == 401
        assert scrape(port, "wrong-token-of-at-least-32-characters!!")[0] == 401
        status, text = scrape(port, TOKEN)
    finally:
        assert worker.stop() == 0
    assert status == 200
    assert sample(text, "vidbatch_submits_total", outcome="ok") == 2
    assert sample(text, "vidbatch_polls_total", outcome="succeeded") == 2
    assert sample(text, "vidbatch_tasks", status="succeeded") == 2
    assert "vidbatch_provider_latency_seconds_count" in text

    async def dashboard() -> stats.Overview:
        engine = keyed_engine(pg_url)
        try:
            return await stats.overview(engine, now=utcnow())
        finally:
            await engine.dispose()

    figures = asyncio.run(dashboard()).provider  # this test process made no provider call
    assert figures.submits.by_outcome == {"ok": 2}
    assert figures.polls.by_outcome.get("succeeded") == 2
