"""vidbatch's own exceptions: one module, the docstrings are the default messages.

Hierarchy (``tests/unit/test_exceptions.py`` keeps this tree equal to the classes below)::

    VidbatchError                    something went wrong in vidbatch
    ├── ConfigError                  a setting is missing or invalid
    ├── DatabaseUnavailable          the database cannot be reached
    ├── SchemaNotCurrent             the schema is not at the newest migration
    ├── NotFound                     an account, key, batch or task does not exist (or is not yours)
    ├── InvalidInput                 a caller's input is wrong (carries per-field details)
    │   ├── TooManyItems             more items than the batch limit
    │   └── InvalidRequestId         a request id too long or with a control character
    ├── InsufficientCredits          available credits do not cover the amount
    ├── CreditLimitExceeded          an account would hold more credits than the cap
    ├── Conflict                     the state does not allow the operation
    │   ├── BatchAlreadyEnded        the batch has already ended
    │   ├── BatchNotSettled          its failed items cannot be retried before it settles
    │   ├── NothingToRetry           the batch has no failed items to retry
    │   ├── NoWebhookEvents          the batch has no webhook events to resend
    │   └── KeyRevoked               a revoked API key cannot be activated again
    ├── IdempotencyKeyReused         a request id (or ledger key) reused for another body
    ├── IdempotencyInFlight          a request with this request id is still being processed
    ├── RateLimited                  too many requests this minute
    ├── ResultLinkInvalid            a result file link that is not genuine or has expired
    └── ProviderError                the upstream provider did not do what was asked
        ├── ProviderTransient        worth retrying later (connection refused, 429, 5xx, timeout)
        ├── ProviderRejected         refused for good (bad parameters, bad key, no credits)
        ├── ProviderNotFound         the remote task does not exist (GrsAI code -22)
        ├── ProviderAmbiguous        the request was sent, no answer came: it may exist upstream
        └── CallbackInvalid          a callback body that cannot be understood

HTTP status codes live only in ``vidbatch.api`` (``api/errors.STATUS_BY_ERROR``, one entry
per class here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidbatch.domain.states import FailureType


class VidbatchError(Exception):
    """Something went wrong in vidbatch."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or (self.__doc__ or self.__class__.__name__).strip()
        self.extra = extra
        super().__init__(self.message)


class ConfigError(VidbatchError):
    """A setting is missing or invalid."""

    code = "CONFIG_ERROR"


class DatabaseUnavailable(VidbatchError):
    """The database cannot be reached."""

    code = "DATABASE_UNAVAILABLE"


class SchemaNotCurrent(VidbatchError):
    """The database schema is not at the newest migration; run `vidbatch db upgrade`."""

    code = "SCHEMA_NOT_CURRENT"


class NotFound(VidbatchError):
    """Not found."""

    code = "NOT_FOUND"


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of the input; ``index`` is the item position, if any."""

    field: str
    message: str
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class InvalidInput(VidbatchError):
    """The input is invalid."""

    code = "INVALID_PAYLOAD"

    def __init__(
        self, message: str | None = None, details: list[FieldError] | None = None, **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.details = details or []


class TooManyItems(InvalidInput):
    """The batch has more items than allowed."""

    code = "TOO_MANY_ITEMS"


class InvalidRequestId(InvalidInput):
    """The request id cannot be used: it is never replaced by another."""

    code = "INVALID_REQUEST_ID"


class InsufficientCredits(VidbatchError):
    """Not enough available credits."""

    code = "INSUFFICIENT_CREDITS"

    def __init__(self, required: int, available: int, message: str | None = None) -> None:
        super().__init__(
            message or f"{required} credits required, {available} available",
            required=required,
            available=available,
        )
        self.required = required
        self.available = available


class CreditLimitExceeded(VidbatchError):
    """The account would hold more credits than the most one account may hold."""

    code = "CREDIT_LIMIT_EXCEEDED"


class Conflict(VidbatchError):
    """The current state does not allow this operation."""

    code = "CONFLICT"


class BatchAlreadyEnded(Conflict):
    """The batch has already ended."""

    code = "BATCH_ALREADY_ENDED"


class BatchNotSettled(Conflict):
    """The batch has not ended yet: its failed items cannot be retried before it settles."""

    code = "BATCH_NOT_SETTLED"


class NothingToRetry(Conflict):
    """The batch has no failed items to retry."""

    code = "NOTHING_TO_RETRY"


class NoWebhookEvents(Conflict):
    """The batch has no webhook events to resend."""

    code = "NO_WEBHOOK_EVENTS"


class KeyRevoked(Conflict):
    """The API key is revoked: revocation is final, create a new key instead."""

    code = "KEY_REVOKED"


class ResultLinkInvalid(VidbatchError):
    """This result link is not genuine or has expired: read the batch again for a fresh one."""

    code = "RESULT_LINK_INVALID"


class IdempotencyKeyReused(VidbatchError):
    """This request id was already used with a different body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInFlight(VidbatchError):
    """A request with this request id is still being processed."""

    code = "IDEMPOTENCY_CONFLICT_NO_BATCH"


class RateLimited(VidbatchError):
    """Too many requests for this API key this minute."""

    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, limit: int, retry_after: int, message: str | None = None) -> None:
        super().__init__(
            message or f"rate limit of {limit} requests per minute exceeded",
            limit=limit,
            retry_after=retry_after,
        )
        self.limit = limit
        self.retry_after = retry_after


class ProviderError(VidbatchError):
    """The video provider did not do what was asked."""

    code = "PROVIDER_ERROR"

    def __init__(
        self,
        message: str | None = None,
        *,
        failure_type: str = FailureType.UNKNOWN,
        http_status: int | None = None,
        provider_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.failure_type = failure_type
        self.http_status = http_status
        self.provider_code = provider_code


class ProviderTransient(ProviderError):
    """The provider is temporarily unavailable; try again later."""

    code = "PROVIDER_TRANSIENT"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        failure_type: str = FailureType.NETWORK,
        http_status: int | None = None,
        provider_code: int | None = None,
    ) -> None:
        super().__init__(
            message,
            failure_type=failure_type,
            http_status=http_status,
            provider_code=provider_code,
        )
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    """The provider refused the request."""

    code = "PROVIDER_REJECTED"


class ProviderNotFound(ProviderError):
    """The provider does not know this task."""

    code = "PROVIDER_NOT_FOUND"


class ProviderAmbiguous(ProviderError):
    """The request reached the provider but no answer came back: the task may exist upstream."""

    code = "PROVIDER_AMBIGUOUS"


class CallbackInvalid(ProviderError):
    """The callback body cannot be understood."""

    code = "INVALID_CALLBACK"
