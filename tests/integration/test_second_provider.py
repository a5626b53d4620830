"""A second provider is a registry entry plus catalog models: one batch mixing GrsAI models
(the simulator) and a model of another provider is served by both, each task by its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance
from tests.integration.worker_helpers import run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.api.app import create_app
from vidbatch.domain.callback_tokens import callback_token
from vidbatch.domain.provider import RemoteResult, TaskSpec
from vidbatch.exceptions import CallbackInvalid, ConfigError, ProviderNotFound
from vidbatch.providers import registry
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.worker.round import run_once

CATALOG = {
    "clip-1": {
        "family": "veo",
        "provider_model": "clip-v1",
        "price_credits": 7,
        "provider": "clipworks",
    }
}


@dataclass
class _Remote:
    spec: TaskSpec
    looks: int = 0
    done: bool = False


class ClipWorks:
    """A whole provider in memory: a task is running when first asked about, then done
    (or, with ``auto_finish`` off, once :meth:`finish` says so)."""

    name = "clipworks"

    def __init__(self) -> None:
        self.tasks: dict[str, _Remote] = {}
        self.auto_finish = True

    def finish(self, remote_id: str) -> None:
        self.tasks[remote_id].done = True

    async def create_task(self, spec: TaskSpec) -> str:
        remote_id = f"cw-{len(self.tasks) + 1}"
        self.tasks[remote_id] = _Remote(spec)
        return remote_id

    async def get_result(self, remote_id: str) -> RemoteResult:
        task = self.tasks.get(remote_id)
        if task is None:
            raise ProviderNotFound(f"no task {remote_id}")
        task.looks += 1
        if task.looks > 1 and self.auto_finish:
            task.done = True
        if not task.done:
            return RemoteResult(remote_id=remote_id, status="running", progress=40)
        return RemoteResult(
            remote_id=remote_id,
            status="succeeded",
            progress=100,
            video_url=f"https://videos.clipworks.example/{remote_id}.mp4",
        )

    def parse_callback(self, body: bytes) -> RemoteResult:
        try:
            data = json.loads(body)
            return RemoteResult(remote_id=str(data["job"]), status=data["state"])
        except (ValueError, KeyError, TypeError):
            raise CallbackInvalid("not a ClipWorks callback") from None


@pytest.fixture
def clipworks(monkeypatch: pytest.MonkeyPatch) -> ClipWorks:
    """ClipWorks registered as a provider for this test."""
    provider = ClipWorks()
    monkeypatch.setitem(registry.PROVIDERS, "clipworks", lambda settings, http: provider)
    return provider


@pytest.fixture
async def mixed(
    settings_factory: Any, engine: AsyncEngine, clipworks: ClipWorks
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A runtime whose catalog has ClipWorks' model, and an API client on it."""
    # its videos are at a made-up host: nothing to archive from there
    settings = settings_factory(model_catalog=json.dumps(CATALOG), result_store="none")
    rt = await Runtime.open(settings, engine=engine)
    app = create_app(settings, runtime=rt)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test") as c:
            yield rt, c
    finally:
        await rt.close()


async def post_batch(client: httpx.AsyncClient, api_key: str, items: list[dict[str, Any]]) -> str:
    created = await client.post(
        "/api/v1/batches", headers={"x-api-key": api_key}, json={"items": items}
    )
    assert created.status_code == 200, created.text
    return str(created.json()["batch_id"])


