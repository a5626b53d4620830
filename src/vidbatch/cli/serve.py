"""`vidbatch serve` and `vidbatch worker`."""

from __future__ import annotations

import asyncio
import json
import signal
from contextlib import suppress

import typer

from vidbatch.cli.common import fail, run, settings_from
from vidbatch.logs import setup_logging


def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", envvar="VIDBATCH_HOST", help="Address to listen on."
    ),
    port: int = typer.Option(8000, "--port", envvar="VIDBATCH_PORT", help="Port to listen on."),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Serve the API only; run `vidbatch worker` elsewhere."
    ),
) -> None:
    """Serve the HTTP API (and, unless --no-worker, the worker loop in the same process)."""
    import uvicorn

    from vidbatch.api.app import create_app
    from vidbatch.runtime import open_engine

    settings = settings_from(ctx)
    setup_logging(settings)

    async def check() -> None:  # fail fast, in one line, when the database is unusable
        engine = await open_engine(settings)
        await engine.dispose()

    run(check)
    app = create_app(settings, run_worker=not no_worker)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)


def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run one round, print its summary, exit."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="Provider calls in flight (BATCH_TASK_CONCURRENCY)."
    ),
) -> None:
    """Run the worker: rounds of claim, submit, poll, time out, settle, deliver webhooks."""
    from vidbatch.runtime import Runtime
    from vidbatch.worker.loop import WorkerLoop
    from vidbatch.worker.round import run_once

    settings = settings_from(ctx)
    if concurrency is not None:
        settings = settings.model_copy(update={"task_concurrency": concurrency})
    setup_logging(settings)

    async def go() -> None:
        rt = await Runtime.open(settings)
        try:
            if once:
                summary = await run_once(rt)
                typer.echo(json.dumps(summary.as_dict()))
                return
            loop = WorkerLoop(rt)
            running = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with suppress(NotImplementedError):
                    running.add_signal_handler(sig, loop.stop)
            await loop.run()
        finally:
            await rt.close()

    run(go)
