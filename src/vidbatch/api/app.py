"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidbatch import __version__
from vidbatch.api import errors, request_id
from vidbatch.logs import LogLimiter
from vidbatch.runtime import Runtime
from vidbatch.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Batch AI video generation (Sora-2, Veo). Post a batch of items with your API key
(`x-api-key` or `Authorization: Bearer`): the price is frozen from your credits at once,
every item is generated, and when all have ended you are charged for what succeeded and
refunded the rest. Errors are JSON: `{"ok": false, "error": "<CODE>", "message", "details",
"request_id"}`.
"""


class RequestIdHeader:
    """Every request gets its id (``request.state.request_id``: the caller's header, else
    a generated one) and every answer says it in ``x-request-id``; a route that adopted
    the body's request id changes the state, and that one is said. Plain ASGI: a
    per-request cost far below Starlette's ``BaseHTTPMiddleware``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.from_headers(Headers(scope=scope)) or request_id.generate()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = state["request_id"]
            await send(message)

        await self.app(scope, receive, sending)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before they are read whole
    (announced or chunked), and answer whatever escapes the routes with one 500 and one
    log line (rate-limited by ``limiter``) instead of a traceback per layer."""

    def __init__(self, app: ASGIApp, limit: int, limiter: LogLimiter | None = None) -> None:
        self.app = app
        self.limit = limit
        self.limiter = limiter or LogLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(scope, send)
                return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await self._too_large(scope, send)
        except BaseExceptionGroup as group:
            if not group.subgroup(_TooLarge) or started:
                raise
            await self._too_large(scope, send)
        except Exception as exc:
            where = f"{scope.get('method', '')} {scope.get('path', '')}"
            self.limiter.log(
                log,
                logging.ERROR,
                f"unhandled error on {where}: {type(exc).__name__}",
                key=(type(exc).__name__, where, str(exc)[:200]),
                exc=exc,
                extra={"action": "error"},
            )
            if not started:
                await _internal_error(send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        import json

        rid = (
            request_id.from_headers(
                {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            )
            or request_id.generate()
        )
        body = json.dumps(
            {
                "ok": False,
                "error": "PAYLOAD_TOO_LARGE",
                "message": f"request body over {self.limit} bytes",
                "request_id": rid,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", rid.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(BaseException):
    """A body over the limit: unwinds the app up to :class:`BodyLimit`, past every handler
    of ``Exception`` (which would make it a 500)."""


async def _internal_error(send: Send) -> None:
    import json

    body = json.dumps(
        {"ok": False, "error": "INTERNAL_ERROR", "message": "internal error"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    run_worker: bool = False,
) -> FastAPI:
    """Build the app. With ``runtime`` given, the caller owns it; otherwise the app opens
    one at start-up (database migrated on SQLite) and closes it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await Runtime.open(settings)
        app.state.runtime = rt
        worker_task: asyncio.Task[Any] | None = None
        if run_worker:
            from vidbatch.worker.loop import WorkerLoop

            worker = WorkerLoop(rt)
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run(), name="vidbatch-worker")
        try:
            yield
        finally:
            if worker_task is not None:
                app.state.worker.stop()
                # the worker abandons its passes after the grace; a little more for it to
                # say so and stop its webhook lane
                with suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker_task, timeout=settings.shutdown_grace_seconds + 5)
            if runtime is None:
                await rt.close()

    app = FastAPI(
        title="vidbatch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs is served from local assets (api/docs.py); ReDoc would load from a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    if runtime is not None:
        app.state.runtime = runtime

    app.add_middleware(RequestIdHeader)

    errors.install(app)

    from vidbatch.api import admin, callback, docs, enterprise, health, internal, results, v1
    from vidbatch.web.app import router as dashboard_router

    docs.install(app)
    app.include_router(health.router)
    app.include_router(enterprise.router)
    app.include_router(v1.router)
    app.include_router(internal.router)
    app.include_router(callback.router)
    app.include_router(admin.router)
    app.include_router(results.router)
    app.include_router(dashboard_router())
    app.state.log_limiter = LogLimiter()
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, limiter=app.state.log_limiter)
    if settings.access_log:
        from vidbatch.api.access_log import AccessLog

        app.add_middleware(AccessLog)  # outermost: sees every answer, a 413 too
    return app


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def client_address(request: Request) -> str:
    """The address the request came from: behind a reverse proxy the proxy's, unless
    `vidbatch serve --forwarded-allow-ips` names it (then the client's it forwarded)."""
    return request.client.host if request.client else "unknown"