async def test_one_batch_is_served_by_two_providers(
    mixed: tuple[Runtime, httpx.AsyncClient], sim: SimulatorHandle, clipworks: ClipWorks
) -> None:
    rt, client = mixed
    account_id, key = await account_svc.create_account(rt.engine, "acme", credits=200)
    batch_id = await post_batch(
        client,
        key.api_key,
        [
            {"prompt": "a city at night", "model": "sora-2"},
            {"prompt": "a fox in the snow", "model": "clip-1"},
            {"prompt": "waves on a beach", "model": "veo-flash"},
            {"prompt": "a paper boat", "model": "clip-1"},
        ],
    )
    await run_until_settled(rt)

    headers = {"x-api-key": key.api_key}
    batch = (await client.get(f"/api/v1/batches/{batch_id}", headers=headers)).json()
    assert (batch["status"], batch["succeeded_count"], batch["failed_count"]) == (
        "succeeded",
        4,
        0,
    )
    assert (batch["credits_reserved"], batch["credits_settled"]) == (10 + 7 + 50 + 7, 74)
    assert batch["credits_refunded"] == 0
    page = (await client.get(f"/api/v1/batches/{batch_id}/items", headers=headers)).json()
    assert [(i["model"], i["status"]) for i in page["items"]] == [
        ("sora-2", "succeeded"),
        ("clip-1", "succeeded"),
        ("veo-flash", "succeeded"),
        ("clip-1", "succeeded"),
    ]
    clip_urls = [i["video_url"] for i in page["items"] if i["model"] == "clip-1"]
    assert all(u.startswith("https://videos.clipworks.example/") for u in clip_urls)

    rows = await task_rows(rt.engine, batch_id)
    assert [r.provider for r in rows] == ["grsai", "clipworks", "grsai", "clipworks"]
    # each provider saw only its own items, with its own model names
    assert sorted(t["prompt"] for t in sim.tasks()) == ["a city at night", "waves on a beach"]
    assert sim.stats()["tasks_created"] == 2
    assert sorted(t.spec.prompt for t in clipworks.tasks.values()) == [
        "a fox in the snow",
        "a paper boat",
    ]
    assert {t.spec.model for t in clipworks.tasks.values()} == {"clip-1"}
    assert {r.grsai_task_id for r in rows if r.provider == "clipworks"} == set(clipworks.tasks)
    assert all(t.looks >= 2 for t in clipworks.tasks.values())
    assert await balance(rt.engine, account_id) == (200 - 74, 0)
    await assert_audit_clean(rt.engine)


async def test_a_callback_is_read_by_the_tasks_own_provider(
    mixed: tuple[Runtime, httpx.AsyncClient], sim: SimulatorHandle, clipworks: ClipWorks
) -> None:
    rt, client = mixed
    clipworks.auto_finish = False
    _, key = await account_svc.create_account(rt.engine, "acme", credits=100)
    batch_id = await post_batch(client, key.api_key, [{"prompt": "a kite", "model": "clip-1"}])
    await run_once(rt, deliver_webhooks=False)
    (row,) = await task_rows(rt.engine, batch_id)
    assert (row.provider, row.status) == ("clipworks", "processing")

    target = f"/api/video/callback?task_id={row.id}&token={callback_token(rt.callback_key, row.id)}"
    # GrsAI's callback format means nothing to ClipWorks
    grsai_body = {"id": row.grsai_task_id, "status": "succeeded", "results": []}
    assert (await client.post(target, json=grsai_body)).status_code == 400
    clipworks.finish(row.grsai_task_id)
    answer = await client.post(target, json={"job": row.grsai_task_id, "state": "succeeded"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"  # confirmed with ClipWorks, not GrsAI
    (row,) = await task_rows(rt.engine, batch_id)
    assert row.video_url == f"https://videos.clipworks.example/{row.grsai_task_id}.mp4"
    assert sim.stats()["tasks_created"] == 0
    await run_until_settled(rt)
    await assert_audit_clean(rt.engine)


async def test_runtime_takes_injected_providers_by_name(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    one, other = ClipWorks(), ClipWorks()
    rt = await Runtime.open(settings_factory(), engine=engine, provider=one)
    try:
        assert rt.provider_for("grsai") is one
    finally:
        await rt.close()
    # its videos are at a made-up host: nothing to archive from there
    settings = settings_factory(model_catalog=json.dumps(CATALOG), result_store="none")
    rt = await Runtime.open(settings, engine=engine, providers={"clipworks": other})
    try:
        assert rt.provider_for("clipworks") is other
        assert rt.provider_for("grsai").name == "grsai"
    finally:
        await rt.close()


async def test_a_catalog_model_of_an_unregistered_provider_is_refused(
    settings_factory: Any, engine: AsyncEngine, sim: SimulatorHandle
) -> None:
    with pytest.raises(ConfigError, match="no provider registered as 'clipworks'"):
        await Runtime.open(settings_factory(model_catalog=json.dumps(CATALOG)), engine=engine)
