"""/docs in a real browser with every request off this machine refused: Swagger UI draws
the API from local assets and the Content-Security-Policy refuses nothing it needs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.browser.conftest import Serve, save_screenshot


async def test_docs_render_offline_under_the_csp(browser: Any, served: Serve, sim: Any) -> None:
    async with served() as app:
        page = await browser.new_page()
        refused: list[str] = []
        problems: list[str] = []

        async def only_local(route: Any) -> None:
            if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                await route.continue_()
            else:
                refused.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_local)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        await page.goto(f"{app.url}/docs")
        title = page.locator(".swagger-ui .info .title")
        try:
            await title.wait_for(timeout=15_000)
        except Exception:
            raise AssertionError(f"Swagger UI did not draw: {problems} {refused}") from None
        assert "vidbatch" in await title.inner_text()
        await page.locator(".opblock").first.wait_for()
        assert refused == []
        assert not [p for p in problems if "Content Security Policy" in p], problems
        save_screenshot(await page.screenshot(full_page=False), "docs.png")
