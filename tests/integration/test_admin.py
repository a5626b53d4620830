"""The admin API on SQLite and PostgreSQL, driven over HTTP in-process: who gets in, what
the operator sees (and that it agrees with the ledger), and what its actions do to money."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from tests.conftest import ADMIN_TOKEN
from tests.helpers import (
    assert_audit_clean,
    balance,
    finish_tasks,
    items,
    new_account,
    new_batch,
)
from tests.helpers import keyed_engine as make_engine
from tests.integration.test_dashboard import sign_in as dashboard_sign_in
from tests.integration.webhook_receiver import Receiver, running_receiver
from tests.integration.worker_helpers import batch_row, run_until_settled
from vidbatch.api.app import create_app
from vidbatch.cli.main import app as cli_app
from vidbatch.clock import FakeClock, utcnow
from vidbatch.db.schema import accounts as accounts_table
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks, webhook_deliveries
from vidbatch.db.schema import enterprise_api_keys as keys_table
from vidbatch.domain.catalog import default_catalog
from vidbatch.domain.validation import validate_batch
from vidbatch.exceptions import CreditLimitExceeded, InvalidInput, NothingToRetry
from vidbatch.services import accounts as account_svc
from vidbatch.services import retry
from vidbatch.services.batches import Caller, insert_batch
from vidbatch.services.ledger import MAX_CREDITS
from vidbatch.webhooks.delivery import deliver_due

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


def admin_routes(app: Any) -> list[tuple[str, str]]:
    """Every admin operation (method, path with placeholder ids), from the OpenAPI document."""
    out = []
    for path, item in app.openapi()["paths"].items():
        if path.startswith("/api/admin"):
            concrete = (
                path.replace("{batch_id}", "b")
                .replace("{account_id}", "a")
                .replace("{key_id}", "k")
            )
            out += [(method.upper(), concrete) for method in item]
    return out


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(f"/api/admin{path}", headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def post(client: httpx.AsyncClient, path: str, body: Any = None, status: int = 200) -> Any:
    response = await client.post(f"/api/admin{path}", headers=ADMIN, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def settle_with(
    rt: Any, batch_id: str, outcomes: dict[int, str], failure_types: dict[int, str] | None = None
) -> None:
    """End a batch's tasks as given, then let the worker settle it."""
    await finish_tasks(rt.engine, batch_id, outcomes)
    async with rt.engine.begin() as conn:
        for index, kind in (failure_types or {}).items():
            await conn.execute(
                update(video_tasks)
                .where(
                    video_tasks.c.batch_job_id == batch_id,
                    video_tasks.c.batch_index == index,
                )
                .values(failure_type=kind, error_message=f"refused: {kind}")
            )
    await run_until_settled(rt)


# --- who gets in -----------------------------------------------------------------------------


async def test_every_admin_route_needs_the_admin_token(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    caller = await new_account(runtime.engine)
    new = await account_svc.create_key(runtime.engine, caller.account_id)
    routes = admin_routes(client.app)  # type: ignore[attr-defined]
    assert len(routes) == 17
    clock = runtime.clock = FakeClock()
    for method, path in routes:
        clock.advance(61)  # one wrong token per route: never enough to be throttled
        anonymous = await client.request(method, path)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.json()["error"] == "ADMIN_UNAUTHORIZED"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.json()["error"] == "ADMIN_UNAUTHORIZED"
        for headers in ({"Authorization": f"Bearer {new.api_key}"}, {"x-api-key": new.api_key}):
            customer = await client.request(method, path, headers=headers)
            assert customer.status_code == 403, (method, path, customer.text)
            assert customer.json()["error"] == "ADMIN_FORBIDDEN"
    # the token itself opens them (here: a missing batch is an honest 404)
    missing = await client.get("/api/admin/batches/nope", headers=ADMIN)
    assert (missing.status_code, missing.json()["error"]) == (404, "NOT_FOUND")


async def test_wrong_admin_tokens_are_throttled_per_address(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    clock = runtime.clock = FakeClock()
    wrong = {"Authorization": "Bearer " + "w" * 40}
    for _ in range(20):  # no token at all guesses nothing and is never throttled
        assert (await client.get("/api/admin/batches")).status_code == 401
    for _ in range(10):
        assert (await client.get("/api/admin/batches", headers=wrong)).status_code == 401
    throttled = await client.get("/api/admin/batches", headers=wrong)
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "TOO_MANY_ATTEMPTS"
    assert throttled.headers["retry-after"] == "60"
    # the right token is refused too while throttled: a refusal tells a guesser nothing
    assert (await client.get("/api/admin/batches", headers=ADMIN)).status_code == 429
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client.app, client=("10.1.2.3", 5000)),  # type: ignore[attr-defined]
        base_url="http://vidbatch.test",
    )
    async with other:  # another address is not held back
        assert (await other.get("/api/admin/batches", headers=ADMIN)).status_code == 200
    clock.advance(30)
    later = await client.get("/api/admin/batches", headers=ADMIN)
    assert (later.status_code, later.headers["retry-after"]) == (429, "30")
    clock.advance(30)
    assert (await client.get("/api/admin/batches", headers=ADMIN)).status_code == 200
    # the right token forgot the failures: ten more wrong ones before the next 429
    for _ in range(10):
        assert (await client.get("/api/admin/batches", headers=wrong)).status_code == 401
    assert (await client.get("/api/admin/batches", headers=wrong)).status_code == 429


