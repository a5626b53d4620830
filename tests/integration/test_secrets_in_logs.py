"""No secret of any kind reaches the logs on an error path, on SQLite and PostgreSQL: not an
API key or its hash, a webhook secret, the callback secret, the worker secret, the admin
token, the provider key nor VIDBATCH_SECRET_KEY — through a constraint violation, a
database outage, a provider that cannot be reached or a bad request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import TEST_SECRET_KEY, items, new_account, new_batch
from vidbatch.api.app import create_app
from vidbatch.db.engine import make_engine
from vidbatch.logs import QUIET_LOGGERS
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.worker import run_once

ADMIN_TOKEN = "admin-token-0123456789-abcdefghijklmnop"
WORKER_SECRET = "worker-secret-0123456789-abcdef"
CALLBACK_SECRET = "callback-secret-0123456789-abcdef"
FALLBACK_WEBHOOK_SECRET = "whsec_fallbackZmFsbGJhY2stc2VjcmV0LXZhbHVl"
PROVIDER_KEY = "sk-provider-key-0123456789-abcdef"
API_KEY = "vb_" + "K" * 43
KEY_WEBHOOK_SECRET = "whsec_a2V5LXdlYmhvb2stc2VjcmV0LXZhbHVlLTAxMjM="
SECRETS = {
    "admin token": ADMIN_TOKEN,
    "worker secret": WORKER_SECRET,
    "callback secret": CALLBACK_SECRET,
    "webhook secret": FALLBACK_WEBHOOK_SECRET,
    "provider key": PROVIDER_KEY,
    "API key": API_KEY,
    "API key hash": account_svc.hash_key(API_KEY),
    "key webhook secret": KEY_WEBHOOK_SECRET,
    "secret key": TEST_SECRET_KEY,
}


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(
        admin_token=ADMIN_TOKEN,
        internal_worker_secret=WORKER_SECRET,
        callback_secret=CALLBACK_SECRET,
        webhook_secret=FALLBACK_WEBHOOK_SECRET,
        grsai_api_key=PROVIDER_KEY,
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Everything logged, at DEBUG, with the loggers quietened as ``setup_logging`` does."""
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)
    return caplog


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records)
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert leaked == [], f"secrets in the logs: {leaked}"


@pytest.fixture
def fixed_key_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new key gets the same key and webhook secret: the second one violates a
    unique constraint on insert."""
    monkeypatch.setattr(account_svc, "generate_key", lambda: API_KEY)
    monkeypatch.setattr(account_svc, "new_webhook_secret", lambda: KEY_WEBHOOK_SECRET)


async def test_a_constraint_violation_logs_no_parameters(
    client: httpx.AsyncClient, engine: AsyncEngine, fixed_key_secrets: None, logs: Any
) -> None:
    caller = await new_account(engine)
    answer = await client.post(
        f"/api/admin/accounts/{caller.account_id}/keys",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"name": "second"},
    )
    assert answer.status_code == 500
    assert any(r.exc_info for r in logs.records), "the failure is logged with its traceback"
    assert_no_secret(logs)


async def test_bad_requests_log_no_secret(
    client: httpx.AsyncClient, engine: AsyncEngine, fixed_key_secrets: None, logs: Any
) -> None:
    await new_account(engine)
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert (await client.post("/api/v1/batches", headers=bearer, content=b"{")).status_code == 400
    assert (
        await client.post("/api/enterprise/video-batch", headers={"x-api-key": API_KEY}, json={})
    ).status_code == 400
    wrong_admin = {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}x"}
    assert (await client.get("/api/admin/batches", headers=wrong_admin)).status_code == 401
    assert (await client.get("/api/admin/batches", headers=bearer)).status_code == 403
    login = await client.post("/admin/login", data={"token": ADMIN_TOKEN + "x"})
    assert login.status_code == 401
    trigger = await client.post(
        "/api/internal/batch-worker", headers={"x-worker-secret": WORKER_SECRET + "x"}
    )
    assert trigger.status_code == 401
    callback = await client.post(
        f"/api/video/callback?task_id=t&token={CALLBACK_SECRET}", content=b"not json"
    )
    assert callback.status_code == 404
    assert_no_secret(logs)


async def test_an_unreachable_provider_logs_no_secret(
    settings_factory: Any, engine: AsyncEngine, fixed_key_secrets: None, logs: Any
) -> None:
    caller = await new_account(engine)
    await new_batch(engine, caller, items(2))
    closed = settings_factory(
        admin_token=ADMIN_TOKEN,
        internal_worker_secret=WORKER_SECRET,
        callback_secret=CALLBACK_SECRET,
        webhook_secret=FALLBACK_WEBHOOK_SECRET,
        grsai_api_key=PROVIDER_KEY,
        grsai_host="http://127.0.0.1:9",
        provider_connect_timeout=0.5,
    )
    rt = await Runtime.open(closed, engine=engine)
    try:
        await run_once(rt)
    finally:
        await rt.close()
    assert_no_secret(logs)


@pytest.fixture
async def gone_engine(db_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database that does not exist (a file in a missing directory, a
    PostgreSQL database never created)."""
    url = make_url(db_url)
    if url.drivername.startswith("sqlite"):
        gone = f"sqlite:///{tmp_path / 'missing' / 'vidbatch.db'}"
    else:
        gone = url.set(database="vidbatch_gone_database").render_as_string(hide_password=False)
    eng = make_engine(gone)
    yield eng
    await eng.dispose()


async def test_a_database_outage_logs_no_secret(
    settings: Any, runtime: Runtime, gone_engine: AsyncEngine, logs: Any
) -> None:
    runtime.engine = gone_engine
    app = create_app(settings, runtime=runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://vidbatch.test"
    ) as client:
        created = await client.post(
            "/api/v1/batches",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"items": items(1)},
        )
        assert created.status_code == 503
        admin = await client.get(
            "/api/admin/batches", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert admin.status_code == 503
        trigger = await client.post(
            "/api/internal/batch-worker", headers={"x-worker-secret": WORKER_SECRET}
        )
        assert trigger.status_code in (200, 503)  # a round logs each failed step
    assert logs.records, "the outage is logged"
    assert_no_secret(logs)
