"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidbatch.services import health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/readyz", summary="The database is reachable and its schema current")
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
    return JSONResponse({"ok": True, "database": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    rt = request.app.state.runtime
    try:
        counts = await health.task_counts(rt.engine)
        for status, n in counts.items():
            rt.metrics.tasks.labels(status).set(n)
    except Exception:  # metrics still answer when the database is down
        log.debug("task counts unavailable", exc_info=True)
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