async def test_admin_api_and_dashboard_sign_in_count_wrong_tokens_together(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    runtime.clock = FakeClock()
    wrong = {"Authorization": "Bearer " + "w" * 40}
    for _ in range(5):
        assert (await client.get("/api/admin/batches", headers=wrong)).status_code == 401
        assert (await client.post("/admin/login", data={"token": "w" * 40})).status_code == 401
    assert (await client.get("/api/admin/batches", headers=wrong)).status_code == 429
    assert (await client.post("/admin/login", data={"token": ADMIN_TOKEN})).status_code == 429


async def test_without_a_configured_token_the_admin_api_does_not_exist(
    settings_factory: Any, runtime: Any
) -> None:
    app = create_app(settings_factory(admin_token=None), runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test") as c:
        for method, path in admin_routes(app):
            for headers in ({}, ADMIN, {"Authorization": "Bearer "}):
                response = await c.request(method, path, headers=headers)
                assert response.status_code == 404, (method, path)
                assert response.json()["error"] == "ADMIN_DISABLED"


async def test_openapi_documents_the_admin_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ops = [
        (p, op)
        for p, item in spec["paths"].items()
        if p.startswith("/api/admin")
        for op in item.values()
    ]
    assert len(ops) == 17
    for path, op in ops:
        assert op["tags"] == ["admin"], path
        assert op["security"] == [{"AdminToken": []}], path
        assert op["summary"] and {"401", "403", "404", "429"} <= set(op["responses"]), path
    assert spec["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"


# --- batches -------------------------------------------------------------------------------


async def ledger_by_batch(engine: Any) -> dict[str, dict[str, int]]:
    """The ledger read directly: what each batch reserved, was charged and got back."""
    out: dict[str, dict[str, int]] = {}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(credit_ledger).where(credit_ledger.c.batch_id.is_not(None)))
        ).all()
    for r in rows:
        f = out.setdefault(r.batch_id, {"reserved": 0, "charged": 0, "refunded": 0})
        if r.type == "reserve":
            f["reserved"] += r.frozen_delta
        elif r.type == "settle":
            f["charged"] -= r.delta
        elif r.type == "refund":
            f["refunded"] -= r.frozen_delta
    return out


async def test_batch_list_reconciles_with_the_ledger_and_pages(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    acme = await new_account(runtime.engine, credits=5000, name="acme")
    other = await new_account(runtime.engine, credits=5000, name="other")
    done = await new_batch(runtime.engine, acme, items(3))
    await settle_with(runtime, done.batch_id, {0: "succeeded", 1: "succeeded", 2: "failed"})
    cancelled = await new_batch(runtime.engine, acme, items(2, model="veo-flash"))
    await post(client, f"/batches/{cancelled.batch_id}/cancel")
    queued = await new_batch(runtime.engine, other, items(4))

    listing = await get(client, "/batches")
    by_id = {b["batch_id"]: b for b in listing["batches"]}
    assert set(by_id) == {done.batch_id, cancelled.batch_id, queued.batch_id}
    ledger = await ledger_by_batch(runtime.engine)
    for batch_id, b in by_id.items():
        figures = ledger[batch_id]
        assert {k: b[k] for k in figures} == figures, batch_id
        assert b["ledger"] == {**figures, "net": figures["charged"]}
        assert b["net"] == b["charged"] and b["reconciled"] is True
    d = by_id[done.batch_id]
    assert (d["status"], d["reserved"], d["charged"], d["refunded"], d["held"]) == (
        "partial",
        30,
        20,
        10,
        0,
    )
    assert (by_id[cancelled.batch_id]["status"], by_id[cancelled.batch_id]["refunded"]) == (
        "cancelled",
        100,
    )
    q = by_id[queued.batch_id]
    assert (q["status"], q["reserved"], q["charged"], q["held"]) == ("queued", 40, 0, 40)
    assert q["account_id"] == other.account_id

    # filters
    mine = await get(client, "/batches", account_id=acme.account_id)
    assert {b["batch_id"] for b in mine["batches"]} == {done.batch_id, cancelled.batch_id}
    partial = await get(client, "/batches", status="partial")
    assert [b["batch_id"] for b in partial["batches"]] == [done.batch_id]
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert (await get(client, "/batches", **{"from": later}))["batches"] == []
    assert len((await get(client, "/batches", to=later))["batches"]) == 3
    # paging by cursor: every batch once, newest first
    seen, cursor = [], None
    while True:
        page = await get(client, "/batches", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [b["batch_id"] for b in page["batches"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [b["batch_id"] for b in listing["batches"]] and len(seen) == 3
    bad = await client.get("/api/admin/batches", headers=ADMIN, params={"cursor": "%%%"})
    assert (bad.status_code, bad.json()["error"]) == (400, "INVALID_PAYLOAD")


async def test_batch_detail_tasks_and_billing(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    body = items(5)
    body[4]["metadata"] = {"sku": "X"}
    created = await new_batch(runtime.engine, caller, body)
    await settle_with(
        runtime,
        created.batch_id,
        {0: "succeeded", 1: "succeeded", 2: "succeeded", 3: "failed", 4: "failed"},
        {4: "moderation"},
    )
    detail = await get(client, f"/batches/{created.batch_id}")
    assert detail["task_counts"] == {"failed": 2, "succeeded": 3}
    assert detail["failure_types"] == {"model_error": 1, "moderation": 1}
    assert (detail["charged"], detail["refunded"], detail["reconciled"]) == (30, 20, True)
    assert detail["settled_at"] and detail["child_batch_ids"] == []

    page = await get(client, f"/batches/{created.batch_id}/tasks", limit=2, offset=3)
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 3)
    t3, t4 = page["tasks"]
    assert (t3["index"], t3["status"], t3["failure_type"]) == (3, "failed", "model_error")
    assert (t4["failure_type"], t4["error"], t4["metadata"]) == (
        "moderation",
        "refused: moderation",
        {"sku": "X"},
    )
    for field in (
        "prompt",
        "model",
        "failure_reason",
        "poll_count",
        "attempts",
        "last_error",
        "grsai_task_id",
        "video_url",
    ):
        assert field in t3
    failed = await get(client, f"/batches/{created.batch_id}/tasks", status="failed")
    assert [t["index"] for t in failed["tasks"]] == [3, 4]
    ok = await get(client, f"/batches/{created.batch_id}/tasks", status="succeeded", limit=1)
    assert ok["total"] == 3 and ok["tasks"][0]["video_url"].startswith("https://")

    bill = await get(client, f"/batches/{created.batch_id}/billing")
    assert [e["type"] for e in bill["entries"]] == ["reserve", "settle", "refund"]
    assert bill["totals"] == {
        "reserved": 50,
        "charged": 30,
        "refunded": 20,
        "net": 30,
        "entries": 3,
        "balance_delta": -30,
        "frozen_delta": 0,
    }
    assert bill["batch"] == {"reserved": 50, "charged": 30, "refunded": 20, "net": 30, "held": 0}
    assert bill["reconciled"] is True
    assert bill["entries"][-1]["balance_after"] == 970
    for path in ("", "/tasks", "/billing", "/webhooks"):
        missing = await client.get(f"/api/admin/batches/nope{path}", headers=ADMIN)
        assert missing.status_code == 404


async def test_cancel(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(runtime.engine, caller, items(3))
    done = await post(client, f"/batches/{created.batch_id}/cancel")
    assert done == {
        "ok": True,
        "batch_id": created.batch_id,
        "status": "cancelled",
        "cancelled_items": 3,
        "credits_refunded": 30,
    }
    assert await balance(runtime.engine, caller.account_id) == (1000, 0)
    again = await post(client, f"/batches/{created.batch_id}/cancel", status=400)
    assert again["error"] == "BATCH_ALREADY_ENDED"
    assert (await post(client, "/batches/nope/cancel", status=404))["error"] == "NOT_FOUND"
    await assert_audit_clean(runtime.engine)


# --- retrying failed items -----------------------------------------------------------------


async def test_retry_failed_charges_only_what_it_submits(
    client: httpx.AsyncClient, runtime: Any, sim: Any
) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    body: dict[str, Any] = {"items": items(4), "metadata": {"order": 7}}
    body["items"][3]["metadata"] = {"sku": "D"}
    parent = await new_batch(runtime.engine, caller, body)
    premature = await post(client, f"/batches/{parent.batch_id}/retry-failed", status=409)
    assert premature["error"] == "BATCH_NOT_SETTLED"
    await settle_with(
        runtime,
        parent.batch_id,
        {0: "succeeded", 1: "failed", 2: "failed", 3: "failed"},
        {2: "moderation"},
    )
    before = await get(client, f"/batches/{parent.batch_id}")
    assert await balance(runtime.engine, caller.account_id) == (990, 0)

    child = await post(client, f"/batches/{parent.batch_id}/retry-failed")
    assert child["parent_batch_id"] == parent.batch_id
    assert (child["retried_indices"], child["excluded_moderation"]) == ([1, 3], 1)
    assert (child["total_count"], child["required_credits"]) == (2, 20)
    assert child["idempotent_replay"] is False
    assert await balance(runtime.engine, caller.account_id) == (990, 20)
    # asking again is the same child, not a second charge
    again = await post(client, f"/batches/{parent.batch_id}/retry-failed", {})
    assert again["batch_id"] == child["batch_id"] and again["idempotent_replay"] is True
    assert await balance(runtime.engine, caller.account_id) == (990, 20)

    await run_until_settled(runtime)  # the child's items go to the provider and succeed
    child_view = await get(client, f"/batches/{child['batch_id']}")
    assert (child_view["source"], child_view["parent_batch_id"]) == ("admin-retry", parent.batch_id)
    assert (child_view["status"], child_view["charged"], child_view["refunded"]) == (
        "completed",
        20,
        0,
    )
    assert child_view["metadata"] == {"order": 7} and child_view["reconciled"]
    tasks = (await get(client, f"/batches/{child['batch_id']}/tasks"))["tasks"]
    assert [(t["index"], t["prompt"]) for t in tasks] == [(1, "video 1"), (3, "video 3")]
    assert tasks[1]["metadata"] == {"sku": "D"}
    assert sim.stats()["tasks_created"] == 2  # only what was retried went upstream
    after = await get(client, f"/batches/{parent.batch_id}")
    assert after["child_batch_ids"] == [child["batch_id"]]
    for figure in ("status", "reserved", "charged", "refunded", "net", "ledger"):
        assert after[figure] == before[figure], figure
    assert await balance(runtime.engine, caller.account_id) == (970, 0)

    # with moderation, a separate child of only what the first did not take: items 1 and 3
    # are not charged a second time
    with_mod = await post(
        client, f"/batches/{parent.batch_id}/retry-failed", {"include_moderation": True}
    )
    assert with_mod["retried_indices"] == [2] and with_mod["batch_id"] != child["batch_id"]
    assert with_mod["required_credits"] == 10
    nothing = await post(client, f"/batches/{child['batch_id']}/retry-failed", status=409)
    assert nothing["error"] == "NOTHING_TO_RETRY"
    await assert_audit_clean(runtime.engine)


async def test_retry_failed_variants_at_once_take_each_item_once(
    client: httpx.AsyncClient, runtime: Any, db_url: str
) -> None:
    """Both variants posted at once: every failed item lands in exactly one child, and the
    account is charged for each once (the second variant takes only what is left)."""
    caller = await new_account(runtime.engine, credits=1000)
    parent = await new_batch(runtime.engine, caller, items(5))
    await settle_with(
        runtime,
        parent.batch_id,
        dict.fromkeys(range(5), "failed"),
        {0: "moderation", 1: "moderation"},
    )
    assert await balance(runtime.engine, caller.account_id) == (1000, 0)

    async def ask(include_moderation: bool) -> httpx.Response:
        return await client.post(
            f"/api/admin/batches/{parent.batch_id}/retry-failed",
            headers=ADMIN,
            json={"include_moderation": include_moderation},
        )

    answers = await asyncio.gather(ask(False), ask(True), ask(False), ask(True))
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    await _assert_each_failed_item_retried_once(runtime.engine, parent.batch_id, 5)
    assert await balance(runtime.engine, caller.account_id) == (1000, 50)
    await assert_audit_clean(runtime.engine)

    if not db_url.startswith("postgresql"):
        return
    # two processes (two engines, two connection pools) asking at once
    second = await new_batch(runtime.engine, caller, items(5))
    await settle_with(
        runtime, second.batch_id, dict.fromkeys(range(5), "failed"), {4: "moderation"}
    )
    before = await balance(runtime.engine, caller.account_id)
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        outcomes = await asyncio.gather(
            *(
                retry.retry_failed(
                    eng,
                    second.batch_id,
                    include_moderation=variant,
                    catalog=runtime.settings.catalog,
                    allow_private_webhooks=True,
                    webhook_max_attempts=4,
                )
                for eng, variant in zip(engines * 2, (False, True, True, False), strict=True)
            ),
            return_exceptions=True,
        )
    finally:
        for eng in engines:
            await eng.dispose()
    assert all(not isinstance(o, Exception) or isinstance(o, NothingToRetry) for o in outcomes)
    await _assert_each_failed_item_retried_once(runtime.engine, second.batch_id, 5)
    assert await balance(runtime.engine, caller.account_id) == (before[0], before[1] + 50)
    await assert_audit_clean(runtime.engine)


async def _assert_each_failed_item_retried_once(engine: Any, parent_id: str, failed: int) -> None:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(video_tasks.c.batch_index, batch_jobs.c.frozen_credits)
                .join(batch_jobs, batch_jobs.c.id == video_tasks.c.batch_job_id)
                .where(batch_jobs.c.parent_batch_id == parent_id)
            )
        ).all()
    assert sorted(r.batch_index for r in rows) == list(range(failed))


async def _failed_task_ids(engine: AsyncEngine, batch_id: str) -> dict[int, str]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(video_tasks.c.batch_index, video_tasks.c.id).where(
                    video_tasks.c.batch_job_id == batch_id, video_tasks.c.status == "failed"
                )
            )
        ).all()
    return {r.batch_index: r.id for r in rows}


async def _insert_retry(
    conn: Any, account_id: str, retry_of: list[str], count: int | None = None
) -> str:
    """A batch (of ``count`` items, one per id by default) whose tasks retry ``retry_of``,
    written straight through insert_batch: no parent lock, no look at what was already
    retried, not linked to any parent."""
    count = len(retry_of) if count is None else count
    spec = validate_batch(
        {"items": items(count)},
        catalog=default_catalog(),
        max_items=count,
        allow_private_webhooks=True,
    )
    batch_id = str(uuid.uuid4())
    await insert_batch(
        conn,
        Caller(account_id=account_id, key_id=None),
        spec,
        batch_id=batch_id,
        request_id=f"bypass-{batch_id}",
        idempotency_key=None,
        fingerprint=None,
        source="admin-retry",
        parent_batch_id=None,
        client_ip=None,
        user_agent=None,
        webhook_max_attempts=4,
        now=utcnow(),
        retry_of=retry_of,
    )
    return batch_id


async def test_retry_failed_tasks_name_what_they_retry_and_the_database_refuses_twice(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    """Each child task carries the id of the task it retries; a second retry of an item is
    refused by the database itself, without the service's lock or its look at children."""
    caller = await new_account(runtime.engine, credits=1000)
    parent = await new_batch(runtime.engine, caller, items(4))
    await settle_with(
        runtime,
        parent.batch_id,
        {0: "succeeded", 1: "failed", 2: "failed", 3: "failed"},
        {3: "moderation"},
    )
    failed = await _failed_task_ids(runtime.engine, parent.batch_id)
    child = await post(client, f"/batches/{parent.batch_id}/retry-failed")
    assert child["retried_indices"] == [1, 2]
    async with runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(video_tasks.c.batch_index, video_tasks.c.retry_of_task_id).where(
                    video_tasks.c.batch_job_id == child["batch_id"]
                )
            )
        ).all()
    assert sorted(map(tuple, rows)) == [(1, failed[1]), (2, failed[2])]
    before = await balance(runtime.engine, caller.account_id)

    # an item the service already retried: refused, nothing written
    with pytest.raises(IntegrityError):
        async with runtime.engine.begin() as conn:
            await _insert_retry(conn, caller.account_id, [failed[1]])
    # an item not retried yet: the first retry goes in, the second is refused
    async with runtime.engine.begin() as conn:
        first = await _insert_retry(conn, caller.account_id, [failed[3]])
    with pytest.raises(IntegrityError):
        async with runtime.engine.begin() as conn:
            await _insert_retry(conn, caller.account_id, [failed[3]])
    with pytest.raises(ValueError, match="retried task id"):
        async with runtime.engine.begin() as conn:
            await _insert_retry(conn, caller.account_id, [failed[2], failed[3]], count=1)
    assert await balance(runtime.engine, caller.account_id) == (before[0], before[1] + 10)

    # through the public path the item is taken (409, nothing charged), and asking again
    # without moderation is still the same child
    taken = await post(
        client,
        f"/batches/{parent.batch_id}/retry-failed",
        {"include_moderation": True},
        status=409,
    )
    assert taken["error"] == "NOTHING_TO_RETRY"
    again = await post(client, f"/batches/{parent.batch_id}/retry-failed")
    assert (again["batch_id"], again["idempotent_replay"]) == (child["batch_id"], True)
    assert await balance(runtime.engine, caller.account_id) == (before[0], before[1] + 10)
    async with runtime.engine.connect() as conn:
        holders = (
            (
                await conn.execute(
                    select(video_tasks.c.batch_job_id).where(
                        video_tasks.c.retry_of_task_id == failed[3]
                    )
                )
            )
            .scalars()
            .all()
        )
    assert holders == [first]
    await assert_audit_clean(runtime.engine)


async def test_retry_failed_racing_a_writer_without_the_lock_answers_409(
    client: httpx.AsyncClient, runtime: Any, db_url: str
) -> None:
    """A writer that retries the same items without locking the parent commits while the
    retry waits: the unique retry_of_task_id refuses the retry's insert, and the caller gets
    NOTHING_TO_RETRY (not a 500); the items are reserved once."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: the retry cannot overlap the writer")
    caller = await new_account(runtime.engine, credits=1000)
    parent = await new_batch(runtime.engine, caller, items(3))
    await settle_with(runtime, parent.batch_id, dict.fromkeys(range(3), "failed"))
    failed = await _failed_task_ids(runtime.engine, parent.batch_id)
    assert await balance(runtime.engine, caller.account_id) == (1000, 0)

    async with runtime.engine.connect() as writer:
        await writer.begin()
        other = await _insert_retry(writer, caller.account_id, [failed[i] for i in range(3)])
        pid = (await writer.execute(sql_text("SELECT pg_backend_pid()"))).scalar_one()
        asked = asyncio.create_task(
            client.post(f"/api/admin/batches/{parent.batch_id}/retry-failed", headers=ADMIN)
        )
        # the retry has read the parent (nothing retried yet) and now waits on our locks
        waiting = 0
        async with runtime.engine.connect() as watcher:
            for _ in range(1000):
                waiting = (
                    await watcher.execute(
                        sql_text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE :pid = ANY(pg_blocking_pids(pid))"
                        ),
                        {"pid": pid},
                    )
                ).scalar_one()
                # pg_stat_activity is read once per transaction: a new one for each look
                await watcher.rollback()
                if waiting or asked.done():
                    break
                await asyncio.sleep(0.01)
        assert waiting == 1 and not asked.done()
        await writer.commit()
    answer = await asked
    assert (answer.status_code, answer.json()["error"]) == (409, "NOTHING_TO_RETRY"), answer.text
    assert await balance(runtime.engine, caller.account_id) == (1000, 30)
    async with runtime.engine.connect() as conn:
        holders = (
            (
                await conn.execute(
                    select(video_tasks.c.batch_job_id).where(
                        video_tasks.c.retry_of_task_id.in_(failed.values())
                    )
                )
            )
            .scalars()
            .all()
        )
    assert holders == [other] * 3
    await assert_audit_clean(runtime.engine)


async def test_retry_failed_refusals(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=100)
    only_mod = await new_batch(runtime.engine, caller, items(1))
    await settle_with(runtime, only_mod.batch_id, {0: "failed"}, {0: "moderation"})
    refused = await post(client, f"/batches/{only_mod.batch_id}/retry-failed", status=409)
    assert refused["error"] == "NOTHING_TO_RETRY" and "include_moderation" in refused["message"]
    # the account cannot pay for the retry: 402 and nothing written
    await post(
        client, f"/accounts/{caller.account_id}/adjust", {"credits": -95, "reason": "chargeback"}
    )
    poor = await post(
        client,
        f"/batches/{only_mod.batch_id}/retry-failed",
        {"include_moderation": True},
        status=402,
    )
    assert (poor["error"], poor["required"], poor["available"]) == ("INSUFFICIENT_CREDITS", 10, 5)
    assert (await get(client, "/batches"))["batches"][0]["batch_id"] == only_mod.batch_id
    assert (await post(client, "/batches/nope/retry-failed", status=404))["error"] == "NOT_FOUND"
    bad = await post(client, f"/batches/{only_mod.batch_id}/retry-failed", {"x": 1}, status=400)
    assert bad["error"] == "INVALID_PAYLOAD"
    await assert_audit_clean(runtime.engine)


# --- webhooks ------------------------------------------------------------------------------


async def drain(rt: Any) -> None:
    """Deliver until nothing is left, every wait skipped."""
    for _ in range(50):
        async with rt.engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.next_attempt_at.is_not(None))
                .values(next_attempt_at=utcnow())
            )
        if await deliver_due(rt, owner="test") == (0, 0):
            return
    raise AssertionError("deliveries never ended")


async def test_webhook_attempts_and_resend(
    client: httpx.AsyncClient, runtime: Any, receiver: Receiver
) -> None:
    caller = await new_account(runtime.engine)
    created = await new_batch(
        runtime.engine, caller, {"items": items(2), "webhook_url": receiver.at("/hook")}
    )
    await settle_with(runtime, created.batch_id, {0: "succeeded", 1: "failed"})
    receiver.default = 500
    await drain(runtime)
    view = await get(client, f"/batches/{created.batch_id}/webhooks")
    assert [d["event_type"] for d in view["deliveries"]] == [
        "batch.created",
        "batch.completed",
        "batch.refunded",
    ]
    assert all(
        (d["state"], d["attempts"], d["last_status"], d["last_error"])
        == ("failed", 4, 500, "HTTP 500")
        for d in view["deliveries"]
    )
    assert (view["webhook_status"], view["webhook_attempts"]) == ("failed", 12)
    assert all(d["payload"] is None for d in view["deliveries"])
    full = await get(client, f"/batches/{created.batch_id}/webhooks", include_payload="true")
    assert full["deliveries"][1]["payload"]["items"][1]["status"] == "failed"

    # the receiver is fixed; the operator sends the final event again
    receiver.default = 200
    resent = (await post(client, f"/batches/{created.batch_id}/webhooks/resend"))["delivery"]
    assert (resent["event_type"], resent["state"], resent["attempts"]) == (
        "batch.completed",
        "pending",
        0,
    )
    assert (await batch_row(runtime.engine, created.batch_id)).webhook_status == "pending"
    await drain(runtime)
    assert receiver.seen[-1].event == "batch.completed"
    view = await get(client, f"/batches/{created.batch_id}/webhooks")
    states = {d["event_type"]: (d["state"], d["attempts"]) for d in view["deliveries"]}
    assert states == {
        "batch.created": ("failed", 4),
        "batch.completed": ("delivered", 1),
        "batch.refunded": ("failed", 4),
    }
    assert view["webhook_status"] == "failed"  # two events are still undelivered
    for event in ("batch.created", "batch.refunded"):
        await post(client, f"/batches/{created.batch_id}/webhooks/resend", {"event_type": event})
    await drain(runtime)
    view = await get(client, f"/batches/{created.batch_id}/webhooks")
    assert view["webhook_status"] == "sent" and view["webhook_last_error"] is None
    ids = {d["event_type"]: d["event_id"] for d in view["deliveries"]}
    assert receiver.seen[-1].headers["webhook-id"] in ids.values()  # same id as before

    plain = await new_batch(runtime.engine, caller, items(1))
    none = await post(client, f"/batches/{plain.batch_id}/webhooks/resend", status=409)
    assert none["error"] == "NO_WEBHOOK_EVENTS"
    running = await post(
        client,
        f"/batches/{created.batch_id}/webhooks/resend",
        {"event_type": "batch.running"},
        status=409,
    )
    assert running["error"] == "NO_WEBHOOK_EVENTS"


# --- accounts and keys ---------------------------------------------------------------------


async def test_accounts_and_adjustments(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=100, name="acme")
    await new_batch(runtime.engine, caller, items(3))
    (acc,) = (await get(client, "/accounts"))["accounts"]
    assert (
        acc["account_id"],
        acc["name"],
        acc["balance_credits"],
        acc["frozen_credits"],
        acc["available_credits"],
    ) == (caller.account_id, "acme", 100, 30, 70)
    done = await post(
        client,
        f"/accounts/{caller.account_id}/adjust",
        {"credits": 25, "reason": "goodwill", "idempotency_key": "t-1"},
    )
    assert (done["entry"]["type"], done["entry"]["delta"], done["entry"]["description"]) == (
        "adjustment",
        25,
        "goodwill",
    )
    assert done["account"]["available_credits"] == 95
    # the same idempotency key posts once
    await post(
        client,
        f"/accounts/{caller.account_id}/adjust",
        {"credits": 25, "reason": "goodwill", "idempotency_key": "t-1"},
    )
    assert await balance(runtime.engine, caller.account_id) == (125, 30)
    too_much = await post(
        client, f"/accounts/{caller.account_id}/adjust", {"credits": -96, "reason": "x"}, status=402
    )
    assert too_much["error"] == "INSUFFICIENT_CREDITS"
    for bad in ({"credits": 0, "reason": "x"}, {"credits": 5}, {"credits": 5, "reason": ""}):
        answer = await post(client, f"/accounts/{caller.account_id}/adjust", bad, status=400)
        assert answer["error"] == "INVALID_PAYLOAD"
    missing = await post(client, "/accounts/nope/adjust", {"credits": 5, "reason": "x"}, status=404)
    assert missing["error"] == "NOT_FOUND"
    await assert_audit_clean(runtime.engine)


async def test_a_balance_never_exceeds_the_credit_cap(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    """Adjustments up to the cap are taken; one credit more is refused with the balance
    unchanged (the stored figures stay exact integers on both databases)."""
    caller = await new_account(runtime.engine, credits=0)
    adjust = f"/accounts/{caller.account_id}/adjust"
    await post(client, adjust, {"credits": MAX_CREDITS - 3, "reason": "big"})
    await post(client, adjust, {"credits": 3, "reason": "to the cap"})
    assert await balance(runtime.engine, caller.account_id) == (MAX_CREDITS, 0)
    refused = await post(client, adjust, {"credits": 1, "reason": "one more"}, status=409)
    assert refused["error"] == "CREDIT_LIMIT_EXCEEDED" and str(MAX_CREDITS) in refused["message"]
    with pytest.raises(CreditLimitExceeded):
        await account_svc.topup(runtime.engine, caller.account_id, 1, key="order-9")
    assert await balance(runtime.engine, caller.account_id) == (MAX_CREDITS, 0)
    # at the cap the account still spends, and may be topped up again afterwards
    created = await new_batch(runtime.engine, caller, items(2))
    await settle_with(runtime, created.batch_id, {0: "succeeded", 1: "failed"})
    assert await balance(runtime.engine, caller.account_id) == (MAX_CREDITS - 10, 0)
    await post(client, adjust, {"credits": 10, "reason": "back to the cap"})
    assert await balance(runtime.engine, caller.account_id) == (MAX_CREDITS, 0)
    await assert_audit_clean(runtime.engine)

    # an account stored above the cap before it existed still reserves and spends
    legacy = await new_account(runtime.engine, credits=0, name="legacy")
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(accounts_table)
            .where(accounts_table.c.id == legacy.account_id)
            .values(balance_credits=MAX_CREDITS + 5)
        )
        await conn.execute(
            credit_ledger.insert().values(
                account_id=legacy.account_id,
                type="adjustment",
                delta=MAX_CREDITS + 5,
                frozen_delta=0,
                balance_after=MAX_CREDITS + 5,
                frozen_after=0,
                idempotency_key="legacy",
                created_at=utcnow(),
            )
        )
    await new_batch(runtime.engine, legacy, items(1))
    await post(client, f"/accounts/{legacy.account_id}/adjust", {"credits": -1, "reason": "x"})
    more = await post(
        client, f"/accounts/{legacy.account_id}/adjust", {"credits": 1, "reason": "x"}, status=409
    )
    assert more["error"] == "CREDIT_LIMIT_EXCEEDED"
    assert await balance(runtime.engine, legacy.account_id) == (MAX_CREDITS + 4, 10)
    await assert_audit_clean(runtime.engine)


async def test_credits_must_be_strict_bounded_integers(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    """``true`` is not one credit and ``"5"`` not five."""
    caller = await new_account(runtime.engine, credits=100)
    adjust = f"/accounts/{caller.account_id}/adjust"
    for credits in (True, "5", 5.0, MAX_CREDITS + 1, -MAX_CREDITS - 1):
        bad = await post(client, adjust, {"credits": credits, "reason": "x"}, status=400)
        assert bad["error"] == "INVALID_PAYLOAD", credits
        assert "credits" in str(bad["details"]), bad
    assert await balance(runtime.engine, caller.account_id) == (100, 0)
    await assert_audit_clean(runtime.engine)


async def test_rate_limits_are_bounded_before_the_database(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    """A rate limit beyond 1..1,000,000 (or not a JSON integer) is a 400 naming the field
    on both databases, never PostgreSQL's INTEGER overflowing into a 500."""
    caller = await new_account(runtime.engine, credits=100)
    keys = f"/accounts/{caller.account_id}/keys"
    (key,) = (await get(client, keys))["keys"]
    for limit in (2**31, 10**12 - 1, 1_000_001, True, "60", 0):
        for path, body in (
            (keys, {"rate_limit_per_min": limit}),
            (f"/keys/{key['key_id']}/rate-limit", {"rate_limit_per_min": limit}),
        ):
            bad = await post(client, path, body, status=400)
            assert bad["error"] == "INVALID_PAYLOAD" and "rate_limit_per_min" in str(bad), bad
    ok = await post(client, keys, {"rate_limit_per_min": 1_000_000})
    assert ok["key"]["rate_limit_per_min"] == 1_000_000
    assert len((await get(client, keys))["keys"]) == 2
    with pytest.raises(InvalidInput, match="rate_limit_per_min"):
        await account_svc.create_key(runtime.engine, caller.account_id, rate_limit_per_min=2**31)
    with pytest.raises(InvalidInput, match="rate_limit_per_min"):
        await account_svc.set_key_state(runtime.engine, key["key_id"], rate_limit_per_min=2**31)
    await assert_audit_clean(runtime.engine)


async def test_keys_are_shown_once_and_managed(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine)
    made = await post(
        client, f"/accounts/{caller.account_id}/keys", {"name": "ci", "rate_limit_per_min": 7}
    )
    api_key, secret = made["api_key"], made["webhook_secret"]
    assert api_key.startswith("vb_") and secret.startswith("whsec_")
    key_id = made["key"]["key_id"]
    assert (made["key"]["name"], made["key"]["rate_limit_per_min"]) == ("ci", 7)
    assert api_key.startswith(made["key"]["key_prefix"])
    customer = {"x-api-key": api_key}
    assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 200

    listing = await client.get(f"/api/admin/accounts/{caller.account_id}/keys", headers=ADMIN)
    keys = listing.json()["keys"]
    assert [k["name"] for k in keys] == ["default", "ci"]
    for k in keys:
        assert "api_key" not in k and "key_hash" not in k and "webhook_secret" not in k
    async with runtime.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(keys_table.c.key_hash, keys_table.c.webhook_secret).where(
                    keys_table.c.id == key_id
                )
            )
        ).one()
    for text in (api_key, secret, stored.key_hash):
        assert text not in listing.text
    assert (await post(client, f"/keys/{key_id}/deactivate"))["key"]["is_active"] is False
    refused = await client.get("/api/v1/credits/balance", headers=customer)
    assert (refused.status_code, refused.json()["error"]) == (403, "INVALID_API_KEY")
    assert (await post(client, f"/keys/{key_id}/activate"))["key"]["is_active"] is True
    assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 200
    limited = await post(client, f"/keys/{key_id}/rate-limit", {"rate_limit_per_min": 120})
    assert limited["key"]["rate_limit_per_min"] == 120
    assert (
        await post(client, f"/keys/{key_id}/rate-limit", {"rate_limit_per_min": 0}, status=400)
    )["error"] == "INVALID_PAYLOAD"

    rotated = await post(client, f"/keys/{key_id}/rotate-webhook-secret", {"overlap_seconds": 3600})
    assert rotated["webhook_secret"] != secret and rotated["webhook_secret"].startswith("whsec_")
    assert rotated["previous_secret_valid_until"]
    keys = (await get(client, f"/accounts/{caller.account_id}/keys"))["keys"]
    assert keys[1]["webhook_secret_rotation_ends_at"] == rotated["previous_secret_valid_until"]
    listing = await client.get(f"/api/admin/accounts/{caller.account_id}/keys", headers=ADMIN)
    assert rotated["webhook_secret"] not in listing.text and secret not in listing.text

    for path in (
        "/keys/nope/activate",
        "/keys/nope/deactivate",
        "/keys/nope/revoke",
        "/keys/nope/rotate-webhook-secret",
    ):
        assert (await post(client, path, status=404))["error"] == "NOT_FOUND"
    assert (await post(client, "/keys/nope/rate-limit", {"rate_limit_per_min": 5}, status=404))[
        "error"
    ] == "NOT_FOUND"
    for path in ("/accounts/nope/keys",):
        assert (await client.get(f"/api/admin{path}", headers=ADMIN)).status_code == 404
        assert (await post(client, path, status=404))["error"] == "NOT_FOUND"
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(keys_table))).scalar_one() == 2


