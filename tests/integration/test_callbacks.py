"""Provider callbacks: forged, malformed, duplicate, late and out-of-order ones change
nothing they should not; a valid final callback is confirmed with the provider first."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.helpers import assert_audit_clean, items, new_account, new_batch
from tests.integration.worker_helpers import run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.domain.callback_tokens import callback_token
from vidbatch.runtime import Runtime
from vidbatch.services.batches import Created
from vidbatch.worker.round import run_once

KEY = b"test-callback-secret"


def url(task_id: str, token: str | None) -> str:
    q = f"task_id={task_id}"
    if token is not None:
        q += f"&token={token}"
    return f"/api/video/callback?{q}"


async def processing_task(runtime: Runtime, sim: SimulatorHandle) -> tuple[Created, Any]:
    """A task running at the provider until ``sim.release()`` (its progress near 0)."""
    sim.configure(hold=True, gen_time=3600.0)
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    await run_once(runtime, deliver_webhooks=False)
    (row,) = await task_rows(runtime.engine, created.batch_id)
    assert row.status == "processing"
    return created, row


def final_body(remote_id: str, status: str = "succeeded") -> bytes:
    body = {
        "id": remote_id,
        "status": status,
        "progress": 100,
        "results": [{"url": "https://cdn.example/forged.mp4", "pid": "p"}],
        "failure_reason": "" if status == "succeeded" else "error",
        "error": "",
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize("token", [None, "", "0" * 40, "wrong"])
async def test_forged_callbacks_are_404_and_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle, token: str | None
) -> None:
    created, row = await processing_task(runtime, sim)
    r = await client.post(url(row.id, token), content=final_body(row.grsai_task_id))
    assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND"
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.video_url) == ("processing", None)


async def test_unknown_task_answers_the_same_404(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    token = callback_token(KEY, "no-such-task")
    r = await client.post(url("no-such-task", token), content=final_body("4-x"))
    assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND"


async def test_token_of_another_task_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    _, row = await processing_task(runtime, sim)
    r = await client.post(
        url(row.id, callback_token(KEY, "other-task")), content=final_body(row.grsai_task_id)
    )
    assert r.status_code == 404


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"status": "succeeded"}', b"\xff\xfe"])
async def test_malformed_body_is_400_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle, body: bytes
) -> None:
    created, row = await processing_task(runtime, sim)
    r = await client.post(url(row.id, callback_token(KEY, row.id)), content=body)
    assert r.status_code == 400 and r.json()["error"] == "INVALID_CALLBACK"
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert after.status == "processing"


async def test_callback_for_another_remote_task_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    created, row = await processing_task(runtime, sim)
    r = await client.post(
        url(row.id, callback_token(KEY, row.id)), content=final_body("4-someone-else")
    )
    assert r.status_code == 400
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert after.status == "processing"


async def test_success_claimed_by_the_body_is_confirmed_with_the_provider(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    """A valid-token callback claiming success while the provider says running: the task
    stays processing (the body is a hint, not the truth)."""
    created, row = await processing_task(runtime, sim)
    r = await client.post(
        url(row.id, callback_token(KEY, row.id)), content=final_body(row.grsai_task_id)
    )
    assert r.status_code == 200 and r.json()["success"] is True
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.video_url) == ("processing", None)


async def test_final_callback_records_the_confirmed_result_once(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    created, row = await processing_task(runtime, sim)
    assert sim.release() == 1  # done at the provider; no poll has seen it yet
    target = url(row.id, callback_token(KEY, row.id))
    r1 = await client.post(target, content=final_body(row.grsai_task_id))
    assert r1.status_code == 200 and r1.json()["status"] == "succeeded"
    (after,) = await task_rows(runtime.engine, created.batch_id)
    # the URL is the provider's, not the body's
    assert after.status == "succeeded" and after.video_url.startswith(sim.url)
    # a duplicate, and a late "failed" for the same task: terminal states absorb
    r2 = await client.post(target, content=final_body(row.grsai_task_id))
    r3 = await client.post(target, content=final_body(row.grsai_task_id, status="failed"))
    assert r2.json()["ignored"] is True and r3.json()["ignored"] is True
    progress = json.dumps({"id": row.grsai_task_id, "status": "running", "progress": 10})
    r4 = await client.post(target, content=progress)
    assert r4.status_code == 200
    (final,) = await task_rows(runtime.engine, created.batch_id)
    assert (final.status, final.video_url, final.progress) == ("succeeded", after.video_url, 100)
    await run_until_settled(runtime)
    await assert_audit_clean(runtime.engine)


async def test_progress_callbacks_only_move_progress_forward(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    created, row = await processing_task(runtime, sim)
    target = url(row.id, callback_token(KEY, row.id))
    for p in (40, 20):  # out of order
        body = json.dumps({"id": row.grsai_task_id, "status": "running", "progress": p})
        assert (await client.post(target, content=body)).status_code == 200
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.progress) == ("processing", 40)


async def test_a_progress_callback_never_claims_100(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    """Only a final state is 100%: a running task's callback saying 100 is held at 99."""
    created, row = await processing_task(runtime, sim)
    target = url(row.id, callback_token(KEY, row.id))
    for status in ("running", "processing"):
        body = json.dumps({"id": row.grsai_task_id, "status": status, "progress": 100})
        assert (await client.post(target, content=body)).status_code == 200
        (after,) = await task_rows(runtime.engine, created.batch_id)
        assert (after.status, after.progress) == ("processing", 99)
    sim.release()
    await run_until_settled(runtime)
    (done,) = await task_rows(runtime.engine, created.batch_id)
    assert (done.status, done.progress) == ("succeeded", 100)
    await assert_audit_clean(runtime.engine)


