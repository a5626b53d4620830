"""Engines and connections: the same code on SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on. A transaction opened with ``engine.begin()``
starts with ``BEGIN IMMEDIATE`` (it takes the write lock at once, so a claim — read then
conditional update — is never interleaved with another writer); one opened with
``engine.connect()`` only reads and starts with a plain ``BEGIN``, so readers never wait for
writers (WAL). Dialect differences stay in this package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Turn ``sqlite:///path`` or ``postgresql://...`` into the async-driver URL.

    Raises ValueError with a one-line reason for anything else.
    """
    raw = (url or "").strip()
    if not raw:
        raise ValueError("is empty")
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "is not a database URL (expected sqlite:///path or postgresql://...)"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported scheme {parsed.drivername!r} (expected sqlite:///path or postgresql://...)"
        )
    if driver.startswith("sqlite") and not parsed.database:
        raise ValueError("sqlite URL needs a file path, e.g. sqlite:///vidbatch.db")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine for ``url`` (see :func:`async_url`)."""
    full = async_url(url)
    # A failed statement's parameters (key hashes, webhook secrets) never reach an error
    # message, a traceback or a log line.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if full.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        # No pre-ping: it costs three round trips per checkout (half of all transactions).
        # A connection found dead raises once and the whole pool is invalidated; callers
        # retry (the worker's next round, the client's next request).
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    engine = create_async_engine(full, **kwargs)
    if engine.dialect.name == "sqlite":
        engine = _SQLiteEngine(engine.sync_engine)
        _setup_sqlite(engine)
    return engine


_AUTOCOMMIT: WeakKeyDictionary[Engine, AsyncEngine] = WeakKeyDictionary()


def single(
    engine: AsyncEngine, *, write: bool = True
) -> AbstractAsyncContextManager[AsyncConnection]:
    """A connection for work whose every statement is a transaction on its own: one
    conditional UPDATE or claim, or reads that need no common snapshot.

    The connection runs in autocommit: each statement costs one round trip (PostgreSQL) or
    one call into SQLite instead of three (``BEGIN``, the statement, ``COMMIT``) — the
    worker's and the callback path's hot statements are all of this kind, and those extra
    calls were most of their cost. On SQLite a write still queues for the process's write
    lock (see ``_SQLiteEngine``) and SQLite's own lock holds it for the statement."""
    if engine.dialect.name == "postgresql":
        auto = _AUTOCOMMIT.get(engine.sync_engine)
        if auto is None:
            auto = _AUTOCOMMIT[engine.sync_engine] = engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return auto.connect()
    return _sqlite_single(engine, write)


@asynccontextmanager
async def _sqlite_single(engine: AsyncEngine, write: bool) -> AsyncIterator[AsyncConnection]:
    if write:
        async with _write_lock(engine.sync_engine), engine.connect() as conn:
            await conn.execution_options(**{_AUTO: True})
            yield conn
    else:
        async with engine.connect() as conn:
            await conn.execution_options(**{_AUTO: True})
            yield conn


class _SQLiteEngine(AsyncEngine):
    """``begin()`` marks its connection for ``BEGIN IMMEDIATE``; ``connect()`` reads.

    SQLite has one writer at a time. Within a process the writers queue on an asyncio lock
    (one per event loop) rather than in SQLite's busy handler, which sleeps and retries:
    under the worker's concurrent stages and the API in one process, that sleeping was most
    of a write's wait. Between processes the busy handler still decides."""

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with _write_lock(self.sync_engine), self.connect() as conn:
            await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                yield conn


_WRITE_LOCKS: WeakKeyDictionary[Engine, WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]]
_WRITE_LOCKS = WeakKeyDictionary()


def _write_lock(engine: Engine) -> asyncio.Lock:
    by_loop = _WRITE_LOCKS.setdefault(engine, WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    lock = by_loop.get(loop)
    if lock is None:
        lock = by_loop[loop] = asyncio.Lock()
    return lock


_WRITE = "vidbatch_write"
#: No ``BEGIN``: the driver runs each statement in autocommit (its ``isolation_level`` is
#: None), and the closing rollback finds no transaction to end.
_AUTO = "vidbatch_autocommit"


def _setup_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(_AUTO):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE) else "BEGIN")
