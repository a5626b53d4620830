"""Every URL vidbatch sends to or forwards is checked at creation with the function delivery
uses: webhook URLs in any disguise of a private address, and the reference and frame URLs
the provider fetches; a stored URL the check refuses fails its attempt without a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import assert_audit_clean, balance, items, new_batch
from tests.integration.webhook_receiver import Receiver, running_receiver
from vidbatch.db.schema import batch_jobs, webhook_deliveries
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.services.batches import Caller
from vidbatch.webhooks.delivery import deliver_due

DISGUISED_LOOPBACK = [
    "https://2130706433/hook",
    "https://0x7f.1/hook",
    "https://127.1/hook",
    "https://127\uff0e0\uff0e0\uff0e1/hook",  # full-width dots
    "https://127\u30020\u30020\u30021/hook",  # ideographic full stops
    "https://127.0.0.1:1\\@evil.example/",
    "https://[::ffff:127.0.0.1]/hook",
    "https://017700000001/hook",
]


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(allow_private_webhooks=False)


async def count_batches(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(batch_jobs))).scalar_one())


def fields_of(answer: Any) -> list[Any]:
    details = answer.json()["details"]
    return [(f["field"]) for f in details["fields"]] + [
        (i["index"], i["field"]) for i in details["items"]
    ]


@pytest.mark.parametrize("url", DISGUISED_LOOPBACK)
async def test_webhook_url_disguising_a_private_address_is_refused_at_creation(
    client: Any, engine: AsyncEngine, url: str
) -> None:
    account_id, key = await account_svc.create_account(engine, "acme", credits=100)
    for path in ("/api/v1/batches", "/api/enterprise/video-batch"):
        r = await client.post(
            path,
            json={"items": [{"prompt": "x"}], "webhook_url": url},
            headers={"x-api-key": key.api_key},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "INVALID_PAYLOAD"
        assert fields_of(r) == ["webhook_url"]
        assert "webhook_url" in r.json()["message"]
    assert await count_batches(engine) == 0
    assert await balance(engine, account_id) == (100, 0)
    await assert_audit_clean(engine)


async def test_reference_and_frame_urls_must_be_public(client: Any, engine: AsyncEngine) -> None:
    _, key = await account_svc.create_account(engine, "acme", credits=100)
    body = {
        "items": [
            {"prompt": "a", "reference_url": "http://127.0.0.1:8080/ref.png"},
            {"prompt": "b", "meta": {"firstFrameUrl": "http://169.254.169.254/latest/meta-data"}},
            {
                "prompt": "c",
                "meta": {
                    "firstFrameUrl": "https://cdn.example.com/f.png",
                    "urls": ["http://10.1/x"],
                },
            },
            {"prompt": "d", "reference_url": "file:///etc/passwd"},
            {
                "prompt": "e",
                "meta": {
                    "firstFrameUrl": "https://cdn.example.com/f.png",
                    "lastFrameUrl": "http://localhost/l.png",
                },
            },
        ]
    }
    r = await client.post("/api/v1/batches", json=body, headers={"x-api-key": key.api_key})
    assert r.status_code == 400, r.text
    assert fields_of(r) == [
        (0, "reference_url"),
        (1, "meta.firstFrameUrl"),
        (2, "meta.urls[0]"),
        (3, "reference_url"),
        (4, "meta.lastFrameUrl"),
    ]
    assert await count_batches(engine) == 0
    public = {
        "items": [
            {
                "prompt": "a",
                "reference_url": "http://images.example.com/ref.png",
                "meta": {
                    "firstFrameUrl": "https://cdn.example.com/f.png",
                    "urls": ["https://x.example/u"],
                },
            }
        ]
    }
    ok = await client.post("/api/v1/batches", json=public, headers={"x-api-key": key.api_key})
    assert ok.status_code == 200, ok.text
    await assert_audit_clean(engine)


async def test_private_urls_allowed_by_the_override(
    settings_factory: Any, engine: AsyncEngine
) -> None:
    import httpx

    from vidbatch.api.app import create_app

    relaxed = settings_factory(allow_private_webhooks=True)
    rt = await Runtime.open(relaxed, engine=engine)
    try:
        app = create_app(relaxed, runtime=rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vidbatch.test"
        ) as client:
            _, key = await account_svc.create_account(engine, "dev", credits=100)
            r = await client.post(
                "/api/v1/batches",
                json={
                    "items": [{"prompt": "a", "reference_url": "http://127.0.0.1:9/r.png"}],
                    "webhook_url": "http://127.0.0.1:9/hook",
                },
                headers={"x-api-key": key.api_key},
            )
            assert r.status_code == 200, r.text
    finally:
        await rt.close()
    await assert_audit_clean(engine)


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        ("https://127.0.0.1:1\\@evil.example/", "invalid URL: must not contain"),
        ("https://2130706433/hook", "private address refused"),
        ("https://0x7f.1/hook", "private address refused"),
    ],
)
async def test_a_stored_url_the_check_refuses_fails_without_a_traceback(
    runtime: Any,
    settings: Any,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    stored: str,
    error: str,
) -> None:
    """Rows written before the creation check existed: refused at delivery, no crash."""
    account_id, key = await account_svc.create_account(engine, "acme", credits=100)
    caller = Caller(account_id=account_id, key_id=key.key_id)
    async with running_receiver() as receiver:
        created = await new_batch(
            engine, caller, {"items": items(1), "webhook_url": receiver.at("/hook")}
        )
        async with engine.begin() as conn:
            await conn.execute(update(webhook_deliveries).values(url=stored))
        caplog.set_level(logging.INFO)
        assert await deliver_due(runtime, owner="w") == (0, 1)
        assert_nothing_sent(receiver)
    async with engine.connect() as conn:
        (row,) = (
            await conn.execute(
                select(webhook_deliveries).where(webhook_deliveries.c.batch_id == created.batch_id)
            )
        ).all()
    assert row.last_error.startswith(error), row.last_error
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    await assert_audit_clean(engine)


def assert_nothing_sent(receiver: Receiver) -> None:
    assert receiver.seen == []
