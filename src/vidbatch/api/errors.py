"""Errors become HTTP responses here and only here.

Every error body is ``{"ok": false, "error": "<CODE>", "message": "...", "request_id": "..."}``
plus, for invalid input, ``"details": {"items": [...], "fields": [...]}`` (each problem
``{"index", "field", "message"}``: per-item ones under ``items``, the body's under
``fields``) and any extra fields of the error (``required``/``available`` for 402, for
example). The code is stable; the message is for humans.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidbatch import exceptions as e
from vidbatch.logs import LogLimiter
from vidbatch.services.health import UNREACHABLE_ERRORS, is_unreachable

log = logging.getLogger(__name__)

#: Every error class of ``vidbatch.exceptions`` and the HTTP status it answers with (a test
#: fails when a class has no entry). 500 answers hide the message: those are our faults, or
#: the provider's, never the caller's.
STATUS_BY_ERROR: dict[type[e.VidbatchError], int] = {
    e.VidbatchError: 500,
    e.ConfigError: 500,
    e.DatabaseUnavailable: 503,
    e.SchemaNotCurrent: 503,
    e.NotFound: 404,
    e.InvalidInput: 400,
    e.TooManyItems: 400,
    e.InvalidRequestId: 400,
    e.InsufficientCredits: 402,
    e.CreditLimitExceeded: 409,
    e.Conflict: 409,
    e.BatchAlreadyEnded: 400,
    e.BatchNotSettled: 409,
    e.NothingToRetry: 409,
    e.NoWebhookEvents: 409,
    e.KeyRevoked: 409,
    e.IdempotencyKeyReused: 422,
    e.IdempotencyInFlight: 409,
    e.RateLimited: 429,
    e.ResultLinkInvalid: 403,
    e.ProviderError: 500,
    e.ProviderTransient: 500,
    e.ProviderRejected: 500,
    e.ProviderNotFound: 500,
    e.ProviderAmbiguous: 500,
    e.CallbackInvalid: 500,
}


class ApiError(Exception):
    """An HTTP error with the original's body shape, raised by routers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def too_many_attempts(wait: int, what: str) -> ApiError:
    """The 429 of a client throttled after wrong tokens (``what``: which token)."""
    return ApiError(
        429,
        "TOO_MANY_ATTEMPTS",
        f"too many wrong {what}s: try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "ok": False,
        "error": code,
        "message": message,
        "request_id": request_id_of(request),
    }
    if details:
        # An object, as published: per-item problems under "items", the others under "fields".
        body["details"] = {
            "items": [d for d in details if d.get("index") is not None],
            "fields": [d for d in details if d.get("index") is None],
        }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(exc: e.VidbatchError) -> int:
    """The HTTP status of an error: its class's entry, else its nearest listed ancestor's."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _unavailable(request: Request, code: str) -> JSONResponse:
    return error_response(
        request,
        503,
        code,
        "temporarily unavailable, try again shortly",
        headers={"Retry-After": "5"},
    )


def _domain_error_response(request: Request, exc: e.VidbatchError) -> JSONResponse:
    """The answer to an error of ``vidbatch.exceptions``, at the status of its class."""
    status = status_for(exc)
    if status in (500, 503):
        # The cause stays in the log (it may name hosts), once a minute when it repeats.
        message = "unhandled vidbatch error" if status == 500 else "service unavailable"
        limiter_of(request).log(
            log,
            logging.ERROR,
            f"{message}: {exc.message}",
            key=(exc.code, exc.message),
            extra={"action": "error", "code": exc.code},
        )
        if status == 500:
            return error_response(request, 500, "INTERNAL_ERROR", "internal error")
        return _unavailable(request, exc.code)
    details = [d.as_dict() for d in getattr(exc, "details", [])]
    headers = None
    if isinstance(exc, e.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(
        request, status, exc.code, exc.message, details=details, headers=headers, **exc.extra
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            request, exc.status, exc.code, exc.message, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(e.VidbatchError)
    async def _vidbatch_error(request: Request, exc: e.VidbatchError) -> JSONResponse:
        return _domain_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "index": None,
                "field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "request",
                "message": e.get("msg", "invalid"),
            }
            for e in exc.errors()
        ]
        return error_response(request, 400, "INVALID_PAYLOAD", "invalid request", details=details)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # JSON nested thousands deep, parsed by the framework (the admin API's bodies).
        return error_response(request, 400, "INVALID_PAYLOAD", "the body is nested too deeply")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}
        return error_response(
            request,
            exc.status_code,
            codes.get(exc.status_code, f"HTTP_{exc.status_code}"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_unreachable(exc):
            return await _unexpected(request, exc)
        limiter_of(request).log(
            log,
            logging.WARNING,
            f"database unavailable: {type(exc).__name__}",
            key=("database unavailable", type(exc).__name__),
            extra={"action": "error"},
        )
        return _unavailable(request, e.DatabaseUnavailable.code)

    # Registered by class (not only as Exception) so that KeyedRoute finds the handler too.
    for cls in (DBAPIError, PoolTimeout, *UNREACHABLE_ERRORS):
        if cls is e.DatabaseUnavailable:
            continue  # a VidbatchError: STATUS_BY_ERROR
        app.add_exception_handler(cls, _database_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        limiter_of(request).log(
            log,
            logging.ERROR,
            f"unhandled error on {where}: {type(exc).__name__}",
            key=(type(exc).__name__, where, str(exc)[:200]),
            exc=exc,
            extra={"action": "error"},
        )
        return error_response(request, 500, "INTERNAL_ERROR", "internal error")


def limiter_of(request: Request) -> LogLimiter:
    """The app's limiter of repeated log lines (one per app)."""
    found = getattr(request.app.state, "log_limiter", None)
    if not isinstance(found, LogLimiter):
        found = request.app.state.log_limiter = LogLimiter()
    return found
