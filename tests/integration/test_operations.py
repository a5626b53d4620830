"""What an operator sees of the worker: one log line per failed item, the first poll in
webhook mode at the model's typical generation time, and a warning when callbacks never
arrive."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import new_account, new_batch
from tests.integration.worker_helpers import run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import FakeClock, utcnow
from vidbatch.runtime import Runtime
from vidbatch.startup import result_store_description
from vidbatch.worker.round import MISSED_CALLBACKS_WARNING, run_once


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "item_failed"]


async def test_every_failed_item_leaves_one_line_with_batch_item_and_reason(
    settings_factory: Any, engine: Any, sim: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    # the simulator's http video URLs with the https requirement on: the trap
    rt = await Runtime.open(settings_factory(require_https_video_url=True), engine=engine)
    try:
        caller = await new_account(engine, credits=1000)
        created = await new_batch(
            engine,
            caller,
            [
                {"prompt": "fine but served over http"},
                {"prompt": "refused [sim:reject]"},
                {"prompt": "moderated [sim:moderation]"},
            ],
        )
        sim.configure(gen_time=0.0)
        caplog.set_level(logging.INFO)
        await run_until_settled(rt)
    finally:
        await rt.close()
    rows = {r.id: r for r in await task_rows(engine, created.batch_id)}
    assert all(r.status == "failed" for r in rows.values())
    lines = failure_lines(caplog)
    assert sorted(r.task_id for r in lines) == sorted(rows)  # type: ignore[attr-defined]
    assert {r.batch_id for r in lines} == {created.batch_id}  # type: ignore[attr-defined]
    reasons = {r.task_id: r.getMessage() for r in lines}  # type: ignore[attr-defined]
    for task_id, row in rows.items():
        assert row.failure_reason in reasons[task_id]
    assert any("video URL is not https" in m for m in reasons.values())


async def test_webhook_mode_polls_first_at_the_models_typical_time(
    settings_factory: Any, engine: Any, sim: SimulatorHandle
) -> None:
    settings = settings_factory(
        app_url="https://videos.example.invalid", callback_grace_seconds=120.0
    )
    rt = await Runtime.open(settings, engine=engine)
    rt.clock = FakeClock(utcnow())
    try:
        caller = await new_account(engine, credits=1000)
        created = await new_batch(
            engine,
            caller,
            [{"prompt": "a", "model": "sora-2"}, {"prompt": "b", "model": "veo-pro"}],
        )
        rt.clock.advance(1)  # the batch was created on the real clock
        await run_once(rt, deliver_webhooks=False)
        rows = await task_rows(engine, created.batch_id)
        waits = {r.model: (r.next_attempt_at - r.submitted_at).total_seconds() for r in rows}
        # not the 120-second grace period: the typical generation time of each model
        assert waits == {"sora-2": 60.0, "veo-pro": 90.0}
    finally:
        await rt.close()


async def test_a_warning_when_tasks_keep_ending_without_callbacks(
    settings_factory: Any, engine: Any, sim: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    # The callback URL points nowhere the simulator can reach.
    settings = settings_factory(app_url="https://videos.example.invalid")
    rt = await Runtime.open(settings, engine=engine)
    rt.clock = FakeClock(utcnow())
    caplog.set_level(logging.INFO)
    try:
        sim.configure(gen_time=0.0)
        caller = await new_account(engine, credits=1000)
        await new_batch(
            engine, caller, [{"prompt": f"p{i}"} for i in range(MISSED_CALLBACKS_WARNING)]
        )
        rt.clock.advance(1)  # the batch was created on the real clock
        assert (await run_once(rt, deliver_webhooks=False)).dispatch[
            "tasks_started"
        ] == MISSED_CALLBACKS_WARNING
        assert not [r for r in caplog.records if getattr(r, "action", "") == "callbacks_missing"]
        rt.clock.advance(61)
        await run_until_settled(rt)
    finally:
        await rt.close()
    warnings = [r for r in caplog.records if getattr(r, "action", "") == "callbacks_missing"]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "https://videos.example.invalid/api/video/callback" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING


async def test_readyz_reports_a_provider_that_answered(
    client: Any, runtime: Runtime, sim: SimulatorHandle
) -> None:
    before = (await client.get("/readyz")).json()
    assert before["ok"] and before["provider"]["answered_recently"] is False
    caller = await new_account(runtime.engine, credits=100)
    await new_batch(runtime.engine, caller, [{"prompt": "one"}])
    await run_until_settled(runtime)
    after = (await client.get("/readyz")).json()
    assert after["provider"]["answered_recently"] is True
    assert after["provider"]["last_answer_at"].endswith("Z")
    store = after["result_store"]
    if runtime.result_store is None:
        assert store == {"writable": None, "detail": result_store_description(runtime.settings)}
        assert store["detail"].startswith("none")
    else:
        assert store["writable"] is True and store["detail"].endswith(": writable")
