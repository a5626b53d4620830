"""vidbatch-client: the Python client of the vidbatch ``/api/v1``.

::

    from vidbatch_client import Client

    with Client() as vb:  # VIDBATCH_API_KEY, VIDBATCH_BASE_URL
        created = vb.create_batch([{"prompt": "A cat surfing"}])
        batch = vb.wait(created.batch_id)
        vb.download(created.batch_id, "videos/")
"""

from vidbatch_client._core import RetryPolicy
from vidbatch_client._download import DownloadedItem, DownloadReport
from vidbatch_client._version import __version__
from vidbatch_client.async_client import AsyncClient
from vidbatch_client.client import Client
from vidbatch_client.errors import (
    APIError,
    AuthenticationError,
    BatchAlreadyEnded,
    Conflict,
    ConnectionFailed,
    DownloadError,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TooManyItems,
    VidbatchError,
    WaitTimeout,
    WebhookVerificationError,
)
from vidbatch_client.models import (
    ENDED_STATUSES,
    Balance,
    Batch,
    CancelResult,
    CreatedBatch,
    Item,
    LedgerEntry,
    ResultLine,
)

__all__ = [
    "ENDED_STATUSES",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Balance",
    "Batch",
    "BatchAlreadyEnded",
    "CancelResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CreatedBatch",
    "DownloadError",
    "DownloadReport",
    "DownloadedItem",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "InvalidRequest",
    "Item",
    "LedgerEntry",
    "NotFound",
    "RateLimited",
    "ResultLine",
    "RetryPolicy",
    "ServerError",
    "TooManyItems",
    "VidbatchError",
    "WaitTimeout",
    "WebhookVerificationError",
    "__version__",
]
