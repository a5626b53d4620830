"""Video providers: the neutral interface the worker uses and the GrsAI implementation."""

from vidbatch.providers.base import FAILURE_TYPES, Provider, RemoteResult, RemoteStatus, TaskSpec
from vidbatch.providers.grsai import (
    GrsAIClient,
    build_create_request,
    normalise_task,
    parse_callback_body,
)

__all__ = [
    "FAILURE_TYPES",
    "GrsAIClient",
    "Provider",
    "RemoteResult",
    "RemoteStatus",
    "TaskSpec",
    "build_create_request",
    "normalise_task",
    "parse_callback_body",
]
