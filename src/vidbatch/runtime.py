"""The process's long-lived parts, built once by an entry point from the settings:
the database engine, the pooled outbound HTTP session, the provider client and the
callback-token key. Tests and the demo build their own and pass them in."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.clock import Clock, SystemClock, utcnow
from vidbatch.db.schema import server_secrets
from vidbatch.db.session import open_database
from vidbatch.metrics import Metrics
from vidbatch.providers.base import Provider
from vidbatch.providers.grsai import GrsAIClient
from vidbatch.settings import Settings

log = logging.getLogger(__name__)

CALLBACK_SECRET = "callback_secret"  # noqa: S105 - the row name, not a secret


async def stored_secret(engine: AsyncEngine, name: str) -> str:
    """A server-wide secret generated once and kept in the database for every process."""
    candidate = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        existing = (
            await conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name))
        ).scalar_one_or_none()
        if existing is not None:
            return str(existing)
        await conn.execute(
            server_secrets.insert().values(name=name, value=candidate, created_at=utcnow())
        )
    return candidate


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession
    provider: Provider
    callback_key: bytes
    metrics: Metrics = field(default_factory=Metrics)
    owns_engine: bool = True
    #: Where the worker reads the time; tests put a FakeClock here.
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine | None = None,
        provider: Provider | None = None,
        metrics: Metrics | None = None,
    ) -> Runtime:
        owns_engine = engine is None
        engine = engine or await open_database(settings.database_url)
        # A short keep-alive: a pooled connection the provider already closed would turn a
        # create into an "ambiguous" one (aiohttp never retries a POST).
        connector = aiohttp.TCPConnector(
            limit=max(100, settings.task_concurrency * 4), keepalive_timeout=10
        )
        http = aiohttp.ClientSession(connector=connector)
        if provider is None:
            provider = GrsAIClient(
                http,
                base_url=settings.grsai_host,
                api_key=settings.grsai_api_key or "",
                catalog=settings.catalog,
                connect_timeout=settings.provider_connect_timeout,
                read_timeout=settings.provider_read_timeout,
            )
        secret = settings.callback_secret or await stored_secret(engine, CALLBACK_SECRET)
        return cls(
            settings=settings,
            engine=engine,
            http=http,
            provider=provider,
            callback_key=secret.encode(),
            metrics=metrics or Metrics(),
            owns_engine=owns_engine,
        )

    async def close(self) -> None:
        await self.http.close()
        if self.owns_engine:
            await self.engine.dispose()
