"""`vidbatch doctor`: check what a deployment needs, one line per check, exit 1 on a
failure. Checks the configuration, the database (reachable, schema current), the provider
(key and host, with one cheap call), the callback URL (reachable from here, in webhook mode)
and the result store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import typer

from vidbatch.exceptions import ConfigError, ProviderNotFound, ProviderRejected, VidbatchError
from vidbatch.settings import Settings, load_settings
from vidbatch.startup import database_without_password, result_store_check
from vidbatch.storage import open_store

#: The remote id the provider probe asks about: no such task exists, so a provider that
#: knows our key answers "not found" — an answer that costs nothing.
PROBE_ID = "vidbatch-doctor-probe"
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Check:
    name: str
    ok: bool | None  # None: nothing to check (not a failure)
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL" if self.ok is False else "skip"
        return f"{mark}  {self.name}: {self.detail}"


async def check_database(settings: Settings) -> Check:
    from vidbatch.db.engine import make_engine
    from vidbatch.db.migrate import current_revision, head_revision
    from vidbatch.db.session import describe_db_error

    where = database_without_password(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        current = await asyncio.wait_for(current_revision(engine), timeout=15)
    except Exception as exc:
        return Check("database", False, f"{where} unreachable: {describe_db_error(exc)}")
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        return Check(
            "database",
            False,
            f"{where} schema at {current or 'nothing'}, code needs {head}: "
            "run `vidbatch db upgrade`",
        )
    return Check("database", True, f"{where}, schema {head}")


async def check_provider(settings: Settings, http: aiohttp.ClientSession) -> Check:
    from vidbatch.providers.registry import PROVIDERS

    host = settings.grsai_host
    if not settings.grsai_api_key:
        return Check("provider", False, f"GRSAI_API_KEY is not set (host {host})")
    provider = PROVIDERS["grsai"](settings, http)
    try:
        await provider.get_result(PROBE_ID)
    except ProviderNotFound:
        return Check("provider", True, f"{host} answered and accepted the key")
    except ProviderRejected as exc:
        return Check("provider", False, f"{host} refused the key or the call: {exc.message}")
    except VidbatchError as exc:
        return Check("provider", False, f"{host} did not answer usefully: {exc.message}")
    return Check("provider", True, f"{host} answered and accepted the key")


async def check_callback_url(settings: Settings, http: aiohttp.ClientSession) -> Check:
    base = settings.public_base_url
    if not base:
        return Check("callback URL", None, "polling mode (no public base URL): nothing to reach")
    url = f"{base}/healthz"
    try:
        async with http.get(url, timeout=TIMEOUT, allow_redirects=False) as response:
            if response.status == 200:
                return Check("callback URL", True, f"{base} reachable from here ({url} 200)")
            return Check("callback URL", False, f"{url} answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(
            "callback URL",
            False,
            f"{url} unreachable from here ({type(exc).__name__}); the provider's callbacks "
            "will not arrive either (tasks are then polled)",
        )


async def check_result_store(settings: Settings) -> Check:
    try:
        store = open_store(settings)
    except ConfigError as exc:
        return Check("result store", False, str(exc))
    writable, detail = await result_store_check(settings, store)
    return Check("result store", writable, detail)


async def run_checks(settings: Settings) -> list[Check]:
    checks = [Check("configuration", True, "every setting valid")]
    checks.append(await check_database(settings))
    async with aiohttp.ClientSession() as http:
        checks.append(await check_provider(settings, http))
        checks.append(await check_callback_url(settings, http))
    checks.append(await check_result_store(settings))
    return checks


def doctor(ctx: typer.Context) -> None:
    """Check the configuration, database, provider key and host, callback URL and result
    store: one line each; exit 1 when a check fails."""
    overrides = {}
    database_url = ctx.ensure_object(dict).get("database_url")
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(Check("configuration", False, exc.message).line())
        raise typer.Exit(1) from None
    checks = asyncio.run(run_checks(settings))
    for check in checks:
        typer.echo(check.line())
    if any(c.ok is False for c in checks):
        raise typer.Exit(1)
