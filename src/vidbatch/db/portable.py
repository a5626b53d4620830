"""Portable SQL: what SQLite and PostgreSQL spell differently, behind one function each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import String, TypeDecorator, TypeEngine


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


async def insert_many(
    conn: AsyncConnection,
    table: Table,
    *,
    same: Mapping[str, Any],
    each: Mapping[str, Sequence[Any]],
) -> None:
    """Insert one row per position of the ``each`` lists (all of one length): column
    ``name`` takes ``each[name][i]``, or ``same[name]`` in every row.

    The rows, their values and the errors are those of ``conn.execute(table.insert(),
    [dicts])``: every value goes through its column's type, columns not named take their
    server defaults, constraints are checked as usual. Only the way there is faster for
    thousands of rows: on PostgreSQL one ``INSERT … SELECT … FROM unnest(arrays)`` (one
    statement, one round trip, each ``same`` value sent once) instead of a statement per
    row; on SQLite the driver's ``executemany`` of rows bound here, without SQLAlchemy's
    per-row parameter handling.
    """
    lengths = {len(values) for values in each.values()}
    if len(lengths) != 1:
        raise ValueError("insert_many: 'each' needs at least one list, all of one length")
    (count,) = lengths
    if count == 0:
        return
    named = {*same, *each}
    if len(named) != len(same) + len(each):
        raise ValueError("insert_many: a column is named in both 'same' and 'each'")
    for column in table.columns:
        if column.name not in named and column.default is not None:
            # table.insert() would compute it row by row; this path does not.
            raise ValueError(f"insert_many: column {column.name} has a client-side default")

    if conn.dialect.name == "postgresql":
        await conn.execute(
            _unnest_insert(table, list(same), list(each)), _unnest_params(same, each)
        )
        return

    dialect = conn.dialect
    compiled = table.insert().compile(dialect=dialect, column_keys=list(named))
    columns: list[Any] = []
    for name in compiled.positiontup or ():
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if name in same:
            value = same[name]
            columns.append(repeat(process(value) if process else value, count))
        else:
            values = each[name]
            columns.append([process(v) for v in values] if process else values)
    await conn.exec_driver_sql(compiled.string, list(zip(*columns, strict=True)))


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """``type_`` without a length: PostgreSQL's explicit cast to ``varchar(n)`` silently
    truncates, where storing into a ``varchar(n)`` column refuses a longer value."""
    if isinstance(type_, TypeDecorator):
        inner = _unbounded(type_.impl_instance)
        if inner is type_.impl_instance:
            return type_
        decorated = type_.copy()
        decorated.impl = inner
        return decorated
    if isinstance(type_, String) and type_.length is not None:
        copy = type_.copy()
        copy.length = None
        return copy
    return type_


def _unnest_insert(table: Table, same: list[str], each: list[str]) -> Any:
    """``INSERT INTO table (same…, each…) SELECT :same…, u.* FROM unnest(:each…) AS u``."""
    arrays = []
    for name in each:
        array = postgresql.ARRAY(_unbounded(table.c[name].type))
        arrays.append(cast(bindparam(f"each_{name}", type_=array), array))
    rows = func.unnest(*arrays).table_valued(*each).render_derived()
    selected = [
        cast(bindparam(f"same_{name}", type_=table.c[name].type), _unbounded(table.c[name].type))
        for name in same
    ] + [rows.c[name] for name in each]
    return table.insert().from_select([*same, *each], select(*selected).select_from(rows))


def _unnest_params(same: Mapping[str, Any], each: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    params = {f"same_{name}": value for name, value in same.items()}
    params.update({f"each_{name}": list(values) for name, values in each.items()})
    return params
