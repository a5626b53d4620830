"""Opening the database for an entry point: engine, schema check, friendly failures."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.engine import is_sqlite, make_engine
from vidbatch.db.migrate import current_revision, head_revision, upgrade
from vidbatch.exceptions import DatabaseUnavailable, SchemaNotCurrent

log = logging.getLogger(__name__)


def describe_db_error(exc: BaseException) -> str:
    """One line about a connection failure, without credentials."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text[:300]


async def open_database(url: str, *, auto_migrate: bool = True) -> AsyncEngine:
    """An engine whose schema is current.

    SQLite (the embedded default) is migrated on the spot so the first run just works;
    PostgreSQL must have been upgraded with ``vidbatch db upgrade`` (several processes
    must not race to migrate a shared database).
    """
    engine = make_engine(url)
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
