"""The provider-neutral interface the worker talks to.

A provider turns a :class:`TaskSpec` into a remote task, reports on it as a
:class:`RemoteResult`, and reads the callbacks it sends. Each task is served by the provider
its model names in the catalog (:data:`DEFAULT_PROVIDER` unless it names another). Every
failure leaves a provider as one of the :class:`vidbatch.exceptions.ProviderError` subclasses:

* ``ProviderTransient`` - nothing happened upstream or it may work later (connection refused,
  429, 5xx, a poll that timed out); carries ``retry_after`` when the provider said so.
* ``ProviderRejected`` - refused for good (bad parameters, bad key, no provider credits).
* ``ProviderNotFound`` - the remote task does not exist.
* ``ProviderAmbiguous`` - a create was sent and no usable answer came back: the task may
  exist upstream, so the caller must not blindly submit it again.
* ``CallbackInvalid`` - a callback body that cannot be understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from vidbatch.domain.states import FailureType

#: The provider of a model that names none, and of every task stored before there were several.
DEFAULT_PROVIDER = "grsai"

RemoteStatus = Literal["running", "succeeded", "failed"]

#: The ``failure_type`` values a failed :class:`RemoteResult` can carry.
FAILURE_TYPES: frozenset[str] = frozenset(FailureType)


@dataclass(frozen=True)
class TaskSpec:
    """What the worker hands a provider to start one video."""

    task_id: str
    model: str
    prompt: str
    aspect_ratio: str | None = None
    duration: int | None = None
    reference_url: str | None = None
    #: Extra inputs: ``firstFrameUrl``, ``lastFrameUrl``, ``urls``.
    meta: Mapping[str, Any] | None = None
    #: Where the provider should post updates; ``None`` means the caller polls.
    callback_url: str | None = None


@dataclass(frozen=True)
class RemoteResult:
    """What a provider says about one remote task, normalised."""

    remote_id: str
    status: RemoteStatus
    progress: int = 0
    video_url: str | None = None
    pid: str | None = None
    remove_watermark: bool | None = None
    #: The provider's own failure field, kept verbatim.
    failure_reason: str | None = None
    #: The provider's error text.
    error: str | None = None
    #: One of :data:`FAILURE_TYPES`; ``None`` unless ``status`` is ``failed``.
    failure_type: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status != "running"


class Provider(Protocol):
    """A video provider as the worker sees it."""

    name: str

    async def create_task(self, spec: TaskSpec) -> str:
        """Start a remote task and return its remote id."""
        ...

    async def get_result(self, remote_id: str) -> RemoteResult:
        """The current state of a remote task."""
        ...

    def parse_callback(self, body: bytes) -> RemoteResult:
        """Read a callback body; raises :class:`~vidbatch.exceptions.CallbackInvalid`."""
        ...
