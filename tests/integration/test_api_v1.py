"""The /api/v1 customer API over the app, on SQLite and PostgreSQL: batches, items,
results, cancel, credits, and one customer never seeing another's batches."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, finish_tasks
from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, video_tasks
from vidbatch.services import accounts as account_svc
from vidbatch.services.accounts import NewKey
from vidbatch.services.settlement import settle_batch

V1 = "/api/v1"


async def new_key(engine: AsyncEngine, credits: int = 10_000, rate: int = 600) -> NewKey:
    _, key = await account_svc.create_account(
        engine, "acme", credits=credits, rate_limit_per_min=rate
    )
    return key


def auth(key: NewKey, **headers: str) -> dict[str, str]:
    return {"x-api-key": key.api_key, **headers}


async def create(client: Any, key: NewKey, n: int = 3, **extra: Any) -> dict[str, Any]:
    body = {"items": [{"prompt": f"video {i}", "metadata": {"sku": i}} for i in range(n)], **extra}
    r = await client.post(f"{V1}/batches", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def set_running(engine: AsyncEngine, batch_id: str, *indexes: int) -> None:
    """Items submitted to the provider, as the worker leaves them (the batch is running)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(video_tasks)
            .where(video_tasks.c.batch_job_id == batch_id, video_tasks.c.batch_index.in_(indexes))
            .values(status="processing", grsai_task_id="remote", next_attempt_at=utcnow())
        )
        await conn.execute(
            update(batch_jobs).where(batch_jobs.c.id == batch_id).values(status="processing")
        )


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert (body["ok"], body["error"]) == (False, code)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- create ------------------------------------------------------------------------------


