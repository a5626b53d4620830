"""The operator dashboard in a real browser: headless Chromium against the app served on a
socket, its worker running, the simulator holding the videos until the test lets them finish
(so what the page shows never depends on the machine's speed)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import httpx
import pytest

# Without playwright the browser fixture skips (or fails) with the reason before a test
# reaches `expect`.
with contextlib.suppress(ImportError):
    from playwright.async_api import expect

from tests.browser.conftest import Serve, save_screenshot
from tests.conftest import ADMIN_TOKEN
from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch

#: How long the page may take to show what the test waits for.
PATIENCE_MS = 60_000

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Watched:
    """A page and everything that went wrong in it (script errors, CSP refusals)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )


#: Elements reaching past the viewport outside a horizontally scrolling table.
WIDE = """[...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                 && !e.closest('.table-wrap'))
    .map(e => e.tagName + '.' + e.className)"""


async def open_page(browser: Any, **options: Any) -> Watched:
    context = await browser.new_context(**options)
    return Watched(await context.new_page())


async def eventually(page: Any, expression: str, timeout: float = 60.0) -> None:
    """Wait until a JavaScript expression is true in the page (evaluated from outside,
    so the page's Content-Security-Policy needs no 'unsafe-eval')."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        await asyncio.sleep(0.1)


async def sign_in(page: Any, base: str, path: str) -> None:
    """Open ``path``, get sent to the sign-in form, sign in, land on ``path``."""
    await page.goto(base + path)
    assert "/admin/login" in page.url
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + path)


async def test_batch_progress_is_live_and_its_videos_play(
    browser: Any, served: Serve, sim: Any
) -> None:
    sim.configure(hold=True)  # the items run until the page has shown them running
    async with served() as app:
        caller = await new_account(app.rt.engine, credits=1000, name="acme")
        watched = await open_page(browser, viewport={"width": 1280, "height": 900})
        page = watched.page
        await sign_in(page, app.url, "/admin")
        created = await new_batch(app.rt.engine, caller, items(4))
        await page.goto(f"{app.url}/admin/batches/{created.batch_id}")

        status = page.locator("#batch-status")
        assert await status.text_content() in ("queued", "processing")
        first_label = await page.locator("#progress-label").text_content()
        assert first_label and first_label.startswith("0 of 4 ended")
        # everything the live part shows from now on, on this same document
        await page.evaluate("""() => {
            window.sameDocument = true;
            const label = document.getElementById('progress-label');
            window.labels = [label.textContent];  // it may already show them running
            new MutationObserver(() => window.labels.push(label.textContent))
                .observe(label, {childList: true, characterData: true, subtree: true});
        }""")
        await eventually(page, "window.labels.some(label => label.includes('running'))")
        sim.release()
        await expect(status).to_have_text("completed", timeout=PATIENCE_MS)
        assert await page.evaluate("window.sameDocument") is True  # never reloaded
        labels = await page.evaluate("window.labels")
        assert labels[-1] == "4 of 4 ended: 4 succeeded"
        assert any("running" in label for label in labels), labels
        width = await page.locator('#progress [data-seg="succeeded"]').evaluate(
            "el => el.style.width"
        )
        assert width == "100%"
        assert await page.locator("#credits-charged").text_content() == "40"
        assert "settled" in (await page.locator("#live-note").text_content() or "")

        # the finished page: a preview of each video, served by the provider, or by
        # vidbatch from the result store once archived (SQLite's default)
        await page.reload()
        videos = page.locator("#task-table video")
        assert await videos.count() == 4
        src = await videos.first.get_attribute("src")
        archived = f"{app.url}/results/videos/"
        assert src and src.startswith((sim.url, archived)) and ".mp4" in src
        if src.startswith(archived):  # its thumbnail is the poster, and it is shown
            poster = await videos.first.get_attribute("poster")
            assert poster and poster.startswith(f"{app.url}/results/thumbnails/")
            await eventually(
                page, "document.querySelector('#task-table img.thumb').naturalWidth === 64"
            )
        assert await videos.first.get_attribute("preload") == "none"
        async with page.expect_response(lambda r: r.url == src) as answer:
            await videos.first.evaluate("v => { v.preload = 'metadata'; v.load(); }")
        assert (await answer.value).status in (200, 206)
        await eventually(page, "document.querySelector('#task-table video').readyState >= 1")
        async with httpx.AsyncClient() as http:
            mp4 = await http.get(src)
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        save_screenshot(await page.screenshot(full_page=True), "batch.png")

        await page.goto(f"{app.url}/admin")
        assert await page.locator("#fig-hour").text_content() == "4"
        save_screenshot(await page.screenshot(full_page=True), "overview.png")

        # phone width: the page itself never scrolls sideways, only its tables do
        await page.set_viewport_size({"width": 390, "height": 844})
        for path in (
            "/admin",
            "/admin/batches",
            f"/admin/batches/{created.batch_id}",
            "/admin/accounts",
        ):
            await page.goto(app.url + path)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (path, overflow, await page.evaluate(WIDE))
        # the keyboard reaches the skip link first, and it is visible when focused
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent")
        assert focused == "Skip to content"
        assert watched.problems == []


async def test_cancel_a_running_batch_from_the_page(browser: Any, served: Serve, sim: Any) -> None:
    # two tasks at a time at the provider, held there until released: the other four are
    # still waiting when we cancel, however long the page takes
    sim.configure(hold=True)
    async with served(provider_max_inflight=2) as app:
        caller = await new_account(app.rt.engine, credits=1000, name="acme")
        created = await new_batch(app.rt.engine, caller, items(6))
        watched = await open_page(browser)
        page = watched.page
        await sign_in(page, app.url, f"/admin/batches/{created.batch_id}")
        await expect(page.locator("#batch-status")).to_have_text("processing", timeout=PATIENCE_MS)

        await page.get_by_role("link", name="Cancel batch…").click()
        await page.wait_for_url(f"{app.url}/admin/batches/{created.batch_id}/cancel")
        assert await page.get_by_role("heading", level=1).text_content() == "Cancel this batch?"
        await page.get_by_role("button", name="Cancel the batch").click()
        await page.wait_for_url(f"{app.url}/admin/batches/{created.batch_id}")

        flash = await page.get_by_role("status").first.text_content() or ""
        found = re.search(
            r"(\d) item\(s\) cancelled and (\d+) credits refunded now; 2 item\(s\) still running",
            flash,
        )
        assert found, flash
        cancelled, refunded = int(found.group(1)), int(found.group(2))
        assert cancelled == 4 and refunded == 10 * cancelled
        # the tasks that were running finish; then the batch settles as cancelled
        assert sim.release() == 2
        await expect(page.locator("#batch-status")).to_have_text("cancelled", timeout=PATIENCE_MS)
        assert await page.locator("#credits-refunded").text_content() == str(refunded)
        charged = int(await page.locator("#credits-charged").text_content() or "-1")
        assert charged == 60 - refunded
        assert await balance(app.rt.engine, caller.account_id) == (1000 - charged, 0)
        await assert_audit_clean(app.rt.engine)
        assert watched.problems == []


async def test_a_new_key_is_shown_once(browser: Any, served: Serve, sim: Any) -> None:
    async with served() as app:
        caller = await new_account(app.rt.engine, credits=100, name="acme")
        watched = await open_page(browser)
        page = watched.page
        await sign_in(page, app.url, "/admin/accounts")

        section = page.locator(f"#account-{caller.account_id}")
        await section.get_by_label("Name").fill("browser key")
        await section.get_by_label("Rate limit per minute").fill("30")
        await section.get_by_role("button", name="Create key").click()
        await page.wait_for_url(re.compile(r".*/admin/keys/new/.+"))
        api_key = await page.locator("#new-api-key").text_content() or ""
        secret = await page.locator("#new-webhook-secret").text_content() or ""
        assert api_key.startswith("vb_") and secret

        await page.reload()
        assert await page.get_by_role("heading", level=1).text_content() == "Already shown"
        assert api_key not in await page.content()

        await page.goto(f"{app.url}/admin/accounts")
        content = await page.content()
        assert "browser key" in content
        assert api_key not in content and secret not in content
        # the only complaint: the page answered 410 Gone when reloaded, as it should
        assert [p for p in watched.problems if "410 (Gone)" not in p] == []
