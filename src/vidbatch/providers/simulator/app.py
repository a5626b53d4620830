"""The simulator's HTTP face: GrsAI's endpoints, result files and the ``/_sim`` control API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from vidbatch.providers.simulator.callbacks import CallbackDispatcher
from vidbatch.providers.simulator.config import SimulatorConfig
from vidbatch.providers.simulator.state import (
    REJECT_MARKER,
    Family,
    SimState,
    validate_create,
)

logger = logging.getLogger(__name__)

SORA_PATH = "/v1/video/sora-video"
VEO_PATH = "/v1/video/veo"
RESULT_PATH = "/v1/draw/result"
_HANG_POLL = 0.05


def sample_video() -> bytes:
    """The small MP4 every result URL serves."""
    return resources.files(__package__).joinpath("sample.mp4").read_bytes()


def padded_video(video: bytes, padding: int) -> bytes:
    """``video`` followed by a top-level MP4 ``free`` box of ``padding`` bytes in all
    (readers skip it), or ``video`` itself when ``padding`` is below a box header."""
    if padding < 8:
        return video
    return video + padding.to_bytes(4, "big") + b"free" + bytes(padding - 8)


def _envelope(code: int, msg: str, data: Any = None) -> JSONResponse:
    # GrsAI reports business errors with HTTP 200 and a non-zero code.
    return JSONResponse({"code": code, "msg": msg, "data": data})


def _error_500() -> Response:
    return PlainTextResponse("Internal Server Error", status_code=500)


def create_app(  # noqa: C901 - an app factory: its routes are closures over one state
    config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """A FastAPI app simulating GrsAI with ``config``'s behaviour, its time read from
    ``clock`` (seconds; tests pass one they can move forward)."""
    state = SimState(config or SimulatorConfig(), clock=clock)
    dispatcher = CallbackDispatcher(state)
    video = sample_video()
    padded: dict[int, bytes] = {0: video}

    def served_video() -> bytes:
        size = state.config.file_padding_bytes
        if size not in padded:
            padded.clear()
            padded[0] = video
            padded[size] = padded_video(video, size)
        return padded[size]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await dispatcher.close()

    app = FastAPI(title="GrsAI simulator", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sim = state

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return False
        expected = state.config.api_key
        return key == expected if expected is not None else key.startswith("sk-")

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def fault_response(code: int | None) -> Response | None:
        if code == 429:
            state.stats.http_429_sent += 1
            return PlainTextResponse(
                "Too Many Requests",
                status_code=429,
                headers={"Retry-After": str(state.config.retry_after)},
            )
        if code == 500:
            state.stats.http_500_sent += 1
            return _error_500()
        return None

    def base_url_of(request: Request) -> str:
        public = state.config.public_url
        return (public or str(request.base_url)).rstrip("/")

    async def hang(request: Request) -> None:
        """Hold the connection until the client leaves, a reset, or ``hang_max``."""
        generation = state.generation
        deadline = state.clock() + state.config.hang_max
        while state.generation == generation and state.clock() < deadline:
            if await request.is_disconnected():
                return
            await asyncio.sleep(_HANG_POLL)

    async def arrive(
        request: Request, path: str, kind: Literal["create", "result"]
    ) -> tuple[Any, Callable[[Response, int | None], Response], Response | None]:
        """What every GrsAI call goes through first: count it, read its body, and answer
        for it when the outage, an HTTP fault or a bad key decides. Returns the body, the
        function that records an answer, and that early answer (or None)."""
        state.stats.calls_per_endpoint[path] += 1
        body = await read_json(request)

        def answer(response: Response, code: int | None) -> Response:
            state.record("POST", path, body, response.status_code, code)
            return response

        if state.config.outage:
            state.stats.http_500_sent += 1
            return body, answer, answer(_error_500(), None)
        fault = fault_response(state.http_fault(kind))
        if fault is not None:
            return body, answer, answer(fault, None)
        if not authorised(request):
            state.stats.rejected += 1
            return body, answer, answer(_envelope(-1, "invalid api key"), -1)
        return body, answer, None

    async def create(request: Request, family: Family) -> Response:
        path = request.url.path
        body, answer, early = await arrive(request, path, "create")
        if early is not None:
            return early
        if not isinstance(body, dict):
            state.stats.rejected += 1
            return answer(_envelope(-1, "request body must be a JSON object"), -1)
        problem = validate_create(family, body)
        prompt = body.get("prompt", "")
        if problem is None and REJECT_MARKER in prompt:
            problem = "request refused"
        if problem is not None:
            state.stats.rejected += 1
            return answer(_envelope(-1, problem), -1)
        if state.cap_full():
            # The client exceeded the concurrency it was given: an overshoot.
            state.stats.cap_overshoots += 1
            return answer(fault_response(429) or _error_500(), None)

        webhook = body["webHook"]
        task = state.new_task(
            family=family,
            model=str(body["model"]),
            prompt=prompt,
            webhook=webhook if webhook != "-1" else None,
            shut_progress=bool(body.get("shutProgress", False)),
            base_url=base_url_of(request),
        )
        if task.webhook is not None:
            dispatcher.launch(task)
        ok = _envelope(0, "success", {"id": task.id})
        if state.decide_create_hang(prompt):
            state.stats.ambiguous_creates += 1
            state.record("POST", path, body, 0, None)  # 0: no answer was given
            await hang(request)
            return ok
        return answer(ok, 0)

    @app.post(SORA_PATH)
    async def sora_video(request: Request) -> Response:
        return await create(request, "sora")

    @app.post(VEO_PATH)
    async def veo_video(request: Request) -> Response:
        return await create(request, "veo")

    @app.post(RESULT_PATH)
    async def draw_result(request: Request) -> Response:
        path = RESULT_PATH
        body, answer, early = await arrive(request, path, "result")
        if early is not None:
            return early
        task_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not task_id:
            state.stats.rejected += 1
            return answer(_envelope(-1, "id is required"), -1)
        if state.decide_result_hang():
            state.stats.hung_results += 1
            state.record("POST", path, body, 0, None)  # 0: no answer was given
            await hang(request)
        task = state.tasks.get(task_id)
        if task is None:
            state.stats.not_found += 1
            return answer(_envelope(-22, "task not found"), -22)
        return answer(_envelope(0, "success", task.view(state.clock())), 0)

    async def hold_file(request: Request) -> None:
        deadline = state.clock() + state.config.hang_max
        while state.config.file_hold and state.clock() < deadline:
            if await request.is_disconnected():
                return
            await asyncio.sleep(_HANG_POLL)

    @app.get("/files/{name}")
    async def result_file(name: str, request: Request) -> Response:
        path = f"/files/{name}"
        state.stats.calls_per_endpoint["/files"] += 1
        task = state.tasks.get(name.removesuffix(".mp4")) if name.endswith(".mp4") else None
        if state.config.file_hold:
            await hold_file(request)
        if state.config.outage or state.draw_file_fault():
            state.stats.http_500_sent += 1
            state.record("GET", path, None, 500, None)
            return _error_500()
        if task is None or not task.serves_file(state.clock(), state.config.result_ttl):
            state.record("GET", path, None, 404, None)
            return PlainTextResponse("Not Found", status_code=404)
        state.stats.files_served += 1
        state.record("GET", path, None, 200, None)
        if state.config.file_body == "html":
            return Response(b"<!doctype html><title>Not a video</title>", media_type="text/html")
        return Response(served_video(), media_type="video/mp4")

    # -- control API, not part of GrsAI

    @app.get("/_sim/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return state.snapshot()

    @app.get("/_sim/config")
    async def get_config() -> dict[str, Any]:
        return state.config.model_dump()

    @app.post("/_sim/config")
    async def set_config(request: Request) -> Response:
        patch = await read_json(request)
        if not isinstance(patch, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=422)
        try:
            updated = state.update_config(patch)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False, include_input=False))
            return JSONResponse({"detail": errors}, status_code=422)
        return JSONResponse(updated.model_dump())

    @app.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        dispatcher.cancel_all()
        state.reset()
        return {"status": "reset"}

    @app.post("/_sim/release")
    async def release() -> dict[str, int]:
        return {"released": state.release()}

    @app.get("/_sim/requests")
    async def requests() -> list[dict[str, Any]]:
        return list(state.requests)

    @app.get("/_sim/callbacks")
    async def callbacks() -> list[dict[str, Any]]:
        return list(state.callbacks)

    @app.get("/_sim/tasks")
    async def tasks() -> list[dict[str, Any]]:
        now = state.clock()
        return [{**t.view(now), "prompt": t.prompt, "model": t.model} for t in state.tasks.values()]

    return app


def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8100,
    *,
    log_level: str = "info",
) -> None:
    """Run the simulator with uvicorn until interrupted."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=2,
    )
