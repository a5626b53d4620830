"""Opening the database for an entry point: engine, schema check, friendly failures."""

from __future__ import annotations

import logging
import socket

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.engine import is_sqlite, make_engine
from vidbatch.db.migrate import current_revision, head_revision, upgrade
from vidbatch.db.secrets import attach_keyring, create_private_file, resolve_keyring, sqlite_path
from vidbatch.exceptions import DatabaseUnavailable, SchemaNotCurrent

log = logging.getLogger(__name__)


#: Errors raised when the database cannot be reached at all (rather than refusing a
#: statement): a refused or lost connection, a full pool, a timed-out connect.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    OperationalError,
    InterfaceError,
    PoolTimeout,
    ConnectionError,
    socket.gaierror,
    TimeoutError,
)
#: SQLSTATE prefixes with the same meaning: connection exceptions, insufficient resources,
#: operator intervention (a shutdown), and a database that is not there (renamed, dropped).
UNREACHABLE_SQLSTATES = ("08", "53", "57", "3D000")


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is down or out of reach, not that it refused
    what was asked (a constraint, a bad value)."""
    if isinstance(exc, UNREACHABLE_ERRORS):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        return sqlstate.startswith(UNREACHABLE_SQLSTATES)
    return False


def describe_db_error(exc: BaseException) -> str:
    """One line about a connection failure, without credentials."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text[:300]


def keyed_engine(url: str, secret_key: str | None, secret_key_previous: str | None) -> AsyncEngine:
    """The engine of ``url`` with the keyring of the secrets at rest; a new SQLite file is
    created readable by its owner only."""
    keyring = resolve_keyring(url, secret_key, secret_key_previous)
    database = sqlite_path(url)
    if database is not None:
        create_private_file(database)
    return attach_keyring(make_engine(url), keyring)


async def open_database(
    url: str,
    *,
    auto_migrate: bool = True,
    secret_key: str | None = None,
    secret_key_previous: str | None = None,
) -> AsyncEngine:
    """An engine whose schema is current, with the keyring of the secrets at rest
    (``VIDBATCH_SECRET_KEY``, see :mod:`vidbatch.db.secrets`).

    SQLite (the embedded default) is migrated on the spot so the first run just works;
    PostgreSQL must have been upgraded with ``vidbatch db upgrade`` (several processes
    must not race to migrate a shared database).
    """
    engine = keyed_engine(url, secret_key, secret_key_previous)
    try:
        if is_sqlite(engine) and auto_migrate:
            await upgrade(engine)
        else:
            current = await current_revision(engine)
            if current != head_revision():
                await engine.dispose()
                raise SchemaNotCurrent(
                    f"database schema is at {current or 'nothing'}, code needs "
                    f"{head_revision()}: run `vidbatch db upgrade`"
                )
    except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
        await engine.dispose()
        raise DatabaseUnavailable(f"database unavailable: {describe_db_error(exc)}") from None
    return engine