async def test_a_revoked_key_is_never_activated_again(
    client: httpx.AsyncClient, runtime: Any, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidbatch")
    caller = await new_account(runtime.engine)
    made = await post(client, f"/accounts/{caller.account_id}/keys", {"name": "leaked"})
    key_id, customer = made["key"]["key_id"], {"x-api-key": made["api_key"]}
    # revoked with `vidbatch keys revoke` (the CLI in-process, on its own engine)
    revoked = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["keys", "revoke", key_id], env={"DATABASE_URL": db_url}
    )
    assert revoked.exit_code == 0, revoked.output
    refused = await post(client, f"/keys/{key_id}/activate", status=409)
    assert refused["error"] == "KEY_REVOKED"
    assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 403
    # deactivate / activate do not bring it back either; the dashboard's activate neither
    after = (await post(client, f"/keys/{key_id}/deactivate"))["key"]
    assert after["is_active"] is False and after["revoked_at"]
    assert (await post(client, f"/keys/{key_id}/activate", status=409))["error"] == "KEY_REVOKED"
    csrf = await dashboard_sign_in(client)
    page = await client.post(f"/admin/keys/{key_id}/activate", data={"csrf": csrf})
    assert page.status_code == 303
    assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 403
    shown = await client.get("/admin/accounts")
    assert "Revoked for good" in shown.text
    assert f'action="/admin/keys/{key_id}/activate"' not in shown.text
    # revoking again changes nothing; revoking through the API is final the same way
    first = (await get(client, f"/accounts/{caller.account_id}/keys"))["keys"][1]["revoked_at"]
    assert (await post(client, f"/keys/{key_id}/revoke"))["key"]["revoked_at"] == first
    other = await post(client, f"/accounts/{caller.account_id}/keys", {"name": "other"})
    other_id = other["key"]["key_id"]
    assert (await post(client, f"/keys/{other_id}/revoke"))["key"]["is_active"] is False
    assert (await post(client, f"/keys/{other_id}/activate", status=409))["error"] == "KEY_REVOKED"

    actions = [
        (r.actor, r.action, r.key_id)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "action", "").startswith("key_")
    ]
    assert ("cli", "key_revoked", key_id) in actions
    assert ("admin api", "key_activation_refused", key_id) in actions
    assert ("admin api", "key_deactivated", key_id) in actions
    assert ("dashboard", "key_activation_refused", key_id) in actions
    assert ("admin api", "key_revoked", other_id) in actions
    assert ("admin api", "key_created", other_id) in actions
    for secret in (made["api_key"], made["webhook_secret"], other["api_key"]):
        assert secret not in caplog.text


async def test_deactivation_stays_reversible(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine)
    made = await post(client, f"/accounts/{caller.account_id}/keys", {"name": "paused"})
    key_id, customer = made["key"]["key_id"], {"x-api-key": made["api_key"]}
    for _ in range(2):
        key = (await post(client, f"/keys/{key_id}/deactivate"))["key"]
        assert (key["is_active"], key["revoked_at"]) == (False, None)
        assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 403
        assert (await post(client, f"/keys/{key_id}/activate"))["key"]["is_active"] is True
        assert (await client.get("/api/v1/credits/balance", headers=customer)).status_code == 200
