"""The GrsAI client against the simulator over real HTTP, every outcome and error class."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.simulator_fixture import SimulatorHandle
from vidbatch.domain.catalog import default_catalog, parse_catalog_overrides
from vidbatch.domain.provider import RemoteResult, TaskSpec
from vidbatch.exceptions import (
    ProviderAmbiguous,
    ProviderNotFound,
    ProviderRejected,
    ProviderTransient,
)
from vidbatch.providers.grsai import GrsAIClient

KEY = "sk-test-key"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(
    session: aiohttp.ClientSession, base_url: str, *, api_key: str = KEY, **kw: Any
) -> GrsAIClient:
    return GrsAIClient(
        session,
        base_url=base_url,
        api_key=api_key,
        catalog=kw.pop("catalog", default_catalog()),
        **kw,
    )


@pytest.fixture
def client(session: aiohttp.ClientSession, sim: SimulatorHandle) -> GrsAIClient:
    # The trailing /v1 is what users paste; the client must cope.
    return make_client(session, sim.url + "/v1")


def spec(prompt: str = "a lighthouse at dusk", model: str = "sora-2", **kw: Any) -> TaskSpec:
    return TaskSpec(task_id=kw.pop("task_id", "task-1"), model=model, prompt=prompt, **kw)


async def poll_until_final(
    client: GrsAIClient, remote_id: str, timeout: float = 60.0
) -> list[RemoteResult]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await client.get_result(remote_id)
        seen.append(result)
        if result.is_final:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {remote_id} did not finish: {seen[-1]}")


async def until(condition: Any, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` is true (the simulator works in its own thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- happy paths


async def test_sora_task_progresses_then_succeeds_with_a_real_video(
    client: GrsAIClient,
    sim: SimulatorHandle,
    session: aiohttp.ClientSession,
) -> None:
    sim.configure(gen_time=0.4)
    remote_id = await client.create_task(spec(aspect_ratio="16:9", duration=15))
    assert remote_id.startswith("4-")

    results = await poll_until_final(client, remote_id)
    running = [r.progress for r in results if r.status == "running"]
    assert running, "the task should be seen running at least once"
    assert running == sorted(running)
    assert all(0 <= p < 100 for p in running)
    final = results[-1]
    assert final.status == "succeeded"
    assert final.progress == 100
    assert final.pid is not None
    assert final.pid.startswith("s_")
    assert final.remove_watermark is True
    assert final.video_url == f"{sim.url}/files/{remote_id}.mp4"

    async with session.get(final.video_url) as response:
        assert response.status == 200
        assert response.content_type == "video/mp4"
        video = await response.read()
    assert video[4:8] == b"ftyp"

    sent = sim.requests()[0]
    assert sent["path"] == "/v1/video/sora-video"
    assert sent["body"] == {
        "model": "sora-2",
        "prompt": "a lighthouse at dusk",
        "aspectRatio": "16:9",
        "duration": 15,
        "size": "small",
        "webHook": "-1",
        "shutProgress": False,
    }
    assert KEY not in json.dumps(sim.requests())


@pytest.mark.parametrize(
    ("model", "provider_model"), [("veo-flash", "veo3.1-fast"), ("veo-pro", "veo3.1-pro")]
)
async def test_veo_task_succeeds_with_top_level_url(
    client: GrsAIClient,
    sim: SimulatorHandle,
    model: str,
    provider_model: str,
) -> None:
    meta = {"firstFrameUrl": "https://img/first.png", "lastFrameUrl": "https://img/last.png"}
    remote_id = await client.create_task(spec(model=model, aspect_ratio="9:16", meta=meta))
    result = await client.get_result(remote_id)
    assert result.status == "succeeded"
    assert result.video_url == f"{sim.url}/files/{remote_id}.mp4"
    assert result.pid is None
    body = sim.requests()[0]["body"]
    assert body["model"] == provider_model
    assert body["firstFrameUrl"] == "https://img/first.png"
    assert sim.stats()["calls_per_endpoint"] == {"/v1/video/veo": 1, "/v1/draw/result": 1}


async def test_result_urls_use_the_configured_public_url(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    sim.configure(public_url="https://files.example/")
    result = await client.get_result(await client.create_task(spec()))
    assert result.video_url is not None
    assert result.video_url.startswith("https://files.example/files/4-")


async def test_result_url_is_served_then_expires(
    client: GrsAIClient,
    sim: SimulatorHandle,
    session: aiohttp.ClientSession,
) -> None:
    sim.configure(result_ttl=60)
    result = await client.get_result(await client.create_task(spec(model="veo-flash")))
    assert result.video_url is not None
    async with session.get(result.video_url) as response:
        assert response.status == 200
    sim.advance(61)
    async with session.get(result.video_url) as response:
        assert response.status == 404


# --------------------------------------------------------------------------- refusals


async def test_bad_key_is_rejected(session: aiohttp.ClientSession, sim: SimulatorHandle) -> None:
    client = make_client(session, sim.url, api_key="not-a-key")
    with pytest.raises(ProviderRejected) as info:
        await client.create_task(spec())
    assert info.value.provider_code == -1
    assert info.value.failure_type == "param_error"
    assert info.value.http_status == 200
    assert "api key" in info.value.message
    assert sim.stats()["tasks_created"] == 0


async def test_an_exact_key_can_be_demanded(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
) -> None:
    sim.configure(api_key="sk-the-one")
    with pytest.raises(ProviderRejected):
        await make_client(session, sim.url, api_key="sk-another").create_task(spec())
    remote_id = await make_client(session, sim.url, api_key="sk-the-one").create_task(spec())
    assert remote_id.startswith("4-")


async def test_bad_parameters_are_rejected_with_the_provider_message(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
) -> None:
    # An operator catalog entry pointing at a model GrsAI no longer accepts.
    catalog = parse_catalog_overrides(
        {"veo-old": {"family": "veo", "provider_model": "veo3-fast", "price_credits": 1}}
    )
    client = make_client(session, sim.url, catalog=catalog)
    with pytest.raises(ProviderRejected) as info:
        await client.create_task(spec(model="veo-old"))
    assert info.value.provider_code == -1
    assert info.value.failure_type == "param_error"
    assert "veo3-fast" in info.value.message


async def test_unknown_task_is_not_found(client: GrsAIClient, sim: SimulatorHandle) -> None:
    with pytest.raises(ProviderNotFound) as info:
        await client.get_result("4-00000000-0000-4000-8000-000000000000")
    assert info.value.provider_code == -22


@pytest.mark.parametrize(
    ("path", "changes", "reason"),
    [
        ("/v1/video/sora-video", {"duration": 12}, "duration"),
        ("/v1/video/sora-video", {"aspectRatio": "1:1"}, "aspectRatio"),
        ("/v1/video/sora-video", {"model": "sora-1"}, "model"),
        ("/v1/video/sora-video", {"prompt": ""}, "prompt"),
        ("/v1/video/sora-video", {"webHook": None}, "streaming mode"),
        ("/v1/video/veo", {"model": "veo3"}, "model"),
        ("/v1/video/veo", {"model": "veo3-fast"}, "model"),
        ("/v1/video/veo", {"urls": ["a", "b", "c", "d"]}, "urls"),
        ("/v1/video/veo", {"lastFrameUrl": "https://last"}, "firstFrameUrl"),
    ],
)
async def test_simulator_refuses_what_grsai_refuses(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
    path: str,
    changes: dict[str, Any],
    reason: str,
) -> None:
    body: dict[str, Any] = {
        "model": "sora-2" if "sora" in path else "veo3.1-fast",
        "prompt": "p",
        "webHook": "-1",
    }
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with session.post(sim.url + path, json=body, headers=headers) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["code"] == -1
    assert answer["data"] is None
    assert reason in answer["msg"]


@pytest.mark.parametrize("model", ["veo3.1-fast-1080p", "veo3.1-pro-4k"])
async def test_simulator_accepts_resolution_variants(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
    model: str,
) -> None:
    catalog = parse_catalog_overrides(
        {"veo-hd": {"family": "veo", "provider_model": model, "price_credits": 1}}
    )
    client = make_client(session, sim.url, catalog=catalog)
    result = await client.get_result(await client.create_task(spec(model="veo-hd")))
    assert result.status == "succeeded"


# --------------------------------------------------------------------------- transient faults


async def test_429_on_create_is_transient_with_retry_after(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    sim.configure(create_429_rate=1.0, retry_after=7)
    with pytest.raises(ProviderTransient) as info:
        await client.create_task(spec())
    assert info.value.http_status == 429
    assert info.value.retry_after == 7.0
    assert sim.stats()["tasks_created"] == 0


async def test_429_and_500_on_result_are_transient(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    remote_id = await client.create_task(spec())
    sim.configure(result_429_rate=1.0, retry_after=3)
    with pytest.raises(ProviderTransient) as info:
        await client.get_result(remote_id)
    assert (info.value.http_status, info.value.retry_after) == (429, 3.0)
    sim.configure(result_429_rate=0.0, result_500_rate=1.0)
    with pytest.raises(ProviderTransient) as info:
        await client.get_result(remote_id)
    assert info.value.http_status == 500
    sim.configure(result_500_rate=0.0)
    assert (await client.get_result(remote_id)).status == "succeeded"


async def test_500_on_create_is_transient(client: GrsAIClient, sim: SimulatorHandle) -> None:
    sim.configure(create_500_rate=1.0)
    with pytest.raises(ProviderTransient) as info:
        await client.create_task(spec())
    assert info.value.http_status == 500
    assert sim.stats()["tasks_created"] == 0


async def test_outage_makes_everything_500(
    client: GrsAIClient,
    sim: SimulatorHandle,
    session: aiohttp.ClientSession,
) -> None:
    result = await client.get_result(await client.create_task(spec()))
    sim.configure(outage=True)
    with pytest.raises(ProviderTransient):
        await client.create_task(spec())
    with pytest.raises(ProviderTransient):
        await client.get_result(result.remote_id)
    assert result.video_url is not None
    async with session.get(result.video_url) as response:
        assert response.status == 500


async def test_connection_refused_is_transient_network_not_ambiguous(
    session: aiohttp.ClientSession,
) -> None:
    client = make_client(session, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderTransient) as info:
        await client.create_task(spec())
    assert info.value.failure_type == "network"
    assert info.value.http_status is None
    with pytest.raises(ProviderTransient):
        await client.get_result("4-x")


# --------------------------------------------------------------------------- ambiguity


async def test_create_that_never_answers_is_ambiguous_and_the_task_exists(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
) -> None:
    sim.configure(create_hang_rate=1.0)
    client = make_client(session, sim.url, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ProviderAmbiguous):
        await client.create_task(spec(prompt="left hanging"))
    assert time.monotonic() - started < 60  # the simulator would hold it for 300 s
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["ambiguous_creates"] == 1
    assert stats["created_per_prompt"] == {"left hanging": 1}
    # Exactly one request reached the simulator: the client does not retry on its own.
    assert stats["calls_per_endpoint"] == {"/v1/video/sora-video": 1}


async def test_ambiguous_marker(session: aiohttp.ClientSession, sim: SimulatorHandle) -> None:
    client = make_client(session, sim.url, read_timeout=0.2)
    with pytest.raises(ProviderAmbiguous):
        await client.create_task(spec(prompt="x [sim:ambiguous]"))
    assert len(sim.tasks()) == 1


async def test_poll_that_never_answers_is_transient(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
) -> None:
    remote_id = await make_client(session, sim.url).create_task(spec())
    sim.configure(result_hang_rate=1.0)
    client = make_client(session, sim.url, read_timeout=0.2)
    with pytest.raises(ProviderTransient):
        await client.get_result(remote_id)


@dataclass
class FakeUpstream:
    """A raw TCP server playing a broken provider: it answers each request with ``reply``."""

    reply: Callable[[bytes], bytes | None]
    url: str = ""
    server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeUpstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            answer = self.reply(request)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            writer.close()  # None: the connection is dropped without an answer

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def http_200(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda _req: None, id="connection-dropped"),
        pytest.param(lambda _req: http_200(b"<html>gateway</html>"), id="html-body"),
        pytest.param(lambda _req: http_200(b'{"code": 0, "data": {}}'), id="no-data-id"),
        pytest.param(lambda _req: http_200(b'{"code": 0, "data": null}'), id="null-data"),
    ],
)
async def test_lost_or_unreadable_answers_are_ambiguous_on_create_and_transient_on_poll(
    session: aiohttp.ClientSession, reply: Callable[[bytes], bytes | None]
) -> None:
    async with FakeUpstream(reply) as upstream:
        client = make_client(session, upstream.url, read_timeout=2)
        with pytest.raises(ProviderAmbiguous):
            await client.create_task(spec())
        with pytest.raises(ProviderTransient):
            await client.get_result("4-x")


async def test_other_http_4xx_is_rejected(session: aiohttp.ClientSession) -> None:
    def reply(_req: bytes) -> bytes:
        body = b'{"msg": "no such route"}'
        return (
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async with FakeUpstream(reply) as upstream:
        with pytest.raises(ProviderRejected) as info:
            await make_client(session, upstream.url).create_task(spec())
    assert (info.value.http_status, info.value.failure_type) == (404, "unknown")
    assert info.value.message == "no such route"


# --------------------------------------------------------------------------- capacity


async def test_concurrency_cap_answers_429_and_counts_overshoots(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    sim.configure(max_running=2, gen_time=30, retry_after=4)
    await client.create_task(spec(prompt="one"))
    await client.create_task(spec(prompt="two"))
    with pytest.raises(ProviderTransient) as info:
        await client.create_task(spec(prompt="three"))
    assert (info.value.http_status, info.value.retry_after) == (429, 4.0)
    stats = sim.stats()
    assert stats["cap_overshoots"] == 1
    assert stats["running_now"] == 2
    assert stats["max_running_seen"] == 2
    assert stats["tasks_created"] == 2
    assert stats["created_per_prompt"] == {"one": 1, "two": 1}


async def test_cap_frees_up_when_tasks_finish(client: GrsAIClient, sim: SimulatorHandle) -> None:
    sim.configure(max_running=1, gen_time=10)
    await client.create_task(spec())
    sim.advance(10)
    await client.create_task(spec())
    assert sim.stats()["cap_overshoots"] == 0


# --------------------------------------------------------------------------- markers


@pytest.mark.parametrize(
    ("marker", "failure_type", "failure_reason"),
    [
        ("[sim:moderation]", "moderation", "output_moderation"),
        ("[sim:input_moderation]", "moderation", "input_moderation"),
        ("[sim:error]", "model_error", "error"),
        ("[sim:violation]", "moderation", ""),
        ("[sim:no-url]", "model_error", ""),
    ],
)
@pytest.mark.parametrize("model", ["sora-2", "veo-flash"])
async def test_failure_markers(
    client: GrsAIClient,
    sim: SimulatorHandle,
    marker: str,
    failure_type: str,
    failure_reason: str,
    model: str,
) -> None:
    result = await client.get_result(await client.create_task(spec(f"a cat {marker}", model)))
    assert result.status == "failed"
    assert result.failure_type == failure_type
    assert result.failure_reason == failure_reason
    assert result.video_url is None
    assert result.error


async def test_reject_marker(client: GrsAIClient, sim: SimulatorHandle) -> None:
    with pytest.raises(ProviderRejected):
        await client.create_task(spec("[sim:reject] nope"))
    assert sim.stats()["tasks_created"] == 0


async def test_slow_and_hang_markers(client: GrsAIClient, sim: SimulatorHandle) -> None:
    sim.configure(gen_time=10)  # the slow one takes 100 s
    normal = await client.create_task(spec("plain"))
    slow = await client.create_task(spec("[sim:slow] plain"))
    hang = await client.create_task(spec("[sim:hang] plain"))
    sim.advance(10)
    assert (await client.get_result(normal)).status == "succeeded"
    assert (await client.get_result(slow)).status == "running"
    assert (await client.get_result(hang)).status == "running"
    sim.advance(90)
    assert (await client.get_result(slow)).status == "succeeded"
    assert (await client.get_result(hang)).status == "running"


async def test_held_tasks_run_until_released(client: GrsAIClient, sim: SimulatorHandle) -> None:
    held = await client.create_task(spec("[sim:hold] plain"))
    free = await client.create_task(spec("plain"))
    sim.configure(hold=True)
    also_held = await client.create_task(spec("plain"))
    sim.advance(3600)  # time alone does not end them
    assert (await client.get_result(free)).status == "succeeded"
    assert (await client.get_result(held)).status == "running"
    assert (await client.get_result(also_held)).status == "running"
    assert sim.stats()["running_now"] == 2
    assert sim.release() == 2
    assert (await client.get_result(held)).status == "succeeded"
    assert (await client.get_result(also_held)).status == "succeeded"
    assert sim.release() == 0


async def test_random_moderation_rate_fails_tasks_after_generation(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    sim.configure(output_moderation_rate=1.0, gen_time=10)
    remote_id = await client.create_task(spec())
    assert (await client.get_result(remote_id)).status == "running"
    sim.advance(10)
    results = await poll_until_final(client, remote_id)
    assert results[-1].failure_type == "moderation"


# --------------------------------------------------------------------------- callbacks


@dataclass
class Receiver:
    """A small HTTP server collecting callback bodies."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    async def wait_for(self, count: int, timeout: float = 60.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.bodies)} callbacks, wanted {count}")
            await asyncio.sleep(0.02)
        return self.bodies


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    collected = Receiver()

    async def callback(request: web.Request) -> web.Response:
        collected.bodies.append(await request.read())
        collected.queries.append(request.query_string)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/api/video/callback", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    collected.url = f"http://127.0.0.1:{port}/api/video/callback"
    yield collected
    await runner.cleanup()


