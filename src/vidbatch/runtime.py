"""The process's long-lived parts, built once by an entry point from the settings:
the database engine, the pooled outbound HTTP session, the providers by name and the
callback-token key. Tests and the demo build their own and pass them in."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.clock import Clock, SystemClock, utcnow
from vidbatch.db.schema import server_secrets
from vidbatch.db.secrets import attach_keyring, resolve_keyring
from vidbatch.db.session import open_database
from vidbatch.db.types import keyring_of
from vidbatch.domain.breaker import CircuitBreaker
from vidbatch.domain.provider import DEFAULT_PROVIDER, Provider
from vidbatch.domain.throttle import FailureThrottle
from vidbatch.exceptions import ConfigError, ProviderRejected
from vidbatch.metrics import Metrics
from vidbatch.providers.registry import PROVIDERS
from vidbatch.settings import Settings
from vidbatch.storage import Links, ResultStore, open_store

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


async def open_engine(settings: Settings, *, auto_migrate: bool = True) -> AsyncEngine:
    """The database of ``settings``, migrated (SQLite) or checked, with the keyring of the
    secrets at rest (``VIDBATCH_SECRET_KEY``)."""
    return await open_database(
        settings.database_url,
        auto_migrate=auto_migrate,
        secret_key=settings.secret_key,
        secret_key_previous=settings.secret_key_previous,
    )


def ensure_keyring(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """Give an engine built elsewhere (tests, embedding) the keyring of ``settings``."""
    if keyring_of(engine.dialect) is None:
        attach_keyring(
            engine,
            resolve_keyring(
                settings.database_url, settings.secret_key, settings.secret_key_previous
            ),
        )
    return engine


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession
    #: Every registered provider by name; a task's ``provider`` column picks one.
    providers: Mapping[str, Provider]
    callback_key: bytes
    metrics: Metrics = field(default_factory=Metrics)
    owns_engine: bool = True
    #: Where the worker reads the time; tests put a FakeClock here.
    clock: Clock = field(default_factory=SystemClock)
    #: Wrong admin tokens per client address (admin API and dashboard sign-in together).
    admin_failures: FailureThrottle = field(default_factory=FailureThrottle)
    #: Webhook mode: tasks this process saw end without any provider callback in a row.
    missed_callbacks: int = 0
    #: Webhook receivers that keep timing out, paused for a while (per process).
    webhook_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    #: Wrong metrics tokens per client address, throttled the same way.
    metrics_failures: FailureThrottle = field(default_factory=FailureThrottle)
    #: Where videos and thumbnails are archived; None with ``VIDBATCH_RESULT_STORE=none``.
    result_store: ResultStore | None = None
    #: Turns stored objects into customer URLs (signed afresh at each read).
    links: Links | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine | None = None,
        provider: Provider | None = None,
        providers: Mapping[str, Provider] | None = None,
        metrics: Metrics | None = None,
    ) -> Runtime:
        """``provider`` replaces the default (GrsAI) provider, ``providers`` any by name;
        the others are built from the registry."""
        given = dict(providers or {})
        if provider is not None:
            given[DEFAULT_PROVIDER] = provider
        unknown = {m.provider for m in settings.catalog.models.values()} - {*PROVIDERS, *given}
        if unknown:
            names = ", ".join(repr(n) for n in sorted(unknown))
            raise ConfigError(f"VIDBATCH_MODEL_CATALOG: no provider registered as {names}")
        owns_engine = engine is None
        engine = ensure_keyring(settings, engine) if engine else await open_engine(settings)
        # A short keep-alive: a pooled connection the provider already closed would turn a
        # create into an "ambiguous" one (aiohttp never retries a POST).
        connector = aiohttp.TCPConnector(
            limit=max(100, settings.task_concurrency * 4), keepalive_timeout=10
        )
        http = aiohttp.ClientSession(connector=connector)
        built = {
            name: factory(settings, http)
            for name, factory in PROVIDERS.items()
            if name not in given
        }
        secret = settings.callback_secret or await stored_secret(engine, CALLBACK_SECRET)
        store = open_store(settings)
        links = Links(
            store,
            # Derived from the callback key: no secret more to keep (or to read at start).
            secret=hmac.new(secret.encode(), b"vidbatch result links", hashlib.sha256).digest(),
            ttl_seconds=settings.result_url_ttl_seconds,
            public_base_url=settings.result_public_base_url,
            app_base_url=settings.public_base_url,
        )
        rt = cls(
            settings=settings,
            engine=engine,
            http=http,
            providers={**built, **given},
            callback_key=secret.encode(),
            metrics=metrics or Metrics(),
            owns_engine=owns_engine,
            result_store=store,
            links=links,
        )
        # Links are signed and checked on the runtime's clock (a test's FakeClock too).
        links.now = lambda: rt.clock.now().timestamp()
        return rt

    def provider_for(self, name: str) -> Provider:
        """The provider a task names; one no longer registered refuses everything."""
        found = self.providers.get(name)
        if found is None:
            raise ProviderRejected(f"no provider registered as {name!r}")
        return found

    async def close(self) -> None:
        await self.http.close()
        if self.owns_engine:
            await self.engine.dispose()