async def test_create_with_request_id_in_body(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    body = {
        "items": [{"prompt": "p", "metadata": {"order": "A-1"}}],
        "request_id": "order-A-1",
        "metadata": {"campaign": "spring"},
    }
    r = await client.post(f"{V1}/batches", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    assert (r.json()["mode"], r.json()["request_id"], r.headers["x-request-id"]) == (
        "v1",
        "order-A-1",
        "order-A-1",
    )
    again = await client.post(f"{V1}/batches", json=body, headers=auth(key))
    assert again.json()["idempotent_replay"] is True
    assert again.json()["batch_id"] == r.json()["batch_id"]
    # The enterprise endpoint shares the same idempotency keys.
    ent = await client.post("/api/enterprise/video-batch", json=body, headers=auth(key))
    assert ent.json()["batch_id"] == r.json()["batch_id"]
    view = (await client.get(f"{V1}/batches/{r.json()['batch_id']}", headers=auth(key))).json()
    assert view["metadata"] == {"campaign": "spring"}


async def test_v1_needs_a_key(client: Any, engine: AsyncEngine) -> None:
    for method, path in [
        ("POST", "/batches"),
        ("GET", "/batches"),
        ("GET", "/batches/x"),
        ("GET", "/batches/x/items"),
        ("POST", "/batches/x/cancel"),
        ("GET", "/batches/x/results"),
        ("GET", "/credits/balance"),
        ("GET", "/credits/ledger"),
    ]:
        r = await client.request(method, V1 + path)
        assert_error(r, 401, "MISSING_API_KEY")


# --- reading batches ---------------------------------------------------------------------


async def test_get_batch(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    created = await create(client, key, n=4)
    await finish_tasks(engine, created["batch_id"], {0: "succeeded", 1: "failed"})
    r = await client.get(f"{V1}/batches/{created['batch_id']}", headers=auth(key))
    assert r.status_code == 200
    view = r.json()
    assert r.headers["x-ratelimit-limit"] == "600"
    assert {
        k: view[k]
        for k in (
            "batch_id",
            "request_id",
            "status",
            "total_count",
            "succeeded_count",
            "failed_count",
            "pending_count",
            "cost_per_video",
            "credits_reserved",
            "credits_settled",
            "credits_refunded",
            "completed_at",
        )
    } == {
        "batch_id": created["batch_id"],
        "request_id": created["request_id"],
        "status": "pending",  # the published word for a batch not started
        "total_count": 4,
        "succeeded_count": 1,
        "failed_count": 1,
        "pending_count": 2,
        "cost_per_video": 10,
        "credits_reserved": 40,
        "credits_settled": 0,
        "credits_refunded": 0,
        "completed_at": None,
    }
    assert view["created_at"].endswith("Z")


async def test_list_batches_newest_first_with_cursor_and_status(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    ids = [(await create(client, key, n=1))["batch_id"] for _ in range(5)]
    other = await new_key(engine)
    await create(client, other, n=1)  # never listed for key

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"{V1}/batches", params=params, headers=auth(key))
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert page["limit"] == 2
        seen += [b["batch_id"] for b in page["batches"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3

    await client.post(f"{V1}/batches/{ids[1]}/cancel", headers=auth(key))
    r = await client.get(f"{V1}/batches", params={"status": "cancelled"}, headers=auth(key))
    assert [b["batch_id"] for b in r.json()["batches"]] == [ids[1]]
    default = (await client.get(f"{V1}/batches", headers=auth(key))).json()
    assert (default["limit"], len(default["batches"]), default["next_cursor"]) == (20, 5, None)

    for params in (
        {"cursor": "not-a-cursor"},
        {"cursor": "bm9waXBl"},
        {"limit": 101},
        {"limit": 0},
        {"status": "lost"},
    ):
        r = await client.get(f"{V1}/batches", params=params, headers=auth(key))
        assert_error(r, 400, "INVALID_PAYLOAD")


async def test_items_with_status_filter_and_paging(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    created = await create(client, key, n=6)
    bid = created["batch_id"]
    await finish_tasks(engine, bid, {0: "succeeded", 1: "failed", 2: "succeeded"})
    await set_running(engine, bid, 3)

    r = await client.get(f"{V1}/batches/{bid}/items", headers=auth(key))
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (6, 100, 0)
    assert [i["index"] for i in page["items"]] == list(range(6))
    assert [i["status"] for i in page["items"]] == [
        "succeeded",
        "failed",
        "succeeded",
        "running",
        "pending",
        "pending",
    ]
    first = page["items"][0]
    assert set(first) == {
        "item_id",
        "index",
        "status",
        "prompt",
        "model",
        "duration",
        "video_url",
        "thumbnail_url",
        "error",
        "failure_type",
        "failure_reason",
        "metadata",
        "created_at",
        "completed_at",
        *ARCHIVE_FIELDS,
    }
    assert (first["prompt"], first["model"], first["metadata"]) == ("video 0", "sora-2", {"sku": 0})
    assert first["video_url"].startswith("https://")
    assert page["items"][1]["failure_type"] == "model_error"
    assert (first["duration"], first["thumbnail_url"], first["failure_reason"]) == (10, None, None)

    r = await client.get(
        f"{V1}/batches/{bid}/items", params={"status": "succeeded"}, headers=auth(key)
    )
    assert [i["index"] for i in r.json()["items"]] == [0, 2]
    r = await client.get(
        f"{V1}/batches/{bid}/items",
        params={"status": "pending", "limit": 1, "offset": 1},
        headers=auth(key),
    )
    assert (r.json()["total"], [i["index"] for i in r.json()["items"]]) == (2, [5])
    r = await client.get(f"{V1}/batches/{bid}/items", params={"status": "done"}, headers=auth(key))
    assert_error(r, 400, "INVALID_PAYLOAD")


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_refunds_exactly_the_unstarted_items(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, credits=1000)
    bid = (await create(client, key, n=6))["batch_id"]  # 6 x 10 reserved
    await finish_tasks(engine, bid, {0: "succeeded", 1: "failed"})
    await set_running(engine, bid, 2)

    r = await client.post(f"{V1}/batches/{bid}/cancel", headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "ok": True,
        "batch_id": bid,
        "status": "running",  # item 2 still runs: charged only if it succeeds
        "cancelled_items": 3,
        "running_items": 1,
        "credits_refunded": 30,
    }
    items = (await client.get(f"{V1}/batches/{bid}/items", headers=auth(key))).json()["items"]
    cancelled = items[3]
    assert (cancelled["status"], cancelled["failure_type"], cancelled["failure_reason"]) == (
        "failed",
        "unknown",
        "cancelled",
    )
    r = await client.get(
        f"{V1}/batches/{bid}/items", params={"status": "failed"}, headers=auth(key)
    )
    assert [i["index"] for i in r.json()["items"]] == [1, 3, 4, 5]
    # Items 0-2 stay reserved until they end: 30 frozen.
    assert await balance(engine, key.account_id) == (1000, 30)
    await assert_audit_clean(engine)

    # The running item succeeds; settlement charges the two successes, refunds the failure.
    await finish_tasks(engine, bid, {2: "succeeded"})
    async with engine.begin() as conn:
        await settle_batch(conn, bid, utcnow())
    assert await balance(engine, key.account_id) == (980, 0)
    view = (await client.get(f"{V1}/batches/{bid}", headers=auth(key))).json()
    assert (view["status"], view["credits_settled"], view["credits_refunded"]) == (
        "cancelled",
        20,
        40,
    )
    await assert_audit_clean(engine)

    r = await client.post(f"{V1}/batches/{bid}/cancel", headers=auth(key))
    assert_error(r, 400, "BATCH_ALREADY_ENDED")


async def test_cancel_of_a_waiting_batch_refunds_everything(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine, credits=100)
    bid = (await create(client, key, n=5))["batch_id"]
    assert await balance(engine, key.account_id) == (100, 50)
    r = await client.post(f"{V1}/batches/{bid}/cancel", headers=auth(key))
    assert r.json() == {
        "ok": True,
        "batch_id": bid,
        "status": "cancelled",
        "cancelled_items": 5,
        "running_items": 0,
        "credits_refunded": 50,
    }
    assert await balance(engine, key.account_id) == (100, 0)
    async with engine.connect() as conn:
        row = (await conn.execute(select(batch_jobs).where(batch_jobs.c.id == bid))).one()
    assert (row.status, row.settled_at is not None) == ("cancelled", True)
    await assert_audit_clean(engine)


# --- tenants -----------------------------------------------------------------------------


async def test_another_accounts_batch_is_404_like_a_missing_one(
    client: Any, engine: AsyncEngine
) -> None:
    owner = await new_key(engine)
    intruder = await new_key(engine)
    bid = (await create(client, owner, n=2))["batch_id"]
    missing = "00000000-0000-0000-0000-000000000000"
    for method, suffix in [
        ("GET", ""),
        ("GET", "/items"),
        ("GET", "/results"),
        ("GET", "/results?format=csv"),
        ("POST", "/cancel"),
    ]:
        answers = []
        for target in (bid, missing):
            path = f"{V1}/batches/{target}{suffix}"
            r = await client.request(
                method, path, headers=auth(intruder, **{"x-request-id": "probe"})
            )
            assert_error(r, 404, "NOT_FOUND")
            body = r.json()
            answers.append({**body, "message": body["message"].replace(target, "<id>")})
        assert answers[0] == answers[1], (method, suffix)
    # Nothing changed for the owner.
    view = (await client.get(f"{V1}/batches/{bid}", headers=auth(owner))).json()
    assert (view["status"], view["pending_count"]) == ("pending", 2)
    listed = (await client.get(f"{V1}/batches", headers=auth(intruder))).json()
    assert listed["batches"] == []
    ledger = (
        await client.get(f"{V1}/credits/ledger", params={"batch_id": bid}, headers=auth(intruder))
    ).json()
    assert ledger["entries"] == []


# --- results -----------------------------------------------------------------------------

#: The result archive's fields, in every item view and export (tests/integration/test_archive
#: checks their values).
ARCHIVE_FIELDS = {
    "source_url",
    "archive_status",
    "video_size_bytes",
    "video_sha256",
    "video_duration_seconds",
    "video_width",
    "video_height",
}


async def test_results_jsonl_and_csv_over_several_pages(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, credits=100_000)
    bid = (await create(client, key, n=1203))["batch_id"]
    await finish_tasks(engine, bid, {0: "succeeded", 1: "failed", 1202: "succeeded"})

    r = await client.get(f"{V1}/batches/{bid}/results", headers=auth(key))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "x-ratelimit-remaining" in r.headers
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["index"] for line in lines] == list(range(1203))
    assert set(lines[0]) == {
        "index",
        "item_id",
        "status",
        "video_url",
        "thumbnail_url",
        "error",
        "failure_type",
        "failure_reason",
        "metadata",
        *ARCHIVE_FIELDS,
    }
    assert (lines[0]["status"], lines[0]["metadata"]) == ("succeeded", {"sku": 0})
    assert lines[0]["video_url"] == "https://cdn.example/v.mp4"
    assert (lines[1]["status"], lines[1]["failure_type"]) == ("failed", "model_error")
    assert (lines[600]["status"], lines[600]["video_url"]) == ("pending", None)
    assert lines[1202]["status"] == "succeeded"

    r = await client.get(f"{V1}/batches/{bid}/results", params={"format": "csv"}, headers=auth(key))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1203
    assert rows[0] == {
        "index": "0",
        "item_id": lines[0]["item_id"],
        "status": "succeeded",
        "video_url": "https://cdn.example/v.mp4",
        "thumbnail_url": "",
        "error": "",
        "failure_type": "",
        "failure_reason": "",
        "metadata": '{"sku":0}',
        "source_url": "https://cdn.example/v.mp4",
        **dict.fromkeys(ARCHIVE_FIELDS - {"source_url"}, ""),  # nothing archived here
    }
    assert [int(row["index"]) for row in rows] == list(range(1203))

    r = await client.get(f"{V1}/batches/{bid}/results", params={"format": "xml"}, headers=auth(key))
    assert_error(r, 400, "INVALID_PAYLOAD")


# --- credits -----------------------------------------------------------------------------


async def test_balance_and_ledger(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, credits=500)
    first = (await create(client, key, n=3))["batch_id"]
    second = (await create(client, key, n=2))["batch_id"]
    await client.post(f"{V1}/batches/{second}/cancel", headers=auth(key))

    r = await client.get(f"{V1}/credits/balance", headers=auth(key))
    assert r.json() == {"ok": True, "available": 470, "reserved": 30, "total": 500}

    r = await client.get(f"{V1}/credits/ledger", headers=auth(key))
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 50, 0)
    assert [e["type"] for e in page["entries"]] == ["refund", "reserve", "reserve", "purchase"]
    # As published: the signed amount for the customer and the available balance after it.
    shown = [(e["type"], e["delta"], e["balance_after"]) for e in page["entries"]]
    assert shown == [("refund", 20, 470), ("reserve", -20, 450), ("reserve", -30, 470),
                     ("purchase", 500, 500)]  # fmt: skip
    refund = page["entries"][0]
    assert {
        k: refund[k]
        for k in (
            "entry_type",
            "balance_delta",
            "reserved_delta",
            "total_after",
            "reserved_after",
            "batch_id",
            "item_id",
        )
    } == {
        "entry_type": "refund",
        "balance_delta": 0,
        "reserved_delta": -20,
        "total_after": 500,
        "reserved_after": 30,
        "batch_id": second,
        "item_id": None,
    }
    assert isinstance(refund["id"], str) and refund["id"].isdigit()
    assert set(refund) == {
        "id",
        "type",
        "delta",
        "balance_after",
        "batch_id",
        "item_id",
        "description",
        "created_at",
        "entry_type",
        "balance_delta",
        "reserved_delta",
        "total_after",
        "reserved_after",
    }

    async def entries(**params: Any) -> list[dict[str, Any]]:
        r = await client.get(f"{V1}/credits/ledger", params=params, headers=auth(key))
        assert r.status_code == 200, (params, r.text)
        return list(r.json()["entries"])

    async def kinds(**params: Any) -> list[tuple[str, str | None]]:
        return [(e["type"], e["batch_id"]) for e in await entries(**params)]

    assert await kinds(batch_id=first) == [("reserve", first)]
    assert await kinds(type="reserve") == [("reserve", second), ("reserve", first)]
    assert await kinds(type="reserve", limit=1, offset=1) == [("reserve", first)]
    assert await entries(**{"from": "2999-01-01T00:00:00Z"}) == []
    assert len(await entries(to="2999-01-01T00:00:00")) == 4  # no offset: UTC
    assert (
        len(await entries(**{"from": "2000-01-01T00:00:00+02:00", "to": "2999-01-01T00:00:00Z"}))
        == 4
    )

    for params in (
        {"type": "gift"},
        {"from": "yesterday"},
        {"limit": 0},
        {"offset": -1},
        {"batch_id": "not an id"},
    ):
        r = await client.get(f"{V1}/credits/ledger", params=params, headers=auth(key))
        assert_error(r, 400, "INVALID_PAYLOAD")
