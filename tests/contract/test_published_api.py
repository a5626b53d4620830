"""A client written from the original's published /api/v1 contract works against vidbatch
unchanged: every response body is validated against the published schemas
(``tests/contract/published.py``), and the flow is the published Node client's — create with
the published defaults, wait until the batch reaches an ended status, read its items, cancel,
read the balance and the ledger. On SQLite and PostgreSQL, through the worker and the
simulator over HTTP."""

from __future__ import annotations

from typing import Any

import jsonschema
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contract import published
from tests.integration.worker_helpers import run_until_settled
from vidbatch.services import accounts as account_svc

V1 = "/api/v1"


class PublishedClient:
    """What the published Node client does, over our app: every body it reads is checked
    against the published schema of that response."""

    def __init__(self, http: Any, api_key: str) -> None:
        self.http = http
        self.headers = {"x-api-key": api_key}

    async def call(
        self, method: str, path: str, schema: dict[str, Any], status: int = 200, **kw: Any
    ) -> dict[str, Any]:
        r = await self.http.request(method, V1 + path, headers=self.headers, **kw)
        assert r.status_code == status, r.text
        body: dict[str, Any] = r.json()
        jsonschema.validate(body, schema)
        return body

    async def wait_for_batch(self, rt: Any, batch_id: str) -> dict[str, Any]:
        """The published client's waitForBatch: poll until an ended status."""
        for _ in range(50):
            batch = await self.call("GET", f"/batches/{batch_id}", published.BATCH)
            if batch["status"] in published.BATCH_ENDED:
                return batch
            await run_until_settled(rt, max_rounds=20)
        raise AssertionError(f"batch {batch_id} never reached an ended status")


async def published_client(client: Any, engine: AsyncEngine, credits: int) -> PublishedClient:
    _, key = await account_svc.create_account(engine, "published", credits=credits)
    return PublishedClient(client, key.api_key)


async def test_the_published_client_creates_waits_and_reads_results(
    client: Any, runtime: Any, engine: AsyncEngine
) -> None:
    api = await published_client(client, engine, credits=5000)
    # The published example: defaults for everything but the prompt (duration 5, 16:9).
    body = {
        "items": [
            {"prompt": "A cat surfing"},
            {"prompt": "A fox in the snow", "duration": 5, "metadata": {"sku": "F1"}},
            {"prompt": "A city from above", "model": "veo-flash"},
            {"prompt": "refused [sim:moderation]", "duration": 10},
        ],
        "request_id": "order-0001",
    }
    created = await api.call("POST", "/batches", published.CREATED, json=body)
    assert (created["status"], created["idempotent_replay"]) == ("pending", False)
    assert created["cost_per_video"] == 50  # mixed prices: the highest
    assert created["required_credits"] == 10 + 10 + 50 + 10
    again = await api.call("POST", "/batches", published.CREATED, json=body)
    assert (again["batch_id"], again["idempotent_replay"]) == (created["batch_id"], True)

    pending = await api.call("GET", f"/batches/{created['batch_id']}", published.BATCH)
    assert pending["status"] == "pending"

    ended = await api.wait_for_batch(runtime, created["batch_id"])
    assert (ended["status"], ended["succeeded_count"], ended["failed_count"]) == ("partial", 3, 1)
    assert ended["credits_reserved"] == ended["credits_settled"] + ended["credits_refunded"]

    items = await api.call("GET", f"/batches/{created['batch_id']}/items", published.ITEMS)
    assert [i["status"] for i in items["items"]] == ["succeeded"] * 3 + ["failed"]
    cat, fox, city, refused = items["items"]
    assert (cat["duration"], fox["duration"], city["duration"]) == (10, 10, None)
    assert fox["metadata"] == {"sku": "F1"}
    assert all(i["video_url"] for i in (cat, fox, city))
    assert (refused["failure_type"], refused["failure_reason"]) == ("model_error", "moderation")
    for status in published.ITEM_STATUS:
        page = await api.call(
            "GET",
            f"/batches/{created['batch_id']}/items",
            published.ITEMS,
            params={"status": status, "limit": 2},
        )
        assert all(i["status"] == status for i in page["items"])

    # The published ledger example: reserved = settled + refunded, in signed amounts.
    ledger = await api.call(
        "GET", "/credits/ledger", published.LEDGER, params={"batch_id": created["batch_id"]}
    )
    by_type = {e["type"]: e["delta"] for e in ledger["entries"]}
    assert by_type == {"reserve": -80, "settle": -70, "refund": 10}
    assert -by_type["reserve"] == -by_type["settle"] + by_type["refund"]
    balance = await api.call("GET", "/credits/balance", published.BALANCE)
    assert (balance["available"], balance["reserved"], balance["total"]) == (4930, 0, 4930)
    assert ledger["entries"][0]["balance_after"] == balance["available"]


async def test_cancel_and_an_all_failed_batch_end_in_published_statuses(
    client: Any, runtime: Any, engine: AsyncEngine
) -> None:
    api = await published_client(client, engine, credits=1000)
    waiting = await api.call(
        "POST", "/batches", published.CREATED, json={"items": [{"prompt": "a"}, {"prompt": "b"}]}
    )
    cancelled = await api.call(
        "POST", f"/batches/{waiting['batch_id']}/cancel", published.CANCELLED
    )
    assert (cancelled["status"], cancelled["credits_refunded"]) == ("cancelled", 20)
    items = await api.call("GET", f"/batches/{waiting['batch_id']}/items", published.ITEMS)
    assert {(i["status"], i["failure_type"]) for i in items["items"]} == {("failed", "unknown")}

    doomed = await api.call(
        "POST",
        "/batches",
        published.CREATED,
        json={"items": [{"prompt": "x [sim:error]"}, {"prompt": "y [sim:reject]"}]},
    )
    ended = await api.wait_for_batch(runtime, doomed["batch_id"])
    assert (ended["status"], ended["failed_count"], ended["credits_refunded"]) == ("failed", 2, 20)


async def test_errors_have_the_published_shape(client: Any, engine: AsyncEngine) -> None:
    api = await published_client(client, engine, credits=100)
    invalid = await api.call(
        "POST",
        "/batches",
        published.ERROR,
        status=400,
        json={"items": [{"prompt": ""}, {"prompt": "ok", "duration": 7}]},
    )
    assert invalid["error"] == "INVALID_PAYLOAD"
    assert [(d["index"], d["field"]) for d in invalid["details"]["items"]] == [
        (0, "prompt"),
        (1, "duration"),
    ]
    poor = await api.call(
        "POST", "/batches", published.ERROR, status=402, json={"items": [{"prompt": "p"}] * 11}
    )
    assert (poor["error"], poor["required"], poor["available"]) == (
        "INSUFFICIENT_CREDITS",
        110,
        100,
    )
    missing = await api.call("GET", "/batches/does-not-exist", published.ERROR, status=404)
    assert missing["error"] == "NOT_FOUND"
    r = await client.get(f"{V1}/credits/balance")
    assert r.status_code == 401
    jsonschema.validate(r.json(), published.ERROR)
