"""The providers a process can use, by name: each name maps to a factory building the
provider from the settings and the process's pooled HTTP session.

A new provider is a module under ``vidbatch.providers`` plus one entry here; catalog models
name it in their ``provider`` field and the worker and the callback path pick it per task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from vidbatch.domain.provider import DEFAULT_PROVIDER, Provider
from vidbatch.providers.grsai import GrsAIClient

if TYPE_CHECKING:  # the settings are only passed through to the factories
    from vidbatch.settings import Settings

ProviderFactory = Callable[["Settings", aiohttp.ClientSession], Provider]


def grsai(settings: Settings, http: aiohttp.ClientSession) -> Provider:
    return GrsAIClient(
        http,
        base_url=settings.grsai_host,
        api_key=settings.grsai_api_key or "",
        catalog=settings.catalog,
        connect_timeout=settings.provider_connect_timeout,
        read_timeout=settings.provider_read_timeout,
    )


#: Every registered provider by the name catalog models and tasks use.
PROVIDERS: dict[str, ProviderFactory] = {DEFAULT_PROVIDER: grsai}
