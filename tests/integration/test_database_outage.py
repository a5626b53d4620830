"""A database that drops mid-run: /readyz fails and the worker keeps retrying; both
recover when it is back. (PostgreSQL: the database is renamed away and back.)"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _pg_admin
from tests.helpers import assert_audit_clean, items, new_account, new_batch
from tests.integration.worker_helpers import batch_row, task_rows
from vidbatch.api.app import create_app
from vidbatch.db.engine import make_engine
from vidbatch.runtime import Runtime
from vidbatch.settings import Settings
from vidbatch.worker.loop import WorkerLoop

pytestmark = pytest.mark.postgres


async def _rename(old: str, new: str) -> None:
    await _pg_admin(
        [
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{old}'",
            f'ALTER DATABASE "{old}" RENAME TO "{new}"',
        ]
    )


async def test_readyz_and_worker_recover_after_the_database_returns(pg_url, sim):
    name = make_url(pg_url).database
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
    running = None
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
