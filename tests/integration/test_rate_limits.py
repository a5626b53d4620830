"""A key's reads and its creates are counted in separate budgets, each with its headers: a
customer polling its batch every second never gets a 429 on its next create."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean
from vidbatch.services import accounts as account_svc

READ_LIMIT = 70


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(read_rate_limit_per_min=READ_LIMIT)


def body(n: int = 1) -> dict[str, Any]:
    return {"items": [{"prompt": f"video {i}", "model": "sora-2"} for i in range(n)]}


async def test_status_reads_do_not_spend_the_create_budget(
    client: Any, engine: AsyncEngine
) -> None:
    _, key = await account_svc.create_account(engine, "acme", credits=1000, rate_limit_per_min=60)
    headers = {"x-api-key": key.api_key}
    first = await client.post("/api/v1/batches", json=body(), headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit"] == "60"
    batch_id = first.json()["batch_id"]

    for i in range(60):  # a status read every second for a minute
        r = await client.get(f"/api/v1/batches/{batch_id}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit"] == str(READ_LIMIT)
        assert r.headers["x-ratelimit-remaining"] == str(READ_LIMIT - 1 - i)

    created = await client.post("/api/v1/batches", json=body(), headers=headers)
    assert created.status_code == 200, created.text
    assert created.headers["x-ratelimit-limit"] == "60"
    assert created.headers["x-ratelimit-remaining"] == "58"

    # The read budget is enforced on its own, with the same headers and Retry-After.
    for _ in range(READ_LIMIT - 60):
        assert (await client.get("/api/v1/credits/balance", headers=headers)).status_code == 200
    spent = await client.get("/api/v1/credits/balance", headers=headers)
    assert spent.status_code == 429
    assert spent.json()["error"] == "RATE_LIMIT_EXCEEDED"
    assert spent.headers["x-ratelimit-limit"] == str(READ_LIMIT)
    assert spent.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(spent.headers["retry-after"]) <= 60
    # ... and a create still goes through.
    again = await client.post("/api/v1/batches", json=body(), headers=headers)
    assert again.status_code == 200, again.text
    await assert_audit_clean(engine)
