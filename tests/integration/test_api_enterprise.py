"""The enterprise batch endpoint over the app, on SQLite and PostgreSQL: the original's
contract (fields, codes, request ids), idempotency, rate limits and their races."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance
from vidbatch.api.app import create_app
from vidbatch.db.schema import (
    api_usage,
    batch_jobs,
    credit_ledger,
    enterprise_api_keys,
    video_tasks,
)
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.services.accounts import NewKey

URL = "/api/enterprise/video-batch"

#: The seed contract's acceptance example, verbatim.
SEED_BODY: dict[str, Any] = {
    "items": [
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
}


async def new_key(engine: AsyncEngine, credits: int = 1000, rate: int = 60) -> NewKey:
    _, key = await account_svc.create_account(
        engine, "acme", credits=credits, rate_limit_per_min=rate
    )
    return key


def auth(key: NewKey, **headers: str) -> dict[str, str]:
    return {"x-api-key": key.api_key, **headers}


def body_of(n: int, model: str = "sora-2") -> dict[str, Any]:
    return {"items": [{"prompt": f"video {i}", "model": model} for i in range(n)]}


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    return (
        await count(engine, batch_jobs),
        await count(engine, video_tasks),
        await count(engine, credit_ledger),
    )


@asynccontextmanager
async def app_client(settings: Any, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app built with other settings than the ``client`` fixture's."""
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vidbatch.test"
        ) as c:
            yield c
    finally:
        await rt.close()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["ok"] is False
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- the happy path ----------------------------------------------------------------------


