"""Pytest fixtures running the GrsAI simulator over real HTTP.

``simulator`` (session scope) starts it once with uvicorn on a free port in a background
thread; ``sim`` (function scope) gives each test a clean one: no tasks, no stats, zero
generation time and no faults. Its clock is real time plus what tests skipped with
``sim.advance(seconds)``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from vidbatch.providers.simulator import SimulatorConfig, create_app

#: What every test starts from: instant tasks, no faults, a fixed seed.
TEST_DEFAULTS = SimulatorConfig(gen_time=0.0, seed=1234, callback_interval=0.05)


class SimClock:
    """The simulator's clock in tests: real time plus what the tests skipped forward."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


class SimulatorHandle:
    """A running simulator: its URL, its clock and synchronous access to its control API."""

    def __init__(self, url: str, clock: SimClock | None = None) -> None:
        self.url = url
        self.clock = clock or SimClock()
        self._http = httpx.Client(base_url=url, timeout=10)

    def advance(self, seconds: float) -> None:
        """Move the simulator's time forward (generation times, result TTLs, late callbacks)
        instead of waiting for it."""
        self.clock.skipped += seconds

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change some knobs (see SimulatorConfig); returns the whole config."""
        response = self._http.post("/_sim/config", json=knobs)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        """Forget tasks, stats and records (knobs are kept)."""
        self._http.post("/_sim/reset").raise_for_status()

    def restore_defaults(self) -> None:
        """Knobs back to the test defaults, then reset."""
        self.configure(**TEST_DEFAULTS.model_dump())
        self.reset()

    def release(self) -> int:
        """Let the held tasks finish (see the ``hold`` knob and ``[sim:hold]``)."""
        response = self._http.post("/_sim/release")
        response.raise_for_status()
        return int(response.json()["released"])

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_sim/stats"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._get("/_sim/requests"))

    def callbacks(self) -> list[dict[str, Any]]:
        return list(self._get("/_sim/callbacks"))

    def tasks(self) -> list[dict[str, Any]]:
        return list(self._get("/_sim/tasks"))

    def config(self) -> dict[str, Any]:
        return dict(self._get("/_sim/config"))

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()


def _free_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections accepted from a
    # socket that says so, and without it every request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorHandle]:
    """One simulator for the whole test session, stopped at the end."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    clock = SimClock()
    config = uvicorn.Config(
        create_app(TEST_DEFAULTS, clock=clock),
        log_level="warning",
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="grsai-simulator", daemon=True
    )
    thread.start()
    handle = SimulatorHandle(f"http://127.0.0.1:{port}", clock)
    deadline = time.monotonic() + 60
    while True:
        try:
            handle.stats()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the simulator did not start") from None
            time.sleep(0.02)
    try:
        yield handle
    finally:
        handle.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def sim(simulator: SimulatorHandle) -> SimulatorHandle:
    """The session's simulator, reset to the test defaults for this test."""
    simulator.restore_defaults()
    return simulator
