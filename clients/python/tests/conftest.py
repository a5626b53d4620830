"""Fixtures: a real ``vidbatch serve`` with its simulator, on SQLite and PostgreSQL.

The server's command line comes from ``VIDBATCH_SERVER_BIN`` (``make test-client`` sets it to
the main virtual environment's ``vidbatch``); this environment holds only the client. The
PostgreSQL cases need a server at ``VIDBATCH_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``): without one they skip, saying why, unless
``VIDBATCH_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vbstack import (
    REQUIRE_PG,
    Account,
    FaultProxy,
    Receiver,
    Server,
    create_pg_database,
    drop_pg_database,
    server_bin,
    start_simulator,
    stop,
)
from vidbatch_client import Client, RetryPolicy


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``one_database`` check the client alone: they run on SQLite only, which
    keeps the suite short (the flows that touch the server's storage run on both)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        on_pg = params is not None and params.params.get("server") == "postgres"
        (drop if on_pg and item.get_closest_marker("one_database") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: Quick retries in tests (a 429's Retry-After still counts).
FAST_RETRY = RetryPolicy(max_retries=5, backoff=0.05, max_backoff=0.5)


@pytest.fixture(scope="session")
def binary() -> str:
    found = server_bin()
    if not found:
        pytest.skip(
            "no vidbatch server command: set VIDBATCH_SERVER_BIN to the server's `vidbatch` "
            "(make test-client does)"
        )
    return found


@pytest.fixture(scope="session")
def simulator(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = start_simulator(binary, tmp_path_factory.mktemp("sim"))
    yield url
    stop(proc)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest,
    binary: str,
    simulator: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/vidbatch.db"
    else:
        try:
            url = create_pg_database(binary)
        except RuntimeError as exc:
            reason = f"no PostgreSQL server ({exc}); set VIDBATCH_TEST_POSTGRES_URL"
            if REQUIRE_PG:
                pytest.fail(f"VIDBATCH_REQUIRE_POSTGRES=1 but {reason}")
            pytest.skip(reason)
    srv = Server(binary=binary, database_url=url, simulator_url=simulator, tmp=tmp)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if request.param == "postgres":
            drop_pg_database(binary, url)


@pytest.fixture
def account(server: Server) -> Account:
    return server.fresh_account()


@pytest.fixture
def vb(server: Server, account: Account) -> Iterator[Client]:
    with Client(account.api_key, server.base_url, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    p = FaultProxy(server.base_url)
    yield p
    p.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
