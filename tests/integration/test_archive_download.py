"""The archive's download over real HTTP: redirects are followed by hand and each hop's
address is checked, so a redirect cannot lead to a private address. Name resolution is
replaced (test names resolve to loopback, and only 10/8 counts as private here): the point
is which hop is refused, before which connection."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vidbatch.domain.archive import ArchiveGiveUp
from vidbatch.providers.simulator.app import sample_video
from vidbatch.worker import archive

VIDEO = sample_video()


class Origin:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A file server: /video.mp4, and redirects to other (test) hosts."""
    state = Origin()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(f"{request.host}{request.path}")
        if request.path == "/video.mp4":
            return web.Response(body=VIDEO, content_type="video/mp4")
        if request.path == "/loop":  # to itself, for ever
            return web.Response(status=302, headers={"Location": "/loop"})
        target = request.query.get("to", "")
        return web.Response(status=302, headers={"Location": target})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {
        "cdn.example": "127.0.0.1",
        "mirror.example": "127.0.0.1",
        "intranet.example": "10.1.2.3",
    }

    async def resolve(host: str, port: int) -> list[str]:
        return [names.get(host, host)]

    monkeypatch.setattr(archive, "resolve", resolve)
    monkeypatch.setattr(archive, "refused_address", lambda address: address.startswith("10."))


async def _download(url: str, dest: Path) -> archive.Downloaded:
    async with aiohttp.ClientSession() as http:
        return await archive.download(http, url, dest, max_bytes=10_000_000, allow_private=False)


async def test_a_redirect_to_a_public_host_is_followed(
    origin: Origin, fake_dns: Any, tmp_path: Path
) -> None:
    to = f"http://mirror.example:{origin.port}/video.mp4"
    got = await _download(f"http://cdn.example:{origin.port}/go?to={to}", tmp_path / "v")
    assert got.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert (tmp_path / "v").read_bytes() == VIDEO
    # the Host each hop was asked for is the URL's, though the connection went to the
    # address that was checked
    assert origin.hits == [
        f"cdn.example:{origin.port}/go",
        f"mirror.example:{origin.port}/video.mp4",
    ]


async def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    origin: Origin, fake_dns: Any, tmp_path: Path
) -> None:
    to = f"http://intranet.example:{origin.port}/video.mp4"
    with pytest.raises(ArchiveGiveUp, match=r"private address refused: intranet\.example"):
        await _download(f"http://cdn.example:{origin.port}/go?to={to}", tmp_path / "v")
    assert origin.hits == [f"cdn.example:{origin.port}/go"]  # never reached the second hop


async def test_too_many_redirects_give_up(origin: Origin, fake_dns: Any, tmp_path: Path) -> None:
    with pytest.raises(ArchiveGiveUp, match="too many redirects"):
        await _download(f"http://cdn.example:{origin.port}/loop", tmp_path / "v")
    assert len(origin.hits) == archive.MAX_REDIRECTS + 1