async def test_callbacks_report_progress_then_the_final_result(
    client: GrsAIClient,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(gen_time=0.4, callback_interval=0.05, hold=True)
    callback_url = f"{receiver.url}?task_id=task-7"
    remote_id = await client.create_task(spec(model="veo-pro", callback_url=callback_url))
    assert sim.requests()[0]["body"]["webHook"] == callback_url

    await receiver.wait_for(2)  # progress, while the task is held
    assert sim.release() == 1
    deadline = time.monotonic() + 60
    while not receiver.bodies or not client.parse_callback(receiver.bodies[-1]).is_final:
        assert time.monotonic() < deadline, "no final callback"
        await asyncio.sleep(0.02)
    results = [client.parse_callback(b) for b in receiver.bodies]
    progress = [r for r in results if r.status == "running"]
    assert len(progress) >= 2
    assert [r.progress for r in progress] == sorted(r.progress for r in progress)
    assert results[-1].status == "succeeded"
    assert results[-1].remote_id == remote_id
    assert results[-1].video_url == f"{sim.url}/files/{remote_id}.mp4"
    assert set(receiver.queries) == {"task_id=task-7"}
    # The callback body is the bare task object, not the envelope.
    assert "code" not in json.loads(receiver.bodies[-1])
    assert results[-1] == await client.get_result(remote_id)


async def test_shut_progress_sends_only_the_final_callback(
    session: aiohttp.ClientSession,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(gen_time=0.3, callback_interval=0.05)
    body = {
        "model": "sora-2",
        "prompt": "quiet please",
        "webHook": receiver.url,
        "shutProgress": True,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    async with session.post(sim.url + "/v1/video/sora-video", json=body, headers=headers) as r:
        assert (await r.json())["code"] == 0
    await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(receiver.bodies) == 1
    assert json.loads(receiver.bodies[0])["status"] == "succeeded"


async def test_lost_callbacks_leave_polling_as_the_truth(
    client: GrsAIClient,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(callback_loss_rate=1.0)
    remote_id = await client.create_task(spec(callback_url=receiver.url))
    await until(lambda: sim.stats()["callbacks_lost"] == 1)
    assert receiver.bodies == []
    assert sim.stats()["callbacks_lost"] == 1
    assert (await client.get_result(remote_id)).status == "succeeded"


async def test_duplicated_callbacks_arrive_twice(
    client: GrsAIClient,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(callback_duplicate_rate=1.0)
    await client.create_task(spec(callback_url=receiver.url))
    bodies = await receiver.wait_for(2)
    await asyncio.sleep(0.1)
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    stats = sim.stats()
    assert (stats["callbacks_sent"], stats["callbacks_duplicated"]) == (2, 1)


async def test_reordered_progress_callbacks_arrive_after_the_final(
    client: GrsAIClient,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(callback_interval=0.05, callback_reorder_rate=1.0, hold=True)
    await client.create_task(spec(callback_url=receiver.url))
    await until(lambda: sim.stats()["callbacks_reordered"] >= 1)  # held back while running
    assert sim.release() == 1
    await receiver.wait_for(2)
    await asyncio.sleep(0.1)
    statuses = [json.loads(b)["status"] for b in receiver.bodies]
    assert statuses[0] == "succeeded"
    assert set(statuses[1:]) == {"running"}


async def test_delayed_callbacks_arrive_late(
    client: GrsAIClient,
    sim: SimulatorHandle,
    receiver: Receiver,
) -> None:
    sim.configure(callback_delay_rate=1.0, callback_delay=3600)
    await client.create_task(spec(callback_url=receiver.url))
    await until(lambda: sim.stats()["callbacks_delayed"] == 1)
    assert receiver.bodies == []
    sim.advance(3600)
    await receiver.wait_for(1)


# --------------------------------------------------------------------------- determinism


async def run_scenario(client: GrsAIClient, sim: SimulatorHandle) -> list[tuple[Any, ...]]:
    sim.reset()
    outcomes: list[tuple[Any, ...]] = []
    for i in range(12):
        try:
            remote_id = await client.create_task(spec(prompt=f"clip {i}", model="veo-flash"))
        except ProviderTransient as exc:
            outcomes.append(("transient", exc.http_status))
            continue
        result = await client.get_result(remote_id)
        outcomes.append((remote_id, result.status, result.failure_type))
    return outcomes


async def test_same_seed_and_requests_give_the_same_outcomes(
    client: GrsAIClient,
    sim: SimulatorHandle,
) -> None:
    sim.configure(seed=42, output_moderation_rate=0.3, error_rate=0.2, create_500_rate=0.2)
    first = await run_scenario(client, sim)
    second = await run_scenario(client, sim)
    assert first == second
    kinds = {o[1] if o[0] != "transient" else "transient" for o in first}
    assert len(kinds) >= 2, f"the rates should produce a mix: {first}"
    sim.configure(seed=43)
    assert await run_scenario(client, sim) != first


# --------------------------------------------------------------------------- CLI


async def test_simulator_command_serves_with_options_from_the_environment(
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "VIDBATCH_SIM_PORT": str(port),
        "VIDBATCH_SIM_GEN_TIME": "0",
        "VIDBATCH_SIM_API_KEY": "sk-from-env",
        "VIDBATCH_SIM_LOG_LEVEL": "warning",
    }
    code = "import typer; from vidbatch.cli.simulator import simulator; typer.run(simulator)"
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                async with session.get(url + "/_sim/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert process.poll() is None, "the simulator command exited"
            assert time.monotonic() < deadline, "the simulator command did not start"
            await asyncio.sleep(0.05)
        with pytest.raises(ProviderRejected):
            await make_client(session, url).create_task(spec())
        client = make_client(session, url, api_key="sk-from-env")
        result = await client.get_result(await client.create_task(spec()))
        assert result.status == "succeeded"
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
