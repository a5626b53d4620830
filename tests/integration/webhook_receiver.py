"""A customer's webhook receiver for tests: a real aiohttp server on 127.0.0.1 that records
every request and answers as scripted (status codes, a delay, a redirect)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> str:
        return self.headers.get("x-webhook-event", "")


@dataclass
class Receiver:
    """Answers ``statuses`` in turn (then ``default``); ``delay`` seconds before answering."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    seen: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def at(self, path: str) -> str:
        return self.url + path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Received(
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.read(),
                at=time.monotonic(),
            )
        )
        if request.path == "/redirect":
            raise web.HTTPFound("/target")
        if self.delay:
            # released at teardown so that the server can stop at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
        status = self.statuses.pop(0) if self.statuses else self.default
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    def events(self) -> list[str]:
        return [r.event for r in self.seen]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free 127.0.0.1 port until the block ends."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()
