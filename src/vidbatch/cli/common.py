"""Helpers shared by the CLI commands: settings, the database, errors as one line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vidbatch.db.session import describe_db_error
from vidbatch.domain.limits import MAX_CREDITS
from vidbatch.exceptions import ConfigError, VidbatchError
from vidbatch.settings import Settings, load_settings

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            overrides = {}
            if obj.get("database_url"):
                overrides["database_url"] = obj["database_url"]
            obj["settings"] = load_settings(**overrides)
        except ConfigError as exc:
            fail(exc.message)
    settings: Settings = obj["settings"]
    return settings


def loop_runner() -> Callable[[Any], Any]:
    """uvloop's event loop where it is installed (a dependency except on Windows): the
    worker and the API spend most of their time in socket round trips, which it makes
    cheaper; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; vidbatch errors and database failures become one line."""
    try:
        result: T = loop_runner()(coro_fn())
        return result
    except VidbatchError as exc:
        fail(exc.message, 1 if exc.code in ("DATABASE_UNAVAILABLE", "SCHEMA_NOT_CURRENT") else 2)
    except (OperationalError, DBAPIError, OSError) as exc:
        fail(f"database error: {describe_db_error(exc)}", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def with_engine(settings: Settings, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from vidbatch.runtime import open_engine

    engine = await open_engine(settings)
    try:
        return await fn(engine)
    finally:
        await engine.dispose()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, sort_keys=False) + "\n")


def shown(value: Any) -> str:
    """One value as an operator reads it: "-" for nothing, k=v pairs for a mapping."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return str(_default(value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(shown(v) for v in value) or "-"
    return str(value)


def print_fields(fields: dict[str, Any]) -> None:
    """One ``name  value`` line per field, names aligned."""
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        typer.echo(f"{key:<{width}}  {shown(value)}")


def print_rows(headers: list[str], rows: list[list[Any]]) -> None:
    """A plain table: columns two spaces apart, every value whole (ids are for copying:
    never wrapped or cut, whatever the terminal's width)."""
    cells = [[shown(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    typer.echo(line(headers))
    for row in cells:
        typer.echo(line(row))
    if not cells:
        typer.echo("(none)")


def non_negative(value: int, what: str = "--credits", most: int = MAX_CREDITS) -> int:
    if value < 0:
        fail(f"{what} must not be negative (got {value})")
    if value > most:
        fail(f"{what} must be at most {most} (got {value})")
    return value


def positive(value: int, what: str = "--credits", most: int = MAX_CREDITS) -> int:
    if value <= 0:
        fail(f"{what} must be a positive whole number (got {value})")
    if value > most:
        fail(f"{what} must be at most {most} (got {value})")
    return value


def call(settings: Settings, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``fn`` on the database (schema checked); errors become one line."""
    return run(lambda: with_engine(settings, fn))


def read(settings: Settings, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run a read-only ``fn`` on one connection to the database."""

    async def on_connection(engine: AsyncEngine) -> T:
        async with engine.connect() as conn:
            return await fn(conn)

    return call(settings, on_connection)
