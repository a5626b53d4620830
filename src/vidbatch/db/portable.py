"""Portable SQL: what SQLite and PostgreSQL spell differently, behind one function each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_on_conflict(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that takes ``on_conflict_do_update``/``_do_nothing``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def greatest(conn: AsyncConnection, *values: Any) -> ColumnElement[Any]:
    """The largest of ``values`` (SQLite's scalar ``max``, PostgreSQL's ``greatest``)."""
    if conn.dialect.name == "sqlite":
        return func.max(*values)
    return func.greatest(*values)
