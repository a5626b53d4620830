"""Liveness, readiness and metrics.

``/metrics`` shows credit totals and volumes: with ``VIDBATCH_METRICS_TOKEN`` set it needs
``Authorization: Bearer <token>`` (401 otherwise); unset, it is open and should be reachable
only from a private interface.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vidbatch.api.app import client_address
from vidbatch.api.errors import ApiError, too_many_attempts
from vidbatch.clock import utcnow
from vidbatch.runtime import Runtime
from vidbatch.services import health
from vidbatch.startup import result_store_check

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


#: The provider "answered recently" when some process had an answer within this time.
RECENT = timedelta(minutes=10)


@router.get(
    "/readyz",
    summary="The database is reachable and its schema current",
    description="503 when the database is unreachable or its schema behind. Also reports, "
    "without failing, whether the provider answered any process recently and whether the "
    "result store is writable.",
)
async def readyz(request: Request) -> JSONResponse:
    rt = request.app.state.runtime
    try:
        current = await health.schema_is_current(rt.engine)
    except Exception as exc:  # any database failure means not ready
        return JSONResponse(
            {"ok": False, "database": "unreachable", "error": type(exc).__name__},
            status_code=503,
        )
    if not current:
        return JSONResponse({"ok": False, "database": "schema not current"}, status_code=503)
    return JSONResponse(
        {
            "ok": True,
            "database": "ok",
            "provider": await _provider(rt),
            "result_store": await _result_store(rt),
        }
    )


async def _provider(rt: Any) -> dict[str, Any]:
    """Reported, never failing: when any process last had an answer from the provider."""
    try:
        last = await health.provider_last_answer(rt.engine)
    except Exception:
        log.debug("provider answers unavailable", exc_info=True)
        return {"answered_recently": None, "last_answer_at": None}
    return {
        "answered_recently": last is not None and utcnow() - last <= RECENT,
        "last_answer_at": last.isoformat().replace("+00:00", "Z") if last else None,
    }


#: How long a result store's writability answer is reused: /readyz is called every few
#: seconds, and each check writes, reads and deletes an object.
STORE_CHECK_SECONDS = 30.0
_store_checks: dict[int, tuple[float, dict[str, Any]]] = {}


async def _result_store(rt: Any) -> dict[str, Any]:
    """Reported, never failing: whether the result store takes a write (checked at most
    every STORE_CHECK_SECONDS per store)."""
    now = time.monotonic()
    cached = _store_checks.get(id(rt.result_store))
    if cached and now - cached[0] < STORE_CHECK_SECONDS:
        return cached[1]
    writable, detail = await result_store_check(rt.settings, rt.result_store)
    answer = {"writable": writable, "detail": detail}
    _store_checks[id(rt.result_store)] = (now, answer)
    return answer


metrics_bearer = HTTPBearer(
    scheme_name="MetricsToken",
    description="`Authorization: Bearer <VIDBATCH_METRICS_TOKEN>` when that is set.",
    auto_error=False,
)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        401: {"description": "`METRICS_UNAUTHORIZED`: missing or wrong metrics token"},
        429: {"description": "`TOO_MANY_ATTEMPTS`: too many wrong metrics tokens; see Retry-After"},
    },
)
async def metrics(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(metrics_bearer)] = None,
) -> Response:
    rt = request.app.state.runtime
    expected = request.app.state.settings.metrics_token
    if expected:
        presented = credentials.credentials.strip() if credentials else ""
        _check_metrics_token(rt, client_address(request), presented, expected)
    try:
        counts = await health.task_counts(rt.engine)
        for status, n in counts.items():
            rt.metrics.tasks.labels(status).set(n)
    except Exception:  # metrics still answer when the database is down
        log.debug("task counts unavailable", exc_info=True)
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")


def _check_metrics_token(rt: Runtime, client: str, presented: str, expected: str) -> None:
    """As for the admin token: after 10 wrong tokens within a minute from one address, every
    attempt from it is a 429 with Retry-After until the oldest is a minute old."""
    wait = rt.metrics_failures.retry_after(client, rt.clock.monotonic())
    if wait is not None:
        raise too_many_attempts(wait, "metrics token")
    if hmac.compare_digest(presented.encode(), expected.encode()):
        rt.metrics_failures.succeeded(client)
        return
    if presented:  # a guess; a request without a token guesses nothing
        rt.metrics_failures.failed(client, rt.clock.monotonic())
        log.warning("metrics token refused", extra={"action": "metrics_auth", "client": client})
    raise ApiError(
        401,
        "METRICS_UNAUTHORIZED",
        "missing or wrong metrics token (Authorization: Bearer <VIDBATCH_METRICS_TOKEN>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
