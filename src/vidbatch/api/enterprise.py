"""The original's enterprise batch endpoint, ``POST /api/enterprise/video-batch`` (also
``POST /api/video/batch``), and the request reading that ``POST /api/v1/batches`` shares
with it; the use case itself is :mod:`vidbatch.services.intake`."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vidbatch.api import request_id as request_ids
from vidbatch.api.app import runtime_of
from vidbatch.api.deps import Authenticated, Key, KeyedRoute, count_request, show_rate
from vidbatch.api.schemas import (
    BatchRequest,
    CreatedBatch,
    error_responses,
    request_body,
    success_headers,
)
from vidbatch.domain.states import BatchStatus
from vidbatch.exceptions import FieldError, InvalidInput
from vidbatch.services import intake
from vidbatch.services.batches import Created

router = APIRouter(tags=["enterprise"], route_class=KeyedRoute)

CREATE_DESCRIPTION = """
Freeze the batch's price from your credits and queue every item. Unknown fields, of the
body or of an item, are ignored. `duration` is for Sora only (10 or 15 s, default 10); Veo
clips have a fixed length and a `duration` sent with them is ignored.

**Request id and idempotency**: the first of the headers `x-request-id`, `request-id`,
`idempotency-key`, `x-idempotency-key`, `x-requestid`, else the body's `request_id`. Sending
the same id with the same body again answers with the first batch and
`"idempotent_replay": true` (not counted against the rate limit); the same id with another
body is refused with 422. A refused request (400, 402, 429) leaves its id free. Without an
id one is generated and the request is not idempotent.
"""

CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The batch was accepted (or this repeats an earlier request)",
        "headers": success_headers(),
    },
    **error_responses(400, 401, 402, 403, 409, 413, 422, 429),
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


MAX_DEPTH = 32


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _unstorable(node: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The first part of a parsed body no database can store: (field, reason)."""
    if depth > MAX_DEPTH:
        return path or "body", f"is nested more than {MAX_DEPTH} levels deep"
    if isinstance(node, str):
        if "\x00" in node:
            return path or "body", "must not contain NUL characters"
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body", "must be valid Unicode (no unpaired surrogates)"
        return None
    if isinstance(node, dict):
        for key, value in node.items():
            found = _unstorable(key, path, depth + 1) or _unstorable(
                value, _join(path, key), depth + 1
            )
            if found:
                return found
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found = _unstorable(value, f"{path}[{n}]", depth + 1)
            if found:
                return found
    return None


def parse_json_body(raw: bytes) -> Any:
    """The request body as JSON; InvalidInput (400 INVALID_PAYLOAD) saying why not."""

    def invalid(message: str, field: str = "body") -> InvalidInput:
        return InvalidInput(message, details=[FieldError(field=field, message=message)])

    if not raw.strip():
        raise invalid("the body is empty; expected a JSON object with an 'items' list")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("the body is not valid UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise invalid("the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, huge numbers
        raise invalid(f"the body is not valid JSON: {exc}") from None
    found = _unstorable(body)
    if found is not None:
        field, reason = found
        raise invalid(f"{field} {reason}", field=field)
    return body


def _answer(created: Created, rid: str, mode: str) -> JSONResponse:
    body: dict[str, Any] = {
        "ok": True,
        "batch_id": created.batch_id,
        "total_count": created.total_count,
        "cost_per_video": created.cost_per_video,
        "required_credits": created.required_credits,
        "available_credits": created.available_credits,
        "status": BatchStatus.QUEUED if not created.replay else created.status,
        "mode": mode,
        "request_id": rid,
    }
    if created.replay:
        body["idempotent_replay"] = True
    return JSONResponse(body)


async def accept_batch(request: Request, auth: Authenticated, *, mode: str) -> JSONResponse:
    """Every create endpoint: read the body and the request id, then
    :func:`vidbatch.services.intake.accept`."""
    raw = await request.body()
    body: Any = None
    problem: InvalidInput | None = None
    try:
        body = parse_json_body(raw)
    except InvalidInput as exc:
        problem = exc

    # The caller's request id (a header, else the body's) is also the idempotency key.
    idempotency_key = request_ids.from_headers(request.headers)
    if idempotency_key is None and isinstance(body, dict) and body.get("request_id") is not None:
        idempotency_key = request_ids.clean(body["request_id"])
        if idempotency_key is not None and not idempotency_key.isascii():
            idempotency_key = None  # it is echoed in the x-request-id header
        if idempotency_key is None and problem is None:
            reason = "must be a string of 1 to 128 printable ASCII characters"
            problem = InvalidInput(
                f"request_id {reason}", details=[FieldError(field="request_id", message=reason)]
            )
    if idempotency_key is not None:
        request.state.request_id = idempotency_key
    rid: str = request.state.request_id

    created = await intake.accept(
        runtime_of(request),
        auth.caller,
        body,
        invalid=problem,
        idempotency_key=idempotency_key,
        request_id=rid,
        source=mode,
        count_request=lambda: count_request(request, auth),
        show_rate=lambda: show_rate(request, auth),
        client_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    if not created.replay:
        worker = getattr(request.app.state, "worker", None)
        if worker is not None:
            worker.wake()  # start the new batch now rather than after the idle sleep
    return _answer(created, rid, mode)


_CREATE_ROUTE: dict[str, Any] = {
    "response_model": CreatedBatch,
    "responses": CREATE_RESPONSES,
    "openapi_extra": request_body(BatchRequest),
    "description": CREATE_DESCRIPTION,
}


@router.post(
    "/api/enterprise/video-batch",
    summary="Create a batch of videos",
    operation_id="create_enterprise_batch",
    **_CREATE_ROUTE,
)
async def create_enterprise_batch(request: Request, auth: Key) -> JSONResponse:
    return await accept_batch(request, auth, mode="enterprise")


@router.post(
    "/api/video/batch",
    summary="Create a batch of videos (alias of /api/enterprise/video-batch)",
    operation_id="create_video_batch",
    **_CREATE_ROUTE,
)
async def create_video_batch(request: Request, auth: Key) -> JSONResponse:
    return await accept_batch(request, auth, mode="enterprise")
