"""``vidbatch worker --metrics-port``: the worker's own ``/metrics`` (its provider calls,
latencies, rounds, …) on a small HTTP server beside the worker loop. It asks for the same
``Authorization: Bearer <VIDBATCH_METRICS_TOKEN>`` as the API's ``/metrics`` when that is
set."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from vidbatch.runtime import Runtime
from vidbatch.services import health

log = logging.getLogger(__name__)


def metrics_app(rt: Runtime) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        expected = rt.settings.metrics_token
        if expected:
            header = request.headers.get("Authorization", "")
            presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                return web.json_response(
                    {"ok": False, "error": "METRICS_UNAUTHORIZED"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        try:
            for status, n in (await health.task_counts(rt.engine)).items():
                rt.metrics.tasks.labels(status).set(n)
        except Exception:  # metrics still answer when the database is down
            log.debug("task counts unavailable", exc_info=True)
        return web.Response(
            body=rt.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_metrics_server(rt: Runtime, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` on ``host:port`` until the returned runner is cleaned up."""
    runner = web.AppRunner(metrics_app(rt), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info(
        "worker metrics on http://%s:%d/metrics",
        host,
        port,
        extra={"action": "startup"},
    )
    return runner
