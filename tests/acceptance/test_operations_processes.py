"""Day-two operations seen from real processes: start-up lines, the JSON access log and
quiet health checks, and stopping within the shutdown grace while a provider call hangs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.processes import (
    Proc,
    answers,
    clean_env,
    free_port,
    http_json,
    log_records,
    wait_until,
)
from tests.helpers import TEST_SECRET_KEY, assert_audit_clean, keyed_engine, new_account, new_batch
from tests.integration.worker_helpers import run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import FakeClock
from vidbatch.runtime import Runtime
from vidbatch.settings import Settings

pytestmark = pytest.mark.slow


@pytest.mark.postgres
def test_worker_start_up_lines_name_the_mode_without_the_password(
    pg_url: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    with_password = make_url(pg_url).set(password="hunter2-not-logged")
    env = clean_env(
        DATABASE_URL=with_password.render_as_string(hide_password=False),
        GRSAI_HOST=sim.url,
        GRSAI_API_KEY="sk-startup",
        APP_URL="https://videos.example.com",
        BATCH_TASK_CONCURRENCY="7",
        VIDBATCH_LEASE_SECONDS="75",
        VIDBATCH_LOG_FORMAT="json",
        VIDBATCH_SECRET_KEY=TEST_SECRET_KEY,
    )
    worker = Proc(["worker"], env, tmp_path / "worker.log", tmp_path)
    try:
        text = worker.wait_for("worker started")
    finally:
        assert worker.stop() == 0
    lines = {
        r["msg"].split(": ", 1)[0]: r["msg"].split(": ", 1)[1]
        for r in log_records(text)
        if r.get("action") == "startup"
    }
    assert lines["callback mode"].startswith(
        "webhook (provider callbacks to https://videos.example.com/api/video/callback"
    )
    assert lines["provider host"] == sim.url
    assert lines["database"] == pg_url  # the test server's URL has no password
    # unset on PostgreSQL: no store, the provider's URLs passed through
    assert lines["result store"].startswith("none (the provider's URLs are passed through")
    assert "concurrency 7" in lines["worker"] and "lease 75 s" in lines["worker"]
    assert "hunter2" not in text


def test_access_log_is_json_and_health_checks_are_quiet(tmp_path: Path) -> None:
    api_port, sim_port = free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/v.db",
        VIDBATCH_LOG_FORMAT="json",
        VIDBATCH_PORT=str(api_port),
        VIDBATCH_SIM_PORT=str(sim_port),
    )
    created = subprocess.run(
        [sys.executable, "-m", "vidbatch", "accounts", "create", "acme", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    acc = json.loads(created.stdout)
    serve = Proc(["serve", "--simulator"], env, tmp_path / "serve.log", tmp_path)
    try:
        wait_until(lambda: answers(f"{base}/healthz"), what="the API answering")
        before = len(serve.text().splitlines())
        for _ in range(3):
            assert http_json("GET", f"{base}/readyz")[0] == 200
        key = "vb_not-a-real-key-but-never-logged"
        status, _ = http_json("GET", f"{base}/api/v1/credits/balance", headers={"x-api-key": key})
        assert status == 403
        status, _ = http_json(
            "GET", f"{base}/api/v1/credits/balance", headers={"x-api-key": acc["api_key"]}
        )
        assert status == 200
        status, _ = http_json(
            "POST",
            f"{base}/api/video/callback?task_id=t1&token=secret-token-value",
            body={"id": "x"},
        )
        wait_until(lambda: "/api/video/callback" in serve.text())
    finally:
        assert serve.stop() in (0, -15)
    text = serve.text()
    assert "\x1b[" not in text and "color_message" not in text
    records = log_records(text)
    assert len(records) == len(text.splitlines())  # every line is JSON
    after = text.splitlines()[before:]
    assert not [ln for ln in after if "alembic" in ln]  # no alembic lines per /readyz
    access = [r for r in records if r["logger"] == "vidbatch.access"]
    readyz = [r for r in access if r["path"] == "/readyz"]
    assert len(readyz) == 3 and all(r["status"] == 200 and r["method"] == "GET" for r in readyz)
    assert all(r["request_id"].startswith("req_") and r["duration_ms"] >= 0 for r in readyz)
    balance = [r for r in access if r["path"] == "/api/v1/credits/balance"]
    assert [(r["status"], r["key_id"]) for r in balance] == [(403, None), (200, acc["key_id"])]
    callback = next(r for r in access if r["path"] == "/api/video/callback")
    assert callback["method"] == "POST"
    assert "secret-token-value" not in text and key not in text
    assert acc["api_key"] not in text


def test_access_log_off(tmp_path: Path, sim: SimulatorHandle) -> None:
    api_port = free_port()
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/v.db",
        GRSAI_HOST=sim.url,
        VIDBATCH_ACCESS_LOG="0",
        VIDBATCH_LOG_FORMAT="json",
    )
    serve = Proc(
        ["serve", "--no-worker", "--port", str(api_port)], env, tmp_path / "s.log", tmp_path
    )
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{api_port}/readyz"), what="ready")
    finally:
        serve.stop()
    assert not [r for r in log_records(serve.text()) if r["logger"] == "vidbatch.access"]


def test_sigterm_abandons_a_hanging_call_after_the_grace_and_the_lease_rescues_it(
    db_url: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    async def setup() -> str:
        engine = keyed_engine(db_url)
        try:
            caller = await new_account(engine, credits=100)
            return (await new_batch(engine, caller, [{"prompt": "hangs at create"}])).batch_id
        finally:
            await engine.dispose()

    batch_id = asyncio.run(setup())
    # the create reaches the provider, which never answers (for longer than the test runs)
    sim.configure(create_hang_rate=1.0, hang_max=300.0)
    env = clean_env(
        DATABASE_URL=db_url,
        GRSAI_HOST=sim.url,
        GRSAI_API_KEY="sk-hang",
        VIDBATCH_PROVIDER_READ_TIMEOUT="240",
        VIDBATCH_LEASE_SECONDS="250",
        VIDBATCH_SHUTDOWN_GRACE_SECONDS="1",
        VIDBATCH_REQUIRE_HTTPS_VIDEO_URL="false",
        VIDBATCH_LOG_FORMAT="json",
        VIDBATCH_SECRET_KEY=TEST_SECRET_KEY,
    )
    worker = Proc(["worker"], env, tmp_path / "w.log", tmp_path)
    try:
        wait_until(
            lambda: any(r["path"].startswith("/v1/video/") for r in sim.requests()),
            what="the create reaching the provider",
        )
        worker.p.send_signal(15)
        # far sooner than the 240-second read time-out: the call was abandoned
        code = worker.p.wait(timeout=60)
    finally:
        worker.stop()
    assert code == 0
    records = log_records(worker.text())
    assert [r for r in records if r.get("action") == "abandon"]
    assert records[-1]["msg"] == "worker stopped"

    async def rescue() -> tuple[Any, Any]:
        engine = keyed_engine(db_url)
        (row,) = await task_rows(engine, batch_id)
        sim.configure(create_hang_rate=0.0)
        settings = Settings(
            database_url=db_url,
            grsai_host=sim.url,
            grsai_api_key="sk-hang",
            callback_secret="x",
            require_https_video_url=False,
        )
        rt = await Runtime.open(settings, engine=engine)
        rt.clock = FakeClock(row.lease_expires_at)
        rt.clock.advance(1)  # the abandoned claim's lease has run out
        try:
            await run_until_settled(rt)
        finally:
            await rt.close()
        (after,) = await task_rows(engine, batch_id)
        await assert_audit_clean(engine)
        await engine.dispose()
        return row, after

    held, rescued = asyncio.run(rescue())
    # left as the abandoned worker had it: submitting, under its lease
    assert held.status == "submitting" and held.lease_owner is not None
    # the outcome of that submit is unknown: the default policy fails and refunds it
    assert (rescued.status, rescued.failure_reason) == ("failed", "ambiguous_submit")


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_headers_are_trusted_only_from_the_named_proxy(
    tmp_path: Path, sim: SimulatorHandle, trusted: bool
) -> None:
    api_port = free_port()
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path}/v.db", GRSAI_HOST=sim.url)
    args = ["serve", "--no-worker", "--port", str(api_port)]
    if trusted:
        args += ["--forwarded-allow-ips", "127.0.0.1"]
    serve = Proc(args, env, tmp_path / "s.log", tmp_path)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{api_port}/healthz"), what="ready")
        status, _ = http_json(
            "GET",
            f"http://127.0.0.1:{api_port}/healthz",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert status == 200
        wait_until(lambda: "203.0.113.9" in serve.text() or serve.text().count("/healthz") >= 2)
    finally:
        serve.stop()
    access = [r for r in log_records(serve.text()) if r.get("path") == "/healthz"]
    assert access[-1]["client"] == ("203.0.113.9" if trusted else "127.0.0.1")


def test_serve_stops_within_the_grace_while_a_provider_call_hangs(tmp_path: Path) -> None:
    api_port, sim_port = free_port(), free_port()
    base, sim_base = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sim_port}"
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/v.db",
        VIDBATCH_PORT=str(api_port),
        VIDBATCH_SIM_PORT=str(sim_port),
        VIDBATCH_PROVIDER_READ_TIMEOUT="240",
        VIDBATCH_LEASE_SECONDS="250",
        VIDBATCH_SHUTDOWN_GRACE_SECONDS="1",
        VIDBATCH_LOG_FORMAT="json",
    )
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidbatch",
            "accounts",
            "create",
            "acme",
            "--credits",
            "100",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["api_key"]
    serve = Proc(["serve", "--simulator"], env, tmp_path / "serve.log", tmp_path)
    try:
        wait_until(lambda: answers(f"{base}/readyz"), what="the API answering")
        assert (
            http_json("POST", f"{sim_base}/_sim/config", body={"create_hang_rate": 1.0})[0] == 200
        )
        status, _ = http_json(
            "POST",
            f"{base}/api/v1/batches",
            body={"items": [{"prompt": "hangs"}]},
            headers={"x-api-key": key},
        )
        assert status == 200
        wait_until(
            lambda: any(
                r["path"].startswith("/v1/video/")
                for r in http_json("GET", f"{sim_base}/_sim/requests")[1]
            ),
            what="the create reaching the simulator",
        )
        serve.p.send_signal(15)
        # far sooner than the 240-second read time-out (or the 30 seconds serve used to
        # give its worker): the call was abandoned after the 1-second grace
        code = serve.p.wait(timeout=25)
    finally:
        serve.stop()
    assert code in (0, -15)  # uvicorn ends by re-raising the SIGTERM it handled
    records = log_records(serve.text())
    assert [r for r in records if r.get("action") == "abandon"]
    assert [r for r in records if r.get("msg") == "worker stopped"]
