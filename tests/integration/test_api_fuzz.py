"""Property tests of the customer API: whatever a client sends — any JSON, any bytes, any
path id or query string — the answer is never a 5xx, and every 4xx has the error shape.

Runs on SQLite only: it is about input handling, not storage, and stays fast there.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.helpers import keyed_engine as make_engine
from vidbatch.api.app import create_app
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.settings import Settings

T = TypeVar("T")

FUZZ = hsettings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    headers: dict[str, str]
    batch_id: str

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


#: Input handling, not storage: SQLite only, where it stays fast.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    """One app, key and batch for all the examples of a test, on its own event loop."""
    settings = Settings(
        database_url=db_url, callback_secret="fuzz", allow_private_webhooks=False, max_items=50
    )
    loop = asyncio.new_event_loop()

    async def setup() -> tuple[Runtime, httpx.AsyncClient, dict[str, str], str]:
        rt = await Runtime.open(settings, engine=make_engine(db_url))
        rt.owns_engine = True
        _, key = await account_svc.create_account(
            rt.engine, "fuzz", credits=10**9, rate_limit_per_min=10**6
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, runtime=rt)),
            base_url="http://vidbatch.test",
        )
        headers = {"x-api-key": key.api_key}
        r = await client.post(
            "/api/v1/batches", json={"items": [{"prompt": "seed"}]}, headers=headers
        )
        assert r.status_code == 200, r.text
        return rt, client, headers, r.json()["batch_id"]

    rt, client, headers, batch_id = loop.run_until_complete(setup())
    try:
        yield Env(loop, client, headers, batch_id)
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(rt.close())
        loop.close()


def check(response: httpx.Response) -> None:
    """No 5xx; a 4xx carries the error body; a 2xx is JSON (or a results stream)."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        body = response.json()
        assert body["ok"] is False
        assert isinstance(body["error"], str)
        assert body["error"] == body["error"].upper()
        assert isinstance(body["message"], str)
        assert body["request_id"] == response.headers["x-request-id"]
        details = body.get("details", {"items": [], "fields": []})
        assert set(details) == {"items", "fields"}
        for detail in details["items"] + details["fields"]:
            assert set(detail) == {"index", "field", "message"}
            assert (detail["index"] is None) == (detail in details["fields"])
    elif response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["ok"] is True


# --- strategies --------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=30)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, json_values)


urls = st.sampled_from(
    [
        "https://example.com/a.jpg",
        "http://10.0.0.1/x",
        "ftp://x/y",
        "",
        "https://" + "a" * 3000,
        "javascript:alert(1)",
    ]
)
items = st.fixed_dictionaries(
    {},
    optional={
        "prompt": maybe(st.text(max_size=50)),
        "model": maybe(st.sampled_from(["sora-2", "veo-flash", "veo-pro", "sora-9"])),
        "aspect_ratio": maybe(st.sampled_from(["9:16", "16:9", "1:1"])),
        "duration": maybe(st.sampled_from([10, 15, 12, 10.0, -1])),
        "reference_url": maybe(urls),
        "meta": maybe(
            st.dictionaries(
                st.sampled_from(["firstFrameUrl", "lastFrameUrl", "urls", "other"]),
                maybe(urls | st.lists(urls, max_size=5)),
                max_size=3,
            )
        ),
        "metadata": json_values,
    },
)
batch_bodies = st.fixed_dictionaries(
    {"items": maybe(st.lists(maybe(items), max_size=4))},
    optional={
        "webhook_url": maybe(urls),
        "request_id": maybe(st.text(max_size=140)),
        "metadata": json_values,
    },
)
create_paths = st.sampled_from(
    ["/api/enterprise/video-batch", "/api/video/batch", "/api/v1/batches"]
)


@given(path=create_paths, body=st.one_of(json_values, batch_bodies))
@FUZZ
def test_create_with_any_json(env: Env, path: str, body: Any) -> None:
    check(env.run(env.client.post(path, content=json.dumps(body), headers=env.headers)))


@given(path=create_paths, raw=st.binary(max_size=300))
@FUZZ
def test_create_with_any_bytes(env: Env, path: str, raw: bytes) -> None:
    check(env.run(env.client.post(path, content=raw, headers=env.headers)))


PARAMS = ["limit", "offset", "status", "cursor", "format", "from", "to", "type", "batch_id"]
param_values = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        [
            "jsonl",
            "csv",
            "succeeded",
            "pending",
            "queued",
            "refund",
            "2024-01-01T00:00:00Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "bm9waXBl",
            "MjAyNHx4",
        ]
    ),
)
ids = st.one_of(
    st.text(min_size=1, max_size=60),
    st.just("SEED"),
    st.sampled_from(["00000000-0000-0000-0000-000000000000", "%00", "..", "a/b"]),
)
get_paths = st.sampled_from(
    [
        "/api/v1/batches",
        "/api/v1/batches/{id}",
        "/api/v1/batches/{id}/items",
        "/api/v1/batches/{id}/results",
        "/api/v1/credits/balance",
        "/api/v1/credits/ledger",
    ]
)


@given(
    template=get_paths,
    batch_id=ids,
    params=st.dictionaries(
        st.sampled_from(PARAMS) | st.text(string.ascii_letters, max_size=8),
        param_values,
        max_size=4,
    ),
)
@FUZZ
def test_reads_with_any_ids_and_queries(
    env: Env, template: str, batch_id: str, params: dict[str, str]
) -> None:
    real = env.batch_id if batch_id == "SEED" else quote(batch_id, safe="")
    path = template.replace("{id}", real)
    check(env.run(env.client.get(path, params=params, headers=env.headers)))


@given(batch_id=ids)
@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_cancel_with_any_id(env: Env, batch_id: str) -> None:
    path = f"/api/v1/batches/{quote(batch_id, safe='')}/cancel"
    check(env.run(env.client.post(path, headers=env.headers)))
