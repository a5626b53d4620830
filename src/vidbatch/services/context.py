"""What a use case needs of the running process, as a protocol: the runtime (built by the
entry points) provides it, and services never import the runtime or the providers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.domain.provider import Provider
from vidbatch.metrics import Metrics
from vidbatch.settings import Settings

if TYPE_CHECKING:
    from vidbatch.storage import Links


class Context(Protocol):
    """The process's long-lived parts a service may use (see ``vidbatch.runtime.Runtime``)."""

    settings: Settings
    engine: AsyncEngine
    callback_key: bytes
    metrics: Metrics
    #: Signed links to archived results (webhook payloads), when results are archived.
    links: Links | None

    def provider_for(self, name: str) -> Provider:
        """The provider a task names."""
        ...
