"""The exceptions the client raises. Catch :class:`VidbatchError` for all of them.

::

    VidbatchError                    anything this package raises
    ├── APIError                     the server answered with an error (``status``, ``code``,
    │   │                            ``message``, ``details``, ``request_id``, ``body``)
    │   ├── InvalidRequest           400/413/422: the request was refused; ``item_errors``
    │   │   │                        lists per-item problems (``index``, ``field``, ``message``)
    │   │   ├── TooManyItems         400 TOO_MANY_ITEMS: split the batch
    │   │   ├── BatchAlreadyEnded    400 BATCH_ALREADY_ENDED: cancelling a batch that ended
    │   │   └── IdempotencyKeyReused 422: the request id was used before with another body
    │   ├── AuthenticationError      401/403: no key, or an unknown, revoked or inactive key
    │   ├── InsufficientCredits      402: ``required`` and ``available`` credits
    │   ├── NotFound                 404: no such batch (or another customer's)
    │   ├── Conflict                 409: e.g. the same request id is still being processed
    │   ├── RateLimited              429: ``retry_after`` seconds (after the retries ran out)
    │   └── ServerError              5xx (after the retries ran out)
    ├── ConnectionFailed             the server could not be reached (after the retries)
    ├── WaitTimeout                  ``wait()`` gave up; ``batch`` is the last state seen
    ├── DownloadError                a video could not be downloaded or failed its checksum
    └── WebhookVerificationError     (``vidbatch_client.webhooks``) a bad signature or time
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidbatch_client.models import Batch


class VidbatchError(Exception):
    """Base class of every error of this package."""


class APIError(VidbatchError):
    """The server answered with an error body ``{ok: false, error, message, details}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.body: dict[str, Any] = body or {}

    def __str__(self) -> str:
        if not self.status:  # found before asking the server (e.g. no API key)
            return self.message
        return f"{self.status} {self.code or 'ERROR'}: {self.message}"


class InvalidRequest(APIError):
    """The request was refused as invalid; every problem is listed."""

    @property
    def item_errors(self) -> list[dict[str, Any]]:
        """Per-item problems: ``[{"index": 0, "field": "prompt", "message": "..."}, ...]``."""
        items = self.details.get("items")
        return list(items) if isinstance(items, list) else []

    @property
    def field_errors(self) -> list[dict[str, Any]]:
        """Problems of the request's own fields (e.g. ``webhook_url``)."""
        fields = self.details.get("fields")
        return list(fields) if isinstance(fields, list) else []


class TooManyItems(InvalidRequest):
    """More items than the server accepts in one batch."""


class BatchAlreadyEnded(InvalidRequest):
    """The batch has already ended (e.g. cancelling a settled batch)."""


class IdempotencyKeyReused(InvalidRequest):
    """The request id was used before with a different body."""


class AuthenticationError(APIError):
    """No API key, or an unknown, revoked or inactive one."""


class InsufficientCredits(APIError):
    """Not enough available credits: ``required`` and ``available`` say by how much."""

    @property
    def required(self) -> int | None:
        value = self.body.get("required", self.details.get("required"))
        return int(value) if value is not None else None

    @property
    def available(self) -> int | None:
        value = self.body.get("available", self.details.get("available"))
        return int(value) if value is not None else None


class NotFound(APIError):
    """No such batch, or one of another customer (the server says the same)."""


class Conflict(APIError):
    """The state does not allow the request now (e.g. the same request id in flight)."""


class RateLimited(APIError):
    """Over the key's rate limit; ``retry_after`` is the server's ``Retry-After`` in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """The server failed (5xx) on every attempt."""


class ConnectionFailed(VidbatchError):
    """The server could not be reached, or did not answer in time, on every attempt."""


class WaitTimeout(VidbatchError):
    """``wait()`` ran out of time before the batch ended; ``batch`` is its last state."""

    def __init__(self, message: str, batch: Batch) -> None:
        super().__init__(message)
        self.batch = batch


class DownloadError(VidbatchError):
    """A file could not be downloaded, or its bytes do not match the server's SHA-256."""


class WebhookVerificationError(VidbatchError):
    """A webhook's signature does not check out; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_BY_CODE: dict[str, type[APIError]] = {
    "TOO_MANY_ITEMS": TooManyItems,
    "BATCH_ALREADY_ENDED": BatchAlreadyEnded,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "INSUFFICIENT_CREDITS": InsufficientCredits,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def error_class(status: int, code: str | None) -> type[APIError]:
    """The exception class for an error answer."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequest
    return APIError
