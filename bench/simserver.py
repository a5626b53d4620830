"""The GrsAI simulator in its own process, with what the benchmarks need to read from it.

    python -m bench.simserver [--config JSON]

Serves :func:`vidbatch.providers.simulator.create_app` on a free loopback port (printed on
the first line of stdout as ``PORT <n>``), from a socket created with ``IPPROTO_TCP`` so
that accepted connections get ``TCP_NODELAY``. Adds, for the benchmarks only:

* ``GET /_bench/tasks``: every task with its creation and finish times (wall clock, epoch
  seconds) and its drawn generation time;
* ``GET /_bench/callbacks``: every final (non-running) callback POSTed, with the wall time
  its delivery started and the time it was answered;
* ``POST /_bench/hook``: a sink answering 200, usable as a customer webhook URL.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

import uvicorn
from fastapi import Request

from vidbatch.providers.simulator import SimulatorConfig, create_app
from vidbatch.providers.simulator.callbacks import CallbackDispatcher

FINAL_CALLBACKS: list[dict[str, Any]] = []
HOOKS: list[float] = []


def _instrument_callbacks() -> None:
    original = CallbackDispatcher._post

    async def _post(self: CallbackDispatcher, task: Any, body: dict[str, Any]) -> None:
        sent = time.time()
        await original(self, task, body)
        if body.get("status") != "running":
            FINAL_CALLBACKS.append(
                {
                    "remote_id": task.id,
                    "status": body.get("status"),
                    "sent": sent,
                    "answered": time.time(),
                }
            )

    CallbackDispatcher._post = _post  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="{}", help="SimulatorConfig fields as JSON")
    args = parser.parse_args()
    config = SimulatorConfig.model_validate(json.loads(args.config))
    _instrument_callbacks()
    app = create_app(config)
    state = app.state.sim
    offset = time.time() - time.monotonic()  # the simulator's clock is time.monotonic

    @app.get("/_bench/tasks")
    async def bench_tasks() -> list[dict[str, Any]]:
        return [
            {
                "remote_id": t.id,
                "prompt": t.prompt,
                "created": t.created_at + offset,
                "done": (t.done_at + offset) if t.done_at is not None else None,
                "gen_time": t.gen_time,
            }
            for t in state.tasks.values()
        ]

    @app.get("/_bench/callbacks")
    async def bench_callbacks() -> list[dict[str, Any]]:
        return FINAL_CALLBACKS

    @app.post("/_bench/hook")
    async def bench_hook(request: Request) -> dict[str, bool]:
        await request.body()
        HOOKS.append(time.time())
        return {"ok": True}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, lifespan="on"
        )
    )
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
