"""`vidbatch serve` and `vidbatch worker`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from contextlib import AsyncExitStack, suppress
from typing import Any

import typer

from vidbatch.cli.common import fail, loop_runner, run, settings_from
from vidbatch.logs import setup_logging
from vidbatch.settings import Settings
from vidbatch.startup import log_startup

#: The provider key given to the in-process simulator when GRSAI_API_KEY is unset.
SIMULATOR_KEY = "sk-simulator"


def simulator_settings(settings: Settings, url: str) -> Settings:
    """What running against a local simulator needs: its URL as the provider host, a key
    it accepts, and plain-http video URLs on a loopback address allowed (it serves its
    files over http from 127.0.0.1, and the archive downloads them from there)."""
    return settings.model_copy(
        update={
            "grsai_host": url,
            "grsai_api_key": settings.grsai_api_key or SIMULATOR_KEY,
            "require_https_video_url": False,
            "allow_private_urls": True,
        }
    )


def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", envvar="VIDBATCH_HOST", help="Address to listen on."
    ),
    port: int = typer.Option(8000, "--port", envvar="VIDBATCH_PORT", help="Port to listen on."),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Serve the API only; run `vidbatch worker` elsewhere."
    ),
    simulator: bool = typer.Option(
        False,
        "--simulator",
        help="Start the GrsAI simulator in this process and use it as the provider "
        "(sets GRSAI_HOST, GRSAI_API_KEY if unset, VIDBATCH_REQUIRE_HTTPS_VIDEO_URL=false, "
        "VIDBATCH_ALLOW_PRIVATE_URLS=1). "
        "For trying vidbatch without a provider account; never in production.",
    ),
    simulator_port: int = typer.Option(
        8100,
        "--simulator-port",
        envvar="VIDBATCH_SIM_PORT",
        help="Port of the simulator started by --simulator.",
    ),
    simulator_gen_time: float = typer.Option(
        3.0,
        "--simulator-gen-time",
        envvar="VIDBATCH_SIM_GEN_TIME",
        min=0.0,
        help="Simulated generation time in seconds (with --simulator).",
    ),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        "--forwarded-allow-ips",
        envvar="VIDBATCH_FORWARDED_ALLOW_IPS",
        help="Comma-separated addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted (e.g. 127.0.0.1). Unset: forwarded headers are ignored.",
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

    async def go() -> None:
        nonlocal settings
        async with AsyncExitStack() as stack:
            if simulator:
                from vidbatch.embedded import EmbeddedServer
                from vidbatch.providers.simulator import SimulatorConfig
                from vidbatch.providers.simulator import create_app as create_simulator

                sim_app = create_simulator(SimulatorConfig(gen_time=simulator_gen_time))
                sim = await stack.enter_async_context(
                    EmbeddedServer(sim_app, host="127.0.0.1", port=simulator_port)
                )
                settings = simulator_settings(settings, sim.url)
                logging.getLogger("vidbatch.startup").warning(
                    "provider: the built-in GrsAI simulator at %s (--simulator; not for "
                    "production). Other processes use it with GRSAI_HOST=%s "
                    "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL=false VIDBATCH_ALLOW_PRIVATE_URLS=1",
                    sim.url,
                    sim.url,
                    extra={"action": "startup"},
                )
            log_startup(settings, role="serve", worker=not no_worker)
            app = create_app(settings, run_worker=not no_worker)
            # uvicorn would trust 127.0.0.1's forwarded headers by default: only a named proxy's.
            options: dict[str, Any] = {"proxy_headers": False}
            if forwarded_allow_ips:
                options = {"proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips}
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
                **options,
            )
            server = uvicorn.Server(config)
            await server.serve()

    try:
        loop_runner()(go())
    except OSError as exc:
        where = f"{host}:{port}"
        if simulator:
            where += f" or 127.0.0.1:{simulator_port}"
        fail(f"cannot listen on {where}: {exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        pass


def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run one round, print its summary, exit."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="Provider calls in flight (BATCH_TASK_CONCURRENCY)."
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        envvar="VIDBATCH_METRICS_PORT",
        min=1,
        max=65535,
        help="Serve this worker's Prometheus metrics at http://HOST:PORT/metrics "
        "(needs VIDBATCH_METRICS_TOKEN as a bearer token when that is set).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1",
        "--metrics-host",
        envvar="VIDBATCH_METRICS_HOST",
        help="Address of the --metrics-port server.",
    ),
) -> None:
    """Run the worker: submit, poll (with time-outs), archive and settle side by side, and
    deliver webhooks."""
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
            log_startup(settings, role="worker", worker=True)
            runner = None
            if metrics_port is not None:
                from vidbatch.worker.metrics_http import start_metrics_server

                runner = await start_metrics_server(rt, metrics_host, metrics_port)
            loop = WorkerLoop(rt)
            running = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with suppress(NotImplementedError):
                    running.add_signal_handler(sig, loop.stop)
            try:
                await loop.run()
            finally:
                if runner is not None:
                    await runner.cleanup()
        finally:
            await rt.close()

    run(go)