def result_calls(sim: SimulatorHandle) -> int:
    return sum(n for path, n in sim.stats()["calls_per_endpoint"].items() if "result" in path)


async def test_final_callbacks_for_a_final_task_cost_no_provider_call(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    """Duplicates of a final callback, at once or after the task ended, are answered from
    the database: one confirmation with the provider in all."""
    created, row = await processing_task(runtime, sim)
    assert sim.release() == 1
    target = url(row.id, callback_token(KEY, row.id))
    before = result_calls(sim)
    answers = await asyncio.gather(
        *(client.post(target, content=final_body(row.grsai_task_id)) for _ in range(4))
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert after.status == "succeeded"
    for status in ("succeeded", "failed"):
        late = await client.post(target, content=final_body(row.grsai_task_id, status))
        assert late.json()["ignored"] is True
    assert result_calls(sim) - before == 1
    await run_until_settled(runtime)
    await assert_audit_clean(runtime.engine)


async def test_a_final_callback_before_the_submit_is_recorded_is_polled_by_the_submitter(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    """The provider can call back before its answer to the submit reaches us: the callback
    only notes the time; the worker recording the submit sees it and, still holding the
    task, polls it at once — one poll, no second claim, no wait for the callback grace."""
    import random

    from vidbatch.worker import claims
    from vidbatch.worker.round import Round

    sim.configure(gen_time=0.0)
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    now = runtime.clock.now()
    async with runtime.engine.begin() as conn:
        (row,) = await claims.claim_for_submit(
            conn,
            created.batch_id,
            owner="submitter",
            now=now,
            lease_until=now + timedelta(seconds=60),
            limit=1,
        )
    assert row.status == "submitting"
    early = await client.post(url(row.id, callback_token(KEY, row.id)), content=final_body("r-1"))
    assert early.status_code == 200 and early.json()["status"] == "submitting"

    rnd = Round(runtime, "submitter", random.Random(0))
    await rnd.submit(row)
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert (after.status, after.poll_count) == ("succeeded", 1)
    assert after.video_url.startswith(sim.url)  # the provider's answer, not the body's
    assert (after.lease_owner, after.next_attempt_at) == (None, None)
    assert rnd.summary.poll["succeeded"] == 1
    polls = [r for r in sim.requests() if r["path"] == "/v1/draw/result"]
    assert len(polls) == 1
    await run_until_settled(runtime)
    await assert_audit_clean(runtime.engine)
