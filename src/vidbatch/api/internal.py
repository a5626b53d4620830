"""The worker trigger: ``POST /api/internal/batch-worker`` runs one round."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Header, Request

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import ApiError
from vidbatch.worker.round import run_once

router = APIRouter(tags=["internal"])


@router.post(
    "/api/internal/batch-worker",
    summary="Run one worker round (claim, submit, poll, time out, settle)",
    responses={
        401: {"description": "WORKER_UNAUTHORIZED"},
        500: {"description": "MISSING_INTERNAL_WORKER_SECRET"},
    },
)
async def batch_worker(
    request: Request, x_worker_secret: str | None = Header(default=None)
) -> dict[str, object]:
    rt = runtime_of(request)
    expected = rt.settings.internal_worker_secret
    if not expected:
        raise ApiError(
            500, "MISSING_INTERNAL_WORKER_SECRET", "INTERNAL_WORKER_SECRET is not set on the server"
        )
    if not x_worker_secret or not hmac.compare_digest(x_worker_secret.encode(), expected.encode()):
        raise ApiError(401, "WORKER_UNAUTHORIZED", "missing or wrong x-worker-secret")
    summary = await run_once(rt)
    body = summary.as_dict()
    body["request_id"] = request.state.request_id
    return body
