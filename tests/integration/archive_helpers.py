"""Driving the result archive in tests: a runtime on a fake clock with an in-process API
client and a customer account, and the store's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.api.app import create_app
from vidbatch.clock import FakeClock
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.services.batches import Caller
from vidbatch.settings import Settings
from vidbatch.storage import list_keys


class Setup:
    def __init__(self, rt: Runtime, http: httpx.AsyncClient, key: str, caller: Caller) -> None:
        self.rt = rt
        self.http = http
        self.key = key
        self.caller = caller

    async def items(self, batch_id: str) -> list[dict[str, Any]]:
        got = await self.http.get(
            f"/api/v1/batches/{batch_id}/items", headers={"x-api-key": self.key}
        )
        assert got.status_code == 200, got.text
        return list(got.json()["items"])

    async def stored_keys(self, batch_id: str, kind: str = "videos") -> list[str]:
        assert self.rt.result_store is not None
        return sorted(await list_keys(self.rt.result_store, f"{kind}/{batch_id}/"))


async def setups(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Awaitable[Setup]]]:
    """Yields a maker of setups (settings overrides as keywords); closes them all after."""
    opened: list[Setup] = []

    async def make(**overrides: Any) -> Setup:
        settings = make_settings(**overrides)
        rt = await Runtime.open(settings, engine=engine)
        rt.clock = FakeClock()
        app = create_app(settings, runtime=rt)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vidbatch.test"
        )
        account_id, key = await account_svc.create_account(
            engine, f"acme {len(opened)}", credits=1000, rate_limit_per_min=10_000
        )
        made = Setup(rt, http, key.api_key, Caller(account_id=account_id, key_id=key.key_id))
        opened.append(made)
        return made

    yield make
    for made in opened:
        await made.http.aclose()
        await made.rt.close()
