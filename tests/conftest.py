"""Shared fixtures: one parametrised database fixture runs every storage test on SQLite (a
real temp file) and on PostgreSQL (a fresh database per test, cloned from a migrated
template), plus the provider simulator served over real HTTP once per session.

PostgreSQL comes from ``VIDBATCH_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached those cases
skip with the reason, unless ``VIDBATCH_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.engine import make_engine
from vidbatch.db.migrate import upgrade

pytest_plugins = ["tests.simulator_fixture", "tests.s3_fixture"]

PG_URL = os.environ.get(
    "VIDBATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("VIDBATCH_REQUIRE_POSTGRES") == "1"
TEMPLATE = f"vidbatch_tmpl_{os.getpid()}"
# Every vidbatch process a test starts (CLI, serve, worker) encrypts the stored secrets with
# the same key as the tests' own engines (tests.helpers.keyed).
os.environ["VIDBATCH_SECRET_KEY"] = "test-secret-key-of-at-least-32-characters"


async def _pg_admin(sql: list[str]) -> None:
    import asyncpg

    url = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
        timeout=5,
    )
    try:
        for stmt in sql:
            await conn.execute(stmt)
    finally:
        await conn.close()


def pg_database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database, or None (with the reason) when there is no server."""
    try:
        asyncio.run(
            _pg_admin([f'DROP DATABASE IF EXISTS "{TEMPLATE}"', f'CREATE DATABASE "{TEMPLATE}"'])
        )
    except Exception as exc:  # no server: the PostgreSQL cases skip or fail below
        yield f"unreachable: {type(exc).__name__}: {exc}"
        return

    async def migrate() -> None:
        engine = make_engine(pg_database_url(TEMPLATE))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    yield TEMPLATE
    asyncio.run(_pg_admin([f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)']))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "template.db"

    async def migrate() -> None:
        engine = make_engine(f"sqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()  # the last connection to close folds the WAL into the file

    asyncio.run(migrate())
    return path


def _require_pg(template: str | None) -> str:
    if template is None or template.startswith("unreachable"):
        reason = f"PostgreSQL at {make_url(PG_URL).render_as_string()} {template}"
        if REQUIRE_PG:
            pytest.fail(f"VIDBATCH_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(f"no PostgreSQL server ({reason}); set VIDBATCH_TEST_POSTGRES_URL")
    return template


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_template: str | None,
) -> Iterator[str]:
    """A fresh, migrated database URL: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "vidbatch.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    template = _require_pg(pg_template)
    name = f"vbt_{uuid.uuid4().hex[:16]}"
    asyncio.run(_pg_admin([f'CREATE DATABASE "{name}" TEMPLATE "{template}"']))
    yield pg_database_url(name)
    asyncio.run(_pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


@pytest.fixture
def pg_url(pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database only (for multi-process tests)."""
    template = _require_pg(pg_template)
    name = f"vbt_{uuid.uuid4().hex[:16]}"
    asyncio.run(_pg_admin([f'CREATE DATABASE "{name}" TEMPLATE "{template}"']))
    yield pg_database_url(name)
    asyncio.run(_pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    from tests.helpers import keyed_engine

    eng = keyed_engine(db_url)
    yield eng
    await eng.dispose()


# --- the application, driven in-process -------------------------------------------------

WORKER_SECRET = "test-worker-secret"
TEST_SECRET_KEY = "test-secret-key-of-at-least-32-characters"  # = tests.helpers
ADMIN_TOKEN = "test-admin-token-of-at-least-32-characters"


@pytest.fixture
def settings_factory(db_url: str, sim: Any) -> Any:
    """Settings for a test: this test's database, the simulator as provider."""
    from vidbatch.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "grsai_host": sim.url,
            "grsai_api_key": "sk-test",
            "internal_worker_secret": WORKER_SECRET,
            "admin_token": ADMIN_TOKEN,
            "allow_private_webhooks": True,
            "allow_private_urls": True,
            "callback_secret": "test-callback-secret",
            "secret_key": TEST_SECRET_KEY,
            "provider_read_timeout": 5.0,
            "poll_intervals": "0.01,0.01,0.01",
            "require_https_video_url": False,
            "callback_grace_seconds": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory()


@pytest.fixture
async def runtime(settings: Any, engine: AsyncEngine) -> AsyncIterator[Any]:
    from vidbatch.runtime import Runtime

    rt = await Runtime.open(settings, engine=engine)
    yield rt
    await rt.close()


@pytest.fixture
async def client(settings: Any, runtime: Any) -> AsyncIterator[Any]:
    """An httpx client talking to the app in-process (no socket)."""
    import httpx

    from vidbatch.api.app import create_app

    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c
