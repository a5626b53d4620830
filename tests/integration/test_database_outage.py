"""A database that drops mid-run: /readyz fails and the worker keeps retrying; both
recover when it is back; the API answers 503 meanwhile, never as if rows were missing.
(PostgreSQL: the database is renamed away and back.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from tests.conftest import _pg_admin
from tests.helpers import assert_audit_clean, items, new_account, new_batch
from tests.helpers import keyed_engine as make_engine
from tests.integration.worker_helpers import batch_row, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.api.app import create_app
from vidbatch.api.deps import Authenticated, rate_limited
from vidbatch.runtime import Runtime
from vidbatch.services import accounts
from vidbatch.services.accounts import KeyIdentity
from vidbatch.settings import Settings
from vidbatch.worker.loop import WorkerLoop


def _database_name(url: str) -> str:
    name = make_url(url).database
    assert name, f"no database in {url}"
    return name


async def _rename(old: str, new: str) -> None:
    await _pg_admin(
        [
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{old}'",
            f'ALTER DATABASE "{old}" RENAME TO "{new}"',
        ]
    )


@pytest.mark.postgres
async def test_readyz_and_worker_recover_after_the_database_returns(
    pg_url: str, sim: SimulatorHandle
) -> None:
    name = _database_name(pg_url)
    # A write lost with the connection leaves its claim to expire: keep leases short.
    settings = Settings(
        database_url=pg_url,
        grsai_host=sim.url,
        grsai_api_key="sk-test",
        callback_secret="outage-test",
        poll_intervals="0.05,0.05,0.05",
        require_https_video_url=False,
        worker_idle_seconds=0.1,
        lease_seconds=2,
        provider_connect_timeout=0.5,
        provider_read_timeout=1.0,
    )
    engine = make_engine(pg_url)
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    loop = WorkerLoop(rt)
    running: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
            caller = await new_account(engine, credits=100)
            created = await new_batch(engine, caller, items(3))
            sim.configure(gen_time=1.0)
            running = asyncio.create_task(loop.run())
            await asyncio.sleep(0.5)
            await _rename(name, f"{name}_away")
            await asyncio.sleep(0.3)
            down = await client.get("/readyz")
            assert down.status_code == 503 and down.json()["ok"] is False
            await asyncio.sleep(1.0)  # the worker's rounds fail meanwhile; it keeps going
            assert not running.done()
            await _rename(f"{name}_away", name)
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                if (await batch_row(engine, created.batch_id)).settled_at is not None:
                    break
                await asyncio.sleep(0.1)
            assert (await batch_row(engine, created.batch_id)).settled_at is not None
            for row in await task_rows(engine, created.batch_id):
                # a submit whose answer could not be recorded is refunded, never lost
                assert row.status == "succeeded" or row.failure_reason == "ambiguous_submit"
            await assert_audit_clean(engine)
    finally:
        loop.stop()
        if running is not None:
            await asyncio.wait_for(running, 30)
        await rt.close()
        await engine.dispose()


def _known_key(account_id: str) -> Authenticated:
    """A key the API takes without asking the database (so the read itself meets it)."""
    return Authenticated(
        KeyIdentity(key_id="k", account_id=account_id, rate_limit_per_min=60, key_prefix="vb_")
    )


async def _read_batch(app: FastAPI, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        return await client.get(path, headers=headers)


@pytest.mark.postgres
async def test_a_batch_read_during_an_outage_is_503_not_404(pg_url: str) -> None:
    name = _database_name(pg_url)
    settings = Settings(database_url=pg_url, grsai_api_key="sk-test", callback_secret="outage")
    engine = make_engine(pg_url)
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    try:
        _, key = await accounts.create_account(engine, "acme", credits=100)
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, items(1))
        path = f"/api/v1/batches/{created.batch_id}"
        mine = {"x-api-key": key.api_key}
        assert (await _read_batch(app, path, mine)).status_code == 404  # another's batch
        await _rename(name, f"{name}_away")
        try:
            # The batch read itself meets the outage, on a pooled connection that died.
            app.dependency_overrides[rate_limited] = lambda: _known_key(caller.account_id)
            down = await _read_batch(app, path, {})
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "DATABASE_UNAVAILABLE"
            app.dependency_overrides.clear()
            down = await _read_batch(app, path, mine)  # the key check meets it
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "DATABASE_UNAVAILABLE"
        finally:
            await _rename(f"{name}_away", name)
        await engine.dispose()  # drop the connections the outage broke
        assert (await _read_batch(app, path, mine)).status_code == 404
    finally:
        await rt.close()
        await engine.dispose()


async def test_a_batch_read_with_the_database_unreachable_is_503_not_404(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/missing/vidbatch.db"  # a directory that does not exist
    settings = Settings(database_url=url, grsai_api_key="sk-test", callback_secret="outage")
    engine = make_engine(url)
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    app.dependency_overrides[rate_limited] = lambda: _known_key("acct")
    try:
        down = await _read_batch(app, "/api/v1/batches/b-1", {})
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "DATABASE_UNAVAILABLE"
        assert down.json()["request_id"] == down.headers["x-request-id"]
    finally:
        await rt.close()
        await engine.dispose()
