"""The result archive against the simulator over real HTTP, on both databases, with a real
local store: what a customer downloads is the provider's video, with a thumbnail, under
signed links that outlive the provider's URL; faults retry or give up as documented."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import (
    TEST_SECRET_KEY,
    assert_audit_clean,
    balance,
    items,
    new_account,
    new_batch,
)
from tests.integration.archive_helpers import Setup, setups
from tests.integration.worker_helpers import batch_row, run_until_settled, task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import FakeClock
from vidbatch.db.schema import webhook_deliveries
from vidbatch.providers.simulator.app import sample_video
from vidbatch.runtime import Runtime
from vidbatch.services import archive as archive_svc
from vidbatch.services.tasks import Fence
from vidbatch.storage import link_signature
from vidbatch.worker import archive
from vidbatch.worker.round import Round, run_once

VIDEO = sample_video()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
async def make_setup(
    settings_factory: Any, engine: AsyncEngine, store_dir: Path
) -> AsyncIterator[Any]:
    """Builds a runtime (fake clock) with a local store, an API client and an account."""

    def make_settings(**overrides: Any) -> Any:
        return settings_factory(result_store=str(store_dir), **overrides)

    async for make in setups(engine, make_settings):
        yield make


@pytest.fixture
async def setup(make_setup: Any) -> Setup:
    made: Setup = await make_setup()
    return made


async def _stored_keys(s: Setup, batch_id: str) -> list[str]:
    return await s.stored_keys(batch_id)


async def test_local_store_end_to_end(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    created = await new_batch(
        s.rt.engine,
        s.caller,
        {"items": items(2), "webhook_url": "http://127.0.0.1:9/hook"},
    )
    await run_until_settled(s.rt)
    got = await s.items(created.batch_id)
    assert [i["archive_status"] for i in got] == ["stored", "stored"]
    for item in got:
        assert item["video_url"].startswith("http://vidbatch.test/results/videos/")
        assert item["source_url"].startswith(sim.url + "/files/")
        assert item["video_size_bytes"] == len(VIDEO)
        assert item["video_sha256"] == hashlib.sha256(VIDEO).hexdigest()
        assert (item["video_width"], item["video_height"]) == (64, 36)
        assert item["video_duration_seconds"] == pytest.approx(1.0, abs=0.1)
        # the signed link serves the very bytes the provider served
        video = await s.http.get(item["video_url"])
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        assert video.content == VIDEO
        head = await s.http.head(item["video_url"])
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(VIDEO))
        part = await s.http.get(item["video_url"], headers={"Range": "bytes=0-9"})
        assert part.status_code == 206
        assert part.content == VIDEO[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{len(VIDEO)}"
        # the thumbnail is a JPEG of the video's size
        thumb = await s.http.get(item["thumbnail_url"])
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"
        with av.open(io.BytesIO(thumb.content), mode="r") as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (64, 36)
            assert container.format.name in ("jpeg_pipe", "image2", "mjpeg")
    # one object per item, under the item's own key
    assert await _stored_keys(s, created.batch_id) == sorted(
        f"videos/{created.batch_id}/{i['item_id']}.mp4" for i in got
    )
    # the provider's URL expires: the durable one still serves the video
    sim.advance(3 * 3600)
    assert httpx.get(got[0]["source_url"]).status_code == 404
    again = await s.items(created.batch_id)
    assert (await s.http.get(again[0]["video_url"])).content == VIDEO
    # the batch.completed event carries the durable URLs and the new fields
    async with s.rt.engine.connect() as conn:
        payload = (
            await conn.execute(
                select(webhook_deliveries.c.payload).where(
                    webhook_deliveries.c.batch_id == created.batch_id,
                    webhook_deliveries.c.event_type == "batch.completed",
                )
            )
        ).scalar_one()
    for event_item in payload["items"]:
        assert event_item["archive_status"] == "stored"
        assert "/results/videos/" in event_item["video_url"]
        assert "/results/thumbnails/" in event_item["thumbnail_url"]
        assert event_item["source_url"].startswith(sim.url)
    await assert_audit_clean(s.rt.engine)


async def test_links_tampered_or_expired_are_refused(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    url = (await s.items(created.batch_id))[0]["video_url"]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    key = parts.path.removeprefix("/results/")
    signature, expires = query["signature"][0], int(query["expires"][0])
    base = f"{parts.scheme}://{parts.netloc}/results/"
    assert (await s.http.get(url)).status_code == 200
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    refused = [
        f"{base}{key}?expires={expires}&signature={forged}",  # tampered signature
        f"{base}{key}?expires={expires + 1}&signature={signature}",  # longer life
        f"{base}{key.replace('.mp4', 'x.mp4')}?expires={expires}&signature={signature}",
        f"{base}{key}",  # no signature at all
    ]
    assert s.rt.links is not None
    past = 1_000_000_000  # a genuine signature that expired long ago
    refused.append(
        f"{base}{key}?expires={past}&signature={link_signature(s.rt.links.secret, key, past)}"
    )
    for bad in refused:
        answer = await s.http.get(bad)
        assert answer.status_code == 403, bad
        assert answer.json()["error"] == "RESULT_LINK_INVALID"
    # the genuine link itself, once its life (VIDBATCH_RESULT_URL_TTL_SECONDS) is over
    assert isinstance(s.rt.clock, FakeClock)
    s.rt.clock.advance(s.rt.settings.result_url_ttl_seconds - 5)
    assert (await s.http.get(url)).status_code == 200
    s.rt.clock.advance(10)
    assert (await s.http.get(url)).status_code == 403
    fresh = (await s.items(created.batch_id))[0]["video_url"]  # read again: signed anew
    assert (await s.http.get(fresh)).content == VIDEO


async def test_results_export_carries_the_archive(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    headers = {"x-api-key": s.key}
    jsonl = await s.http.get(f"/api/v1/batches/{created.batch_id}/results", headers=headers)
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert all(line["archive_status"] == "stored" for line in lines)
    for line in lines:
        assert (await s.http.get(line["video_url"])).content == VIDEO
    assert all(line["video_sha256"] == hashlib.sha256(VIDEO).hexdigest() for line in lines)
    text = await s.http.get(
        f"/api/v1/batches/{created.batch_id}/results?format=csv", headers=headers
    )
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert [r["archive_status"] for r in rows] == ["stored", "stored"]
    assert rows[0]["video_width"] == "64" and rows[0]["thumbnail_url"].startswith("http")


# --- faults ----------------------------------------------------------------------------


async def test_file_500_twice_then_stored(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    sim.configure(file_500_next=2)
    await run_until_settled(s.rt, pause=5.0)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "stored"
    assert rows[0].archive_attempts == 3
    files = [r for r in sim.requests() if r["path"].startswith("/files/")]
    assert [r["http_status"] for r in files] == [500, 500, 200]


async def test_file_gone_gives_up_at_once_and_is_charged(
    setup: Setup, sim: SimulatorHandle
) -> None:
    s = setup
    sim.configure(result_ttl=0.0)  # the file is gone as soon as the video is made: 404
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "failed"
    assert rows[0].archive_attempts == 1
    assert "HTTP 404" in rows[0].archive_error
    batch = await batch_row(s.rt.engine, created.batch_id)
    assert (batch.status, batch.credits_spent) == ("completed", 10)  # still charged
    item = (await s.items(created.batch_id))[0]
    assert item["archive_status"] == "failed"
    assert item["video_url"] == item["source_url"] == rows[0].video_url
    assert item["thumbnail_url"] is None
    assert await _stored_keys(s, created.batch_id) == []
    assert 'vidbatch_archives_total{outcome="failed"} 1.0' in s.rt.metrics.render().decode()
    assert await balance(s.rt.engine, s.caller.account_id) == (990, 0)


@pytest.mark.parametrize(
    ("knobs", "overrides", "why"),
    [
        ({"file_body": "html"}, {}, "not a video"),
        ({}, {"archive_max_bytes": 1000}, "too large"),
    ],
)
async def test_non_video_and_oversize_are_refused(
    make_setup: Any,
    sim: SimulatorHandle,
    knobs: dict[str, Any],
    overrides: dict[str, Any],
    why: str,
) -> None:
    s = await make_setup(**overrides)
    sim.configure(**knobs)
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert (rows[0].archive_status, rows[0].archive_attempts) == ("failed", 1)
    assert why in rows[0].archive_error
    assert await _stored_keys(s, created.batch_id) == []


async def test_private_address_refused_without_a_connection(
    make_setup: Any, sim: SimulatorHandle
) -> None:
    s = await make_setup(allow_private_urls=False)
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "failed"
    assert "private address refused" in rows[0].archive_error
    assert sim.stats()["calls_per_endpoint"].get("/files", 0) == 0  # never connected


async def test_store_unreachable_then_back(
    setup: Setup, sim: SimulatorHandle, store_dir: Path
) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    # a file where the store's directory should be: the store cannot be used
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    store_dir.write_bytes(b"not a directory")
    for _ in range(20):
        await run_once(s.rt, deliver_webhooks=False)
        rows = await task_rows(s.rt.engine, created.batch_id)
        if rows[0].archive_attempts >= 2:
            break
        assert isinstance(s.rt.clock, FakeClock)
        s.rt.clock.advance(5)
    assert rows[0].archive_status == "pending"
    assert "store unavailable" in rows[0].archive_error
    assert (await batch_row(s.rt.engine, created.batch_id)).settled_at is None  # waits
    store_dir.unlink()  # the store is back
    await run_until_settled(s.rt, pause=5.0)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "stored"
    assert len(await _stored_keys(s, created.batch_id)) == 1


async def test_deadline_gives_up_with_the_provider_url(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    sim.configure(file_500_rate=1.0)
    await run_until_settled(s.rt, pause=120.0)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "failed"
    assert rows[0].archive_error.startswith("gave up at the archive deadline")
    batch = await batch_row(s.rt.engine, created.batch_id)
    assert batch.credits_spent == 10


async def test_an_unexpected_error_is_retried_then_given_up_and_the_batch_settles(
    setup: Setup, sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))

    def disk_full(path: Path) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive, "probe", disk_full)
    await run_until_settled(s.rt, pause=120.0)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "failed" and rows[0].archive_attempts > 1
    assert "No space left on device" in rows[0].archive_error
    assert rows[0].archive_error.startswith("gave up at the archive deadline")
    batch = await batch_row(s.rt.engine, created.batch_id)
    assert batch.settled_at is not None and batch.credits_spent == 10
    await assert_audit_clean(s.rt.engine)


async def test_archives_that_never_finish_end_after_the_deadline(
    setup: Setup, sim: SimulatorHandle
) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    sim.configure(file_hold=True)
    rnd = Round(s.rt, "w1", random.Random(1))
    assert isinstance(s.rt.clock, FakeClock)
    for _ in range(50):
        s.rt.clock.advance(1)
        await rnd.dispatch()
        await rnd.poll_all()
        if (await task_rows(s.rt.engine, created.batch_id))[0].status == "succeeded":
            break
    # every worker that takes the item dies mid-download (a crash loop): no outcome is
    # ever recorded, and the item comes back at each lease's end
    lease = archive.lease_seconds(s.rt)
    deadline = s.rt.settings.archive_deadline_seconds
    for _ in range(int((deadline + lease) / lease) + 2):
        [claimed] = await archive.claim(s.rt, "crashing", 1)
        dying = asyncio.create_task(archive.archive_one(s.rt, claimed, "crashing", random.Random()))
        await asyncio.sleep(0)
        dying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dying
        s.rt.clock.advance(lease + 1)
    sim.configure(file_hold=False)
    await run_until_settled(s.rt)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "failed"
    assert rows[0].archive_error == "past the archive deadline: earlier attempts never finished"
    batch = await batch_row(s.rt.engine, created.batch_id)
    assert batch.settled_at is not None and batch.credits_spent == 10
    await assert_audit_clean(s.rt.engine)


async def test_worker_killed_mid_archive_another_stores_it_once(
    setup: Setup, sim: SimulatorHandle
) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(1))
    sim.configure(file_hold=True)
    rnd = Round(s.rt, "w1", random.Random(1))
    for _ in range(50):  # submit and poll (not archive) until the video exists
        assert isinstance(s.rt.clock, FakeClock)
        s.rt.clock.advance(1)
        await rnd.dispatch()
        await rnd.poll_all()
        rows = await task_rows(s.rt.engine, created.batch_id)
        if rows[0].status == "succeeded":
            break
    assert (rows[0].status, rows[0].archive_status) == ("succeeded", "pending")
    # worker 1 claims the archive and dies while the bytes are on their way
    [claimed] = await archive.claim(s.rt, "w1", 1)
    dying = asyncio.create_task(archive.archive_one(s.rt, claimed, "w1", random.Random(1)))
    while not sim.stats()["calls_per_endpoint"].get("/files", 0):
        await asyncio.sleep(0.01)
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    sim.configure(file_hold=False)
    assert await _stored_keys(s, created.batch_id) == []  # nothing half-visible
    # its lease runs out; another worker takes the item over and stores it
    assert isinstance(s.rt.clock, FakeClock)
    s.rt.clock.advance(archive.lease_seconds(s.rt) + 1)
    await run_until_settled(s.rt)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "stored"
    assert rows[0].lease_owner is None
    assert await _stored_keys(s, created.batch_id) == [
        f"videos/{created.batch_id}/{rows[0].id}.mp4"
    ]
    # the dead worker's late word changes nothing
    async with s.rt.engine.begin() as conn:
        assert not await archive_svc.give_up(
            conn, rows[0].id, Fence("w1", claimed.lease_token), reason="late", now=s.rt.clock.now()
        )


# --- retention -------------------------------------------------------------------------


async def test_retention_deletes_files_and_marks_items(
    setup: Setup, sim: SimulatorHandle, store_dir: Path
) -> None:
    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    assert len(await _stored_keys(s, created.batch_id)) == 2
    assert isinstance(s.rt.clock, FakeClock)
    s.rt.clock.advance(29 * 86_400)
    await run_once(s.rt, deliver_webhooks=False)
    assert len(await _stored_keys(s, created.batch_id)) == 2  # not yet
    s.rt.clock.advance(2 * 86_400)
    summary = await run_once(s.rt, deliver_webhooks=False)
    assert summary.archive["expired"] == 2
    assert await _stored_keys(s, created.batch_id) == []
    assert not list((store_dir).rglob("*.jpg"))
    got = await s.items(created.batch_id)
    assert [i["archive_status"] for i in got] == ["expired", "expired"]
    assert all(i["video_url"] == i["source_url"] and i["thumbnail_url"] is None for i in got)


async def test_purge_deletes_one_batch_now(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    kept = await new_batch(s.rt.engine, s.caller, items(1))
    purged = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    link = (await s.items(purged.batch_id))[0]["video_url"]
    assert (await s.http.get(link)).status_code == 200
    done = await archive_svc.purge_batch(
        s.rt.engine, s.rt.result_store, purged.batch_id, now=s.rt.clock.now()
    )
    assert (done.files_deleted, done.items_expired) == (4, 2)  # videos and thumbnails
    gone = await s.http.get(link)  # a link given out before: the file is no more
    assert (gone.status_code, gone.json()["error"]) == (404, "NOT_FOUND")
    assert await _stored_keys(s, purged.batch_id) == []
    assert len(await _stored_keys(s, kept.batch_id)) == 1
    assert [r.archive_status for r in await task_rows(s.rt.engine, purged.batch_id)] == [
        "expired",
        "expired",
    ]


async def test_worker_process_killed_mid_archive_leaves_one_object(
    settings_factory: Any,
    engine: AsyncEngine,
    db_url: str,
    sim: SimulatorHandle,
    store_dir: Path,
    tmp_path: Path,
) -> None:
    """A real `vidbatch worker` process is SIGKILLed while the video's bytes are on their
    way: nothing is left at the key; another worker stores it once its lease ran out."""
    from tests.integration.test_worker_processes import start_worker, worker_env

    caller = await new_account(engine, credits=100)
    created = await new_batch(engine, caller, items(1))
    sim.configure(file_hold=True)
    env = worker_env(
        db_url,
        sim,
        VIDBATCH_RESULT_STORE=str(store_dir),
        VIDBATCH_ALLOW_PRIVATE_URLS="1",
        VIDBATCH_ARCHIVE_TIMEOUT_SECONDS="30",
    )
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not sim.stats()["calls_per_endpoint"].get("/files", 0):
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            assert asyncio.get_running_loop().time() < deadline, "no download started"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    sim.configure(file_hold=False)
    [row] = await task_rows(engine, created.batch_id)
    assert (row.status, row.archive_status) == ("succeeded", "pending")
    dead_owner = row.lease_owner
    assert dead_owner
    assert not list(store_dir.rglob("*.mp4"))  # nothing half-visible
    # another worker, once the dead one's lease has run out
    rt = await Runtime.open(settings_factory(result_store=str(store_dir)), engine=engine)
    try:
        rt.clock = FakeClock()
        rt.clock.advance(archive.lease_seconds(rt) + 1)
        await run_until_settled(rt)
    finally:
        await rt.close()
    [row] = await task_rows(engine, created.batch_id)
    assert row.archive_status == "stored"
    assert [p.relative_to(store_dir).as_posix() for p in store_dir.rglob("*.mp4")] == [
        f"videos/{created.batch_id}/{row.id}.mp4"
    ]
    assert (store_dir / row.archive_key).read_bytes() == VIDEO


async def test_cli_lists_and_purges_a_batch(
    setup: Setup, sim: SimulatorHandle, db_url: str, store_dir: Path
) -> None:
    """`vidbatch results list|purge --batch ID` as an operator runs them."""
    import os
    import subprocess
    import sys

    from tests.acceptance.cli_helpers import assert_usage_error, one_json

    s = setup
    created = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "VIDBATCH_RESULT_STORE": str(store_dir),
        "VIDBATCH_SECRET_KEY": TEST_SECRET_KEY,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vidbatch", "results", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    # without the store's setting the files cannot be found: refused, nothing marked
    refused = subprocess.run(
        [sys.executable, "-m", "vidbatch", "results", "purge", "--batch", created.batch_id],
        capture_output=True,
        text=True,
        env={**env, "VIDBATCH_RESULT_STORE": "none"},
        timeout=60,
    )
    assert "VIDBATCH_RESULT_STORE is none" in assert_usage_error(refused)
    listed = one_json(cli("list", "--batch", created.batch_id, "--json"))
    assert [t["archive_status"] for t in listed] == ["stored", "stored"]
    assert all("/results/videos/" in t["video_url"] for t in listed)
    assert listed[0]["video_sha256"] == hashlib.sha256(VIDEO).hexdigest()
    done = one_json(cli("purge", "--batch", created.batch_id, "--json"))
    assert done == {"batch_id": created.batch_id, "files_deleted": 4, "items_expired": 2}
    assert not list(store_dir.rglob("*.mp4")) and not list(store_dir.rglob("*.jpg"))
    assert [i["archive_status"] for i in await s.items(created.batch_id)] == ["expired"] * 2
    assert "not found" in assert_usage_error(cli("purge", "--batch", "no-such-batch")).lower()


async def test_admin_api_shows_why_an_archive_gave_up(setup: Setup, sim: SimulatorHandle) -> None:
    s = setup
    sim.configure(file_body="html")
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    from tests.conftest import ADMIN_TOKEN

    got = await s.http.get(
        f"/api/admin/batches/{created.batch_id}/tasks",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert got.status_code == 200, got.text
    [task] = got.json()["tasks"]
    assert task["archive_status"] == "failed"
    assert "not a video" in task["archive_error"]
    assert task["video_url"] == task["source_url"] and task["thumbnail_url"] is None
