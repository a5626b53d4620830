"""No input reaches a 500: form routes given multipart bodies, a chunked body over the size
limit, JSON nested too deeply behind a valid callback token. A failed request is one log
line, and the same error repeated (a database outage) is not logged thousands of times."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.helpers import assert_audit_clean, items, new_account, new_batch
from tests.integration.worker_helpers import task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.domain.callback_tokens import callback_token
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.worker.round import run_once

FORM_ROUTES = [
    "/admin/login",
    "/admin/logout",
    "/admin/accounts/a1/keys",
    "/admin/keys/k1/deactivate",
    "/admin/accounts/a1/adjust",
    "/admin/batches/b1/cancel",
]
MULTIPART = {"token": (None, ADMIN_TOKEN), "csrf": (None, "x"), "credits": (None, "5")}


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    crashed = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not crashed, [r.getMessage() for r in crashed]


@pytest.mark.parametrize("path", FORM_ROUTES)
async def test_multipart_form_posts_are_answered_not_crashed(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    r = await client.post(path, files=MULTIPART)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    no_traceback(caplog)
    # A multipart body with a file part, and a malformed multipart body.
    r = await client.post(path, files={"token": ("t.txt", b"x" * 100, "text/plain")})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    r = await client.post(
        path, content=b"--nope\r\n\r\n", headers={"content-type": "multipart/form-data"}
    )
    assert r.status_code < 500, (r.status_code, r.text[:300])
    no_traceback(caplog)


async def test_a_multipart_sign_in_is_refused_without_signing_in(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/admin/login", files=MULTIPART)
    assert r.status_code in (400, 415)
    assert "set-cookie" not in r.headers


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(max_body_bytes=300_000)


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/batches", "application/json"),
        ("/api/enterprise/video-batch", "application/json"),
        ("/admin/login", "application/x-www-form-urlencoded"),
        ("/api/video/callback", "application/json"),
    ],
)
async def test_a_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient,
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
) -> None:
    _, key = await account_svc.create_account(runtime.engine, "big", credits=100)
    caplog.set_level(logging.INFO)
    r = await client.post(
        path,
        content=chunks(400_000, size=16_384),
        headers={"x-api-key": key.api_key, "content-type": content_type},
    )
    assert "content-length" not in r.request.headers  # really chunked
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert r.json()["error"] == "PAYLOAD_TOO_LARGE"
    no_traceback(caplog)
    await assert_audit_clean(runtime.engine)


async def test_deeply_nested_json_with_a_valid_callback_token_is_400(
    client: httpx.AsyncClient,
    runtime: Runtime,
    sim: SimulatorHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.configure(hold=True, gen_time=3600.0)
    caller = await new_account(runtime.engine, credits=100)
    created = await new_batch(runtime.engine, caller, items(1))
    await run_once(runtime, deliver_webhooks=False)
    (row,) = await task_rows(runtime.engine, created.batch_id)
    token = callback_token(runtime.callback_key, row.id)
    caplog.set_level(logging.INFO)
    deep = b'{"status": "succeeded", "x": ' + b"[" * 900 + b"]" * 900 + b"}"
    deeper = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, deeper):
        r = await client.post(f"/api/video/callback?task_id={row.id}&token={token}", content=body)
        assert r.status_code == 400, (r.status_code, r.text[:300])
    no_traceback(caplog)
    (after,) = await task_rows(runtime.engine, created.batch_id)
    assert after.status == "processing"
    await assert_audit_clean(runtime.engine)


class Ticks:
    """The log limiter's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_outage_is_logged_once_a_minute_not_once_a_request(
    client: httpx.AsyncClient, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request fails the same way (its table is gone: unreachable on SQLite, an
    unexpected error on PostgreSQL): each is answered, one line is logged per minute."""
    from sqlalchemy import text

    _, key = await account_svc.create_account(runtime.engine, "acme", credits=100)
    ticks = Ticks()
    client.app.state.log_limiter.clock = ticks  # type: ignore[attr-defined]
    async with runtime.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE enterprise_api_keys RENAME TO keys_away"))
    try:
        caplog.set_level(logging.INFO)
        for _ in range(50):
            r = await client.get("/api/v1/credits/balance", headers={"x-api-key": key.api_key})
            assert r.status_code in (500, 503) and r.json()["ok"] is False
        (line,) = failure_lines(caplog)
        assert "repeated" in line.__dict__ and line.__dict__["repeated"] == 0
        ticks.now += 61
        caplog.clear()
        r = await client.get("/api/v1/credits/balance", headers={"x-api-key": key.api_key})
        assert r.status_code in (500, 503)
        (line,) = failure_lines(caplog)
        assert "49 more like it in the last 60 s not logged" in line.getMessage()
    finally:
        async with runtime.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE keys_away RENAME TO enterprise_api_keys"))
    ok = await client.get("/api/v1/credits/balance", headers={"x-api-key": key.api_key})
    assert ok.status_code == 200
    await assert_audit_clean(runtime.engine)


async def test_an_unexpected_error_is_one_answer_and_one_log_line(
    client: httpx.AsyncClient,
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault injected below the route: the client gets a JSON 500 (the error does not
    escape the application for the server to log again), and the log has one line."""
    from vidbatch.api import v1

    _, key = await account_svc.create_account(runtime.engine, "acme", credits=100)

    async def broken(*_: Any) -> Any:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(v1.credits, "balance", broken)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        r = await client.get("/api/v1/credits/balance", headers={"x-api-key": key.api_key})
        assert r.status_code == 500
        assert r.json()["error"] == "INTERNAL_ERROR"
        assert "injected" not in r.text
    (line,) = failure_lines(caplog)
    assert line.exc_info is not None and "RuntimeError" in line.getMessage()
    await assert_audit_clean(runtime.engine)


async def test_no_post_route_answers_500_to_odd_bodies(
    client: httpx.AsyncClient, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Every POST route of the app, with the admin token and a real API key, given a
    multipart body, JSON nested too deeply, and bytes that are not UTF-8."""
    import re

    _, key = await account_svc.create_account(runtime.engine, "acme", credits=100)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "x-api-key": key.api_key}
    documented = client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
    paths = sorted(
        {re.sub(r"\{[^}]+\}", "x", path) for path, item in documented if "post" in item}
        | set(FORM_ROUTES)
    )
    assert len(paths) > 15
    deep = b"[" * 50_000 + b"]" * 50_000
    caplog.set_level(logging.INFO)
    for path in paths:
        answers = [
            await client.post(path, files=MULTIPART, headers=headers),
            await client.post(
                path, content=deep, headers={**headers, "content-type": "application/json"}
            ),
            await client.post(
                path, content=b"\xff\xfe{", headers={**headers, "content-type": "application/json"}
            ),
        ]
        for r in answers:
            assert r.status_code < 500, (path, r.status_code, r.text[:200])
    no_traceback(caplog)
    await assert_audit_clean(runtime.engine)
