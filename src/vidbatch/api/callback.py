"""The provider's callback: ``POST /api/video/callback?task_id=…&token=…``.

A missing or wrong token and an unknown task get the same 404 and change nothing; see
:mod:`vidbatch.services.callbacks` for what a callback does.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import ApiError
from vidbatch.exceptions import CallbackInvalid, NotFound
from vidbatch.services import callbacks

router = APIRouter(tags=["provider"])


@router.post(
    "/api/video/callback",
    summary="Provider callback for one task (authenticated by its token)",
    responses={400: {"description": "INVALID_CALLBACK"}, 404: {"description": "NOT_FOUND"}},
)
async def provider_callback(
    request: Request,
    task_id: str = Query(default="", max_length=64),
    token: str = Query(default="", max_length=128),
) -> dict[str, object]:
    try:
        got = await callbacks.receive(runtime_of(request), task_id, token, await request.body())
    except NotFound as exc:
        raise ApiError(404, "NOT_FOUND", exc.message) from None
    except CallbackInvalid as exc:
        raise ApiError(400, "INVALID_CALLBACK", exc.message) from None
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and got.batch_done:
        worker.wake()
    answer: dict[str, object] = {"success": True, "task_id": task_id, "status": got.status}
    if got.ignored:
        answer["ignored"] = True
    if got.deferred:
        answer["deferred"] = True
    return answer
