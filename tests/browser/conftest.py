"""Browser fixtures: headless Chromium driven by Playwright, and the app served over a real
socket with its embedded worker and the simulator as provider (SQLite only).

Without the ``playwright`` package or a Chromium binary the browser tests skip with the
reason, unless ``VIDBATCH_REQUIRE_BROWSER=1`` makes that a failure. The browser is the
system's Chromium (``VIDBATCH_CHROMIUM``, default ``/usr/bin/chromium``); Playwright's own
browser downloads are never used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_BROWSER = os.environ.get("VIDBATCH_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("VIDBATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def why_no_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    found = shutil.which(CHROMIUM) if os.sep not in CHROMIUM else CHROMIUM
    if not found or not os.access(found, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VIDBATCH_CHROMIUM)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = why_no_browser()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"VIDBATCH_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Served:
    url: str
    rt: Any


#: What the ``served`` fixture gives: ``served(**settings)`` opens a :class:`Served` app.
Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def served(settings_factory: Any, engine: Any) -> Serve:
    """``async with served(**settings) as app:`` the app on a free port, worker running."""
    from vidbatch.api.app import create_app
    from vidbatch.embedded import EmbeddedServer
    from vidbatch.runtime import Runtime

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[Served]:
        # Tasks the simulator holds are polled for as long as a slow machine needs.
        defaults = {"poll_intervals": "0.3,0.3,0.3", "worker_idle_seconds": 0.2}
        settings = settings_factory(**{**defaults, "max_poll_count": 100_000, **overrides})
        rt = await Runtime.open(settings, engine=engine)
        try:
            app = create_app(settings, runtime=rt, run_worker=True)
            async with EmbeddedServer(app) as server:
                yield Served(server.url, rt)
        finally:
            await rt.close()

    return serve


def save_screenshot(data: bytes, name: str) -> Path:
    """Keep a screenshot under test-artifacts/; with VIDBATCH_UPDATE_SCREENSHOTS=1 also as
    the documentation's copy under docs/screenshots/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(data)
    if os.environ.get("VIDBATCH_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / name).write_bytes(data)
    return path
