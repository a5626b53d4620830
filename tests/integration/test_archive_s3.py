"""The result archive in S3: a real S3-compatible server in its own process (moto's
standalone server, started by the session's ``s3_server`` fixture), reached over HTTP by
the store and by the presigned URLs customers get. Both databases."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import av
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, items, new_batch
from tests.integration.archive_helpers import Setup, setups
from tests.integration.worker_helpers import batch_row, run_until_settled, task_rows
from tests.s3_fixture import S3Server
from tests.simulator_fixture import SimulatorHandle
from vidbatch.clock import FakeClock
from vidbatch.providers.simulator.app import sample_video
from vidbatch.services import archive as archive_svc
from vidbatch.storage import StoreError, check_writable, get_bytes
from vidbatch.worker.round import run_once

VIDEO = sample_video()


@pytest.fixture
async def make_setup(
    settings_factory: Any, engine: AsyncEngine, s3_server: S3Server
) -> AsyncIterator[Any]:
    async for make in setups(engine, settings_factory):
        yield make


async def test_s3_end_to_end_with_presigned_urls(
    make_setup: Any, s3_server: S3Server, sim: SimulatorHandle
) -> None:
    bucket = s3_server.create_bucket()
    s: Setup = await make_setup(**s3_server.settings(bucket))
    assert s.rt.result_store is not None
    await check_writable(s.rt.result_store)
    created = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    got = await s.items(created.batch_id)
    assert [i["archive_status"] for i in got] == ["stored", "stored"]
    async with httpx.AsyncClient(timeout=10) as web:
        for item in got:
            # a presigned GET on the S3 server itself, fetched over HTTP
            assert item["video_url"].startswith(f"{s3_server.url}/{bucket}/archive/videos/")
            assert "X-Amz-Signature=" in item["video_url"]
            video = await web.get(item["video_url"])
            assert video.status_code == 200
            assert video.content == VIDEO
            assert video.headers["content-type"] == "video/mp4"
            assert item["video_sha256"] == hashlib.sha256(VIDEO).hexdigest()
            thumb = await web.get(item["thumbnail_url"])
            assert thumb.status_code == 200
            assert thumb.headers["content-type"] == "image/jpeg"
            with av.open(io.BytesIO(thumb.content), mode="r") as container:
                frame = next(container.decode(video=0))
                assert (frame.width, frame.height) == (item["video_width"], item["video_height"])
    # the objects are under the prefix, one per item
    assert await s.stored_keys(created.batch_id) == sorted(
        f"videos/{created.batch_id}/{i['item_id']}.mp4" for i in got
    )
    listing = httpx.get(f"{s3_server.url}/{bucket}?list-type=2&prefix=archive/videos/").text
    assert listing.count("<Key>") == 2
    # the provider's URL expires: the presigned one still serves
    sim.advance(3 * 3600)
    assert httpx.get(got[0]["source_url"]).status_code == 404
    again = await s.items(created.batch_id)
    assert httpx.get(again[0]["video_url"]).content == VIDEO
    await assert_audit_clean(s.rt.engine)


async def test_s3_public_base_url_gives_plain_urls(
    make_setup: Any, s3_server: S3Server, sim: SimulatorHandle
) -> None:
    bucket = s3_server.create_bucket()
    s: Setup = await make_setup(
        **s3_server.settings(bucket), result_public_base_url="https://cdn.example/media"
    )
    created = await new_batch(s.rt.engine, s.caller, items(1))
    await run_until_settled(s.rt)
    item = (await s.items(created.batch_id))[0]
    assert item["video_url"] == (
        f"https://cdn.example/media/archive/videos/{created.batch_id}/{item['item_id']}.mp4"
    )
    assert item["thumbnail_url"].endswith(f"/thumbnails/{created.batch_id}/{item['item_id']}.jpg")


async def test_s3_bucket_missing_then_created(
    make_setup: Any, s3_server: S3Server, sim: SimulatorHandle
) -> None:
    bucket = f"vb-late-{uuid.uuid4().hex[:12]}"
    s: Setup = await make_setup(**s3_server.settings(bucket))
    assert s.rt.result_store is not None
    with pytest.raises(StoreError):
        await check_writable(s.rt.result_store)
    created = await new_batch(s.rt.engine, s.caller, items(1))
    assert isinstance(s.rt.clock, FakeClock)
    for _ in range(30):
        await run_once(s.rt, deliver_webhooks=False)
        rows = await task_rows(s.rt.engine, created.batch_id)
        if rows[0].archive_attempts >= 2:
            break
        s.rt.clock.advance(5)
    assert rows[0].archive_status == "pending"
    assert "store write failed" in rows[0].archive_error
    assert (await batch_row(s.rt.engine, created.batch_id)).settled_at is None
    s3_server.create_bucket(bucket)  # the store is back
    await run_until_settled(s.rt, pause=5.0)
    rows = await task_rows(s.rt.engine, created.batch_id)
    assert rows[0].archive_status == "stored"
    assert await get_bytes(s.rt.result_store, rows[0].archive_key) == VIDEO


async def test_s3_purge_deletes_the_batch_objects(
    make_setup: Any, s3_server: S3Server, sim: SimulatorHandle
) -> None:
    bucket = s3_server.create_bucket()
    s: Setup = await make_setup(**s3_server.settings(bucket))
    created = await new_batch(s.rt.engine, s.caller, items(2))
    await run_until_settled(s.rt)
    done = await archive_svc.purge_batch(
        s.rt.engine, s.rt.result_store, created.batch_id, now=s.rt.clock.now()
    )
    assert (done.files_deleted, done.items_expired) == (4, 2)
    assert await s.stored_keys(created.batch_id) == []
    assert await s.stored_keys(created.batch_id, "thumbnails") == []
    assert [i["archive_status"] for i in await s.items(created.batch_id)] == ["expired"] * 2
