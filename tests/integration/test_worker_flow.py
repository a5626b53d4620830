"""The worker end to end against the simulator over real HTTP: polling and webhook mode."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch
from tests.integration.worker_helpers import batch_row, run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.api.app import create_app
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.worker.round import run_once

SEED_ITEMS: list[dict[str, Any]] = [
    {
        "prompt": "A cinematic video of a city",
        "model": "sora-2",
        "aspect_ratio": "9:16",
        "duration": 10,
    },
    {
        "prompt": "An anime style video",
        "model": "veo-flash",
        "aspect_ratio": "16:9",
        "meta": {"firstFrameUrl": "https://example.com/first.jpg"},
    },
]


async def test_polling_mode_settles_the_seed_batch(runtime: Runtime, sim: SimulatorHandle) -> None:
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, SEED_ITEMS)
    first = await run_once(runtime, deliver_webhooks=False)
    assert first.dispatch["tasks_started"] == 2
    rows = await task_rows(runtime.engine, created.batch_id)
    assert all(r.grsai_task_id and r.status in ("processing", "succeeded") for r in rows)
    assert (await batch_row(runtime.engine, created.batch_id)).frozen_credits == 60
    await run_until_settled(runtime)
    batch = await batch_row(runtime.engine, created.batch_id)
    assert (batch.status, batch.credits_spent, batch.credits_refunded) == ("completed", 60, 0)
    assert batch.settlement_status == "finalized" and batch.completed_at is not None
    rows = await task_rows(runtime.engine, created.batch_id)
    assert all(r.status == "succeeded" and r.video_url for r in rows)
    # the provider saw webHook "-1" (polling mode) and the right models
    creates = [r for r in sim.requests() if r["path"].startswith("/v1/video/")]
    assert sorted(r["body"]["model"] for r in creates) == ["sora-2", "veo3.1-fast"]
    assert all(r["body"]["webHook"] == "-1" for r in creates)
    assert await balance(runtime.engine, caller.account_id) == (40, 0)
    await assert_audit_clean(runtime.engine)


async def test_batches_well_over_ten_items_finish_with_failures_refunded(
    runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    body = [
        *items(23),
        {"prompt": "bad [sim:moderation]", "model": "sora-2"},
        {"prompt": "no url [sim:no-url]", "model": "sora-2"},
    ]
    created = await new_batch(runtime.engine, caller, body)
    await run_until_settled(runtime)
    batch = await batch_row(runtime.engine, created.batch_id)
    assert (batch.status, batch.success_count, batch.failed_count) == ("partial", 23, 2)
    assert (batch.credits_spent, batch.credits_refunded) == (230, 20)
    rows = await task_rows(runtime.engine, created.batch_id)
    assert rows[23].failure_type == "moderation"
    assert rows[24].failure_type == "model_error" and rows[24].video_url is None
    assert sim.stats()["tasks_created"] == 25
    await assert_audit_clean(runtime.engine)


@pytest.mark.parametrize("webhook", [True])
async def test_webhook_mode_settles_from_callbacks(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle, webhook: bool
) -> None:
    """The provider calls back to our real HTTP server; the last callback settles the batch
    (or, with the archive on, the next round once the videos are stored)."""
    import asyncio
    import socket

    import uvicorn

    from vidbatch.api.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = settings_factory(app_url=f"http://127.0.0.1:{port}", callback_grace_seconds=60.0)
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        # Held until the round is over: a final callback landing during it would let that
        # same round settle the batch on a slow machine.
        sim.configure(hold=True)
        caller = await new_account(engine, credits=100)
        created = await new_batch(engine, caller, SEED_ITEMS)
        await run_once(rt, deliver_webhooks=False)
        creates = [r for r in sim.requests() if r["path"].startswith("/v1/video/")]
        assert all(
            r["body"]["webHook"].startswith(f"http://127.0.0.1:{port}/api/video/callback")
            for r in creates
        )
        assert sim.release() == 2
        # Without the archive the callback that ends the last task settles the batch
        # itself (tests/integration/test_callback_settlement.py pins that down); with it
        # (SQLite's default), the next round archives, then settles.
        archive = settings.result_store_spec.enabled
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            rows = await task_rows(engine, created.batch_id)
            if all(r.status == "succeeded" and r.callback_at is not None for r in rows):
                break
            await asyncio.sleep(0.05)
        assert all(r.status == "succeeded" for r in rows), [r.status for r in rows]
        # the callbacks carried the news (confirmed by /draw/result); a callback that beat
        # the submit's own write is followed by one poll, no more
        assert all(r.callback_at is not None and r.poll_count <= 1 for r in rows)
        summary = await run_once(rt, deliver_webhooks=False)
        if archive:
            assert summary.settle["settled"] == 1
        batch = await batch_row(engine, created.batch_id)
        assert batch.settled_at is not None  # once: the audit below checks the ledger
        assert (batch.status, batch.credits_spent) == ("completed", 60)
        await assert_audit_clean(engine)
    finally:
        server.should_exit = True
        await serving
        await rt.close()


async def test_metrics_need_the_metrics_token_when_it_is_set(
    settings_factory: Any, runtime: Runtime
) -> None:
    token = "metrics-token-0123456789-abcdefghijkl"
    app = create_app(settings_factory(metrics_token=token), runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test") as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": token}):
            refused = await c.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"] == "METRICS_UNAUTHORIZED"
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "vidbatch_credits_total" not in refused.text
        shown = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert shown.status_code == 200 and "vidbatch_credits_total" in shown.text
        assert (await c.get("/healthz")).status_code == 200  # liveness stays open


async def test_metrics_after_a_flow(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    caller = await new_account(runtime.engine, credits=100)
    key = await account_svc.create_key(runtime.engine, caller.account_id)
    created = await client.post(
        "/api/v1/batches",
        headers={"x-api-key": key.api_key},
        json={"items": [*items(2), {"prompt": "x [sim:moderation]"}]},
    )
    assert created.status_code == 200, created.text
    await run_until_settled(runtime)
    text = (await client.get("/metrics")).text
    assert 'vidbatch_tasks{status="succeeded"} 2.0' in text
    assert 'vidbatch_tasks{status="failed"} 1.0' in text
    assert 'vidbatch_submits_total{outcome="ok"} 3.0' in text
    assert 'vidbatch_polls_total{outcome="succeeded"} 2.0' in text
    assert 'vidbatch_batches_settled_total{status="partial"} 1.0' in text
    assert 'vidbatch_credits_total{kind="charged"} 20.0' in text
    assert 'vidbatch_credits_total{kind="refunded"} 10.0' in text
    assert 'vidbatch_credits_total{kind="reserved"} 30.0' in text
    assert "vidbatch_provider_latency_seconds_bucket" in text
    assert "vidbatch_round_duration_seconds_count" in text
