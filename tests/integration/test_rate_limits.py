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


async def test_wrong_metrics_tokens_are_throttled_per_address(
    settings_factory: Any, runtime: Any, engine: AsyncEngine
) -> None:
    import httpx

    from vidbatch.api.app import create_app
    from vidbatch.clock import FakeClock

    token = "metrics-token-0123456789-abcdefghijkl"
    clock = runtime.clock = FakeClock()
    app = create_app(settings_factory(metrics_token=token), runtime=runtime)
    right = {"Authorization": f"Bearer {token}"}
    wrong = {"Authorization": "Bearer " + "w" * 40}

    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test")

    async with client_from("10.0.0.7") as c, client_from("10.0.0.8") as other:
        for _ in range(20):  # no token guesses nothing and is never throttled
            assert (await c.get("/metrics")).status_code == 401
        for _ in range(10):
            assert (await c.get("/metrics", headers=wrong)).status_code == 401
        throttled = await c.get("/metrics", headers=wrong)
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "TOO_MANY_ATTEMPTS"
        assert throttled.headers["retry-after"] == "60"
        assert "vidbatch_credits_total" not in throttled.text
        # the right token too, while throttled; another address is not held back
        assert (await c.get("/metrics", headers=right)).status_code == 429
        assert (await other.get("/metrics", headers=right)).status_code == 200
        clock.advance(60)
        shown = await c.get("/metrics", headers=right)
        assert shown.status_code == 200 and "vidbatch_credits_total" in shown.text
    await assert_audit_clean(engine)