async def test_seed_example_is_accepted_and_freezes_60(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    r = await client.post(URL, json=SEED_BODY, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "ok": True,
        "batch_id": body["batch_id"],
        "total_count": 2,
        "cost_per_video": 50,  # 10 (sora-2) and 50 (veo-flash) differ: the highest
        "required_credits": 60,
        "available_credits": 940,
        "status": "queued",
        "mode": "enterprise",
        "request_id": r.headers["x-request-id"],
        "idempotent_replay": False,
    }
    assert body["request_id"].startswith("req_")
    assert r.headers["x-ratelimit-limit"] == "60"
    assert r.headers["x-ratelimit-remaining"] == "59"
    assert int(r.headers["x-ratelimit-reset"]) % 60 == 0
    async with engine.connect() as conn:
        batch = (await conn.execute(select(batch_jobs))).one()
        tasks = (await conn.execute(select(video_tasks).order_by(video_tasks.c.batch_index))).all()
        usage = (await conn.execute(select(api_usage))).one()
    assert (batch.id, batch.frozen_credits, batch.status) == (body["batch_id"], 60, "queued")
    assert batch.idempotency_key is None  # a generated id gives no idempotency
    assert [(t.model, t.aspect_ratio, t.duration, t.status) for t in tasks] == [
        ("sora-2", "9:16", 10, "pending"),
        ("veo-flash", "16:9", None, "pending"),
    ]
    assert tasks[1].meta == {"firstFrameUrl": "https://example.com/first.jpg"}
    assert usage.batch_id == body["batch_id"]
    assert await balance(engine, key.account_id) == (1000, 60)
    await assert_audit_clean(engine)


async def test_alias_path_and_bearer_key(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    r = await client.post(
        "/api/video/batch", json=body_of(3), headers={"Authorization": f"Bearer {key.api_key}"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["mode"], r.json()["cost_per_video"], r.json()["required_credits"]) == (
        "enterprise",
        10,
        30,
    )


async def test_unknown_fields_ignored_and_veo_duration_ignored(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    body = {
        "items": [{"prompt": "p", "model": "veo-pro", "duration": 7, "colour": "red"}],
        "priority": "high",
    }
    r = await client.post(URL, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["required_credits"] == 250
    async with engine.connect() as conn:
        assert (await conn.execute(select(video_tasks.c.duration))).scalar_one() is None


async def test_key_last_seen_at_is_set(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    await client.post(URL, json=body_of(1), headers=auth(key))
    async with engine.connect() as conn:
        seen = (await conn.execute(select(enterprise_api_keys.c.last_seen_at))).scalar_one()
    assert seen is not None


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
)
async def test_no_key_is_401(client: Any, engine: AsyncEngine, headers: dict[str, str]) -> None:
    r = await client.post(URL, json=SEED_BODY, headers=headers)
    assert_error(r, 401, "MISSING_API_KEY")
    assert "x-ratelimit-limit" not in r.headers
    assert await counts(engine) == (0, 0, 0)


async def test_unknown_and_revoked_keys_are_403(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    for bad in ("vb_notakey", key.api_key[:-2] + "xx", "sk-something-else"):
        assert_error(
            await client.post(URL, json=SEED_BODY, headers={"x-api-key": bad}),
            403,
            "INVALID_API_KEY",
        )
    await account_svc.set_key_state(engine, key.key_id, active=False)
    r = await client.post(URL, json=SEED_BODY, headers=auth(key))
    assert_error(r, 403, "INVALID_API_KEY")
    r = await client.get(
        "/api/v1/credits/balance", headers={"Authorization": f"Bearer {key.api_key}"}
    )
    assert_error(r, 403, "INVALID_API_KEY")
    assert await counts(engine) == (0, 0, 1)  # only the opening credits


# --- refused bodies ----------------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("bad json", b'{"items": [', "body"),
    ("not utf-8", b'{"items": [{"prompt": "\xff\xfe"}]}', "body"),
    ("empty", b"", "body"),
    ("not an object", b'[{"prompt": "x"}]', "body"),
    ("no items", b'{"webhook_url": "https://example.com/h"}', "items"),
    ("empty items", b'{"items": []}', "items"),
    ("items not a list", b'{"items": {"prompt": "x"}}', "items"),
    ("NaN", b'{"items": [{"prompt": "x", "duration": NaN}]}', "body"),
    ("huge number", b'{"items": [{"prompt": "x", "duration": 1e999}]}', "body"),
    ("NUL in prompt", b'{"items": [{"prompt": "a\\u0000b"}]}', "items[0].prompt"),
    ("lone surrogate", b'{"items": [{"prompt": "\\ud800"}]}', "items[0].prompt"),
    (
        "too deep",
        b'{"items": [{"prompt": "x", "metadata": ' + b'{"a": ' * 60 + b"1" + b"}" * 60 + b"}]}",
        "items[0].metadata.a.a.a",
    ),
]

BAD_REQUEST_IDS = [
    ("body: not a string", {}, 12, "request_id"),
    ("body: not ASCII", {}, "Āb", "request_id"),
    ("body: too long", {}, "r" * 129, "request_id"),
    ("body: control character", {}, "order\x07-1", "request_id"),
    ("header: too long", {"x-request-id": "h" * 129}, None, "x-request-id"),
    ("header: control character", {"idempotency-key": "order\t1"}, None, "idempotency-key"),
    ("header wins over body", {"request-id": "r" * 200}, "fine", "request-id"),
]


@pytest.mark.parametrize(
    ("headers", "body_id", "field"),
    [(h, b, f) for _, h, b, f in BAD_REQUEST_IDS],
    ids=[name for name, _, _, _ in BAD_REQUEST_IDS],
)
async def test_an_unusable_request_id_is_refused_never_replaced(
    client: Any, engine: AsyncEngine, headers: dict[str, str], body_id: Any, field: str
) -> None:
    """A request id that cannot be used is a 400, never silently swapped for a generated
    one: the client's retry of the same request is refused again, so nothing is charged
    twice (the original used a silently dropped id's generated stand-in)."""
    key = await new_key(engine)
    body: dict[str, Any] = {"items": [{"prompt": "x"}]}
    if body_id is not None:
        body["request_id"] = body_id
    for _ in range(2):  # the retry
        r = await client.post(URL, json=body, headers=auth(key, **headers))
        answer = assert_error(r, 400, "INVALID_REQUEST_ID")
        assert answer["details"]["fields"][0]["field"] == field
    assert await count(engine, batch_jobs) == 0
    assert await counts(engine) == (0, 0, 1)  # the top-up only


async def test_a_request_id_is_trimmed_and_a_blank_one_is_none(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    body = {"items": [{"prompt": "x"}]}
    first = await client.post(URL, json=body, headers=auth(key, **{"x-request-id": "  r-7  "}))
    again = await client.post(URL, json={**body, "request_id": "r-7"}, headers=auth(key))
    assert (first.json()["request_id"], again.json()["idempotent_replay"]) == ("r-7", True)
    blank = await client.post(URL, json=body, headers=auth(key, **{"x-request-id": "   "}))
    assert blank.json()["request_id"].startswith("req_")
    assert await count(engine, batch_jobs) == 2


@pytest.mark.parametrize(
    ("raw", "field"),
    [(raw, field) for _, raw, field in BAD_BODIES],
    ids=[name for name, _, _ in BAD_BODIES],
)
async def test_bad_bodies_are_400_with_details_and_write_nothing(
    client: Any, engine: AsyncEngine, raw: bytes, field: str
) -> None:
    key = await new_key(engine)
    before = await counts(engine)
    r = await client.post(
        URL, content=raw, headers=auth(key, **{"content-type": "application/json"})
    )
    body = assert_error(r, 400, "INVALID_PAYLOAD")
    assert body["details"]["fields"][0]["field"].startswith(field)
    assert await counts(engine) == before
    assert r.headers["x-ratelimit-remaining"] == "59"  # counted like any other request


async def test_invalid_items_report_every_problem_with_index_and_field(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    body = {
        "items": [
            {"prompt": "ok"},
            {"prompt": "", "model": "sora-3"},
            {"prompt": "x", "duration": 12, "aspect_ratio": "4:3"},
            {"prompt": "x", "model": "veo-flash", "meta": {"lastFrameUrl": "https://e.com/l.jpg"}},
        ]
    }
    r = await client.post(URL, json=body, headers=auth(key))
    details = assert_error(r, 400, "INVALID_PAYLOAD")["details"]
    assert details["fields"] == []
    assert {(d["index"], d["field"]) for d in details["items"]} == {
        (1, "prompt"),
        (1, "model"),
        (2, "duration"),
        (2, "aspect_ratio"),
        (3, "meta.lastFrameUrl"),
    }
    assert await counts(engine) == (0, 0, 1)


async def test_too_many_items(settings_factory: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    async with app_client(settings_factory(max_items=3), engine) as c:
        r = await c.post(URL, json=body_of(4), headers=auth(key))
        body = assert_error(r, 400, "TOO_MANY_ITEMS")
        assert body["details"] == {
            "items": [],
            "fields": [{"index": None, "field": "items", "message": "at most 3 items"}],
        }
        assert (await c.post(URL, json=body_of(3), headers=auth(key))).status_code == 200


async def test_body_over_the_limit_is_413(settings_factory: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    async with app_client(settings_factory(max_body_bytes=2000), engine) as c:
        r = await c.post(URL, json=body_of(100), headers=auth(key, **{"x-request-id": "big"}))
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert r.json()["request_id"] == "big"
    assert await counts(engine) == (0, 0, 1)


async def test_insufficient_credits_is_402_and_writes_nothing(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine, credits=55)
    before = await counts(engine)
    r = await client.post(URL, json=SEED_BODY, headers=auth(key, **{"x-request-id": "r-402"}))
    body = assert_error(r, 402, "INSUFFICIENT_CREDITS")
    assert (body["required"], body["available"]) == (60, 55)
    assert await counts(engine) == before
    assert await balance(engine, key.account_id) == (55, 0)

    # The refused request left its id free: after a top-up the same id creates the batch.
    await account_svc.topup(engine, key.account_id, 5)
    r = await client.post(URL, json=SEED_BODY, headers=auth(key, **{"x-request-id": "r-402"}))
    assert r.status_code == 200, r.text
    assert r.json()["idempotent_replay"] is False
    await assert_audit_clean(engine)


# --- request ids and idempotency ---------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "x-request-id",
        "request-id",
        "idempotency-key",
        "x-idempotency-key",
        "x-requestid",
        None,
    ],
)
async def test_request_id_from_each_header_alias_and_the_body(
    client: Any, engine: AsyncEngine, header: str | None
) -> None:
    key = await new_key(engine)
    rid = f"order-{header or 'body'}-1"
    body: dict[str, Any] = dict(body_of(2))
    headers = auth(key)
    if header is None:
        body["request_id"] = rid
    else:
        headers[header] = f"  {rid} "  # trimmed
    first = await client.post(URL, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["request_id"] == rid
    assert first.headers["x-request-id"] == rid
    again = await client.post(URL, json=body, headers=headers)
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert again.json()["idempotent_replay"] is True
    async with engine.connect() as conn:
        row = (await conn.execute(select(batch_jobs))).one()
    assert (row.request_id, row.idempotency_key) == (rid, rid)


async def test_header_request_id_wins_over_the_body(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    r = await client.post(
        URL,
        json={**body_of(1), "request_id": "from-body"},
        headers=auth(key, **{"idempotency-key": "from-header"}),
    )
    assert r.json()["request_id"] == "from-header"


async def test_without_request_id_each_post_is_a_new_batch(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    a = await client.post(URL, json=body_of(1), headers=auth(key))
    b = await client.post(URL, json=body_of(1), headers=auth(key))
    assert a.json()["batch_id"] != b.json()["batch_id"]
    assert a.json()["request_id"] != b.json()["request_id"]


async def test_replay_and_key_reuse(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, rate=3)
    headers = auth(key, **{"x-request-id": "r-1"})
    first = await client.post(URL, json=SEED_BODY, headers=headers)
    assert first.status_code == 200
    # Replays are answered without counting against the limit of 3.
    for _ in range(4):
        replay = await client.post(URL, json=SEED_BODY, headers=headers)
        assert replay.status_code == 200, replay.text
        assert replay.json() == {**first.json(), "idempotent_replay": True}
        assert replay.headers["x-ratelimit-remaining"] == "2"
    other = {"items": [*SEED_BODY["items"], {"prompt": "one more"}]}
    r = await client.post(URL, json=other, headers=headers)
    assert_error(r, 422, "IDEMPOTENCY_KEY_REUSED")
    assert r.headers["x-ratelimit-remaining"] == "1"
    assert await count(engine, batch_jobs) == 1
    # The same id under another key is that key's own.
    key2 = await new_key(engine)
    r = await client.post(URL, json=SEED_BODY, headers=auth(key2, **{"x-request-id": "r-1"}))
    assert r.status_code == 200
    assert r.json()["batch_id"] != first.json()["batch_id"]
    await assert_audit_clean(engine)


async def test_invalid_request_leaves_its_id_free(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine)
    headers = auth(key, **{"x-request-id": "fix-me"})
    bad = await client.post(URL, json={"items": [{"prompt": ""}]}, headers=headers)
    assert_error(bad, 400, "INVALID_PAYLOAD")
    good = await client.post(URL, json={"items": [{"prompt": "fixed"}]}, headers=headers)
    assert good.status_code == 200
    assert good.json()["idempotent_replay"] is False


async def test_concurrent_identical_requests_create_one_batch(
    client: Any, engine: AsyncEngine
) -> None:
    key = await new_key(engine)
    headers = auth(key, **{"x-request-id": "same"})
    answers = await asyncio.gather(
        *(client.post(URL, json=body_of(20), headers=headers) for _ in range(5))
    )
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert len({a.json()["batch_id"] for a in answers}) == 1
    assert sum(1 for a in answers if a.json().get("idempotent_replay")) == 4
    assert await count(engine, batch_jobs) == 1
    assert await count(engine, video_tasks) == 20
    assert await balance(engine, key.account_id) == (1000, 200)
    await assert_audit_clean(engine)


# --- rate limit --------------------------------------------------------------------------


async def test_rate_limit_429_with_headers(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, rate=2)
    for remaining in ("1", "0"):
        r = await client.post(URL, json=body_of(1), headers=auth(key))
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == remaining
    r = await client.post(URL, json=body_of(1), headers=auth(key, **{"x-request-id": "late"}))
    assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("2", "0")
    # The limit is per key; reads have a budget of their own (tests/integration/test_rate_limits).
    assert (await client.get("/api/v1/credits/balance", headers=auth(key))).status_code == 200
    other = await new_key(engine, rate=2)
    assert (await client.post(URL, json=body_of(1), headers=auth(other))).status_code == 200
    assert await count(engine, batch_jobs) == 3


async def test_concurrent_burst_admits_exactly_the_limit(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, rate=7)
    answers = await asyncio.gather(
        *(client.post(URL, json=body_of(1), headers=auth(key)) for _ in range(20))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 7 + [429] * 13
    assert await count(engine, batch_jobs) == 7
    await assert_audit_clean(engine)


# --- scale and documentation -------------------------------------------------------------


async def test_ten_thousand_items_are_accepted(client: Any, engine: AsyncEngine) -> None:
    key = await new_key(engine, credits=100_000)
    r = await client.post(URL, json=body_of(10_000), headers=auth(key))
    assert r.status_code == 200, r.text
    assert (r.json()["total_count"], r.json()["required_credits"]) == (10_000, 100_000)
    assert r.json()["available_credits"] == 0
    assert await count(engine, video_tasks) == 10_000


async def test_openapi_documents_the_api(client: Any) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["Bearer"]["scheme"] == "bearer"
    create = doc["paths"][URL]["post"]
    assert create["summary"]
    assert {"ApiKey": []} in create["security"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert "items" in schema["required"]
    assert "prompt" in schema["properties"]["items"]["items"]["properties"]
    assert "$ref" not in json.dumps(schema)
    assert {"400", "401", "402", "403", "409", "413", "422", "429"} <= set(create["responses"])
    assert create["responses"]["402"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    for path, ops in doc["paths"].items():
        if path.startswith(("/api/v1", "/api/enterprise", "/api/video/batch")):
            for op in ops.values():
                assert op.get("summary"), path
                assert {"401", "403", "429"} <= set(op["responses"]), path
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
