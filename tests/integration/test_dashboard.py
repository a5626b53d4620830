"""The operator dashboard on SQLite and PostgreSQL, driven over HTTP in-process like a browser
without JavaScript would: signing in, what the pages show, and what their forms do."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN
from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch
from tests.integration.worker_helpers import batch_row, run_until_settled
from vidbatch.api.app import create_app
from vidbatch.clock import FakeClock, utcnow
from vidbatch.db.schema import credit_ledger
from vidbatch.services import accounts as account_svc
from vidbatch.web import session
from vidbatch.web.pages import batches as batch_pages

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient) -> str:
    """Sign in through the form; returns the CSRF token the pages carry."""
    response = await client.post("/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin"})
    assert response.status_code == 303, response.text
    page = await client.get("/admin")
    assert page.status_code == 200, page.text
    match = CSRF.search(page.text)
    assert match
    return html.unescape(match.group(1))


def text_of(response: httpx.Response) -> str:
    """The page's text, tags dropped and whitespace squeezed (what a reader sees)."""
    plain = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.text, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", plain)).split())


async def follow(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 303, (response.status_code, response.text)
    return await client.get(response.headers["location"])


def shown_once(element_id: str, page: str) -> str:
    """The text of the element a page shows a new secret in."""
    found = re.search(rf'id="{element_id}">([^<]+)<', page)
    assert found is not None, f"no #{element_id} on the page"
    return html.unescape(found.group(1))


# --- signing in ------------------------------------------------------------------------------


async def test_sign_in_refuses_a_wrong_token_and_sets_a_strict_cookie(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get("/admin/batches")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/admin/login?next=%2Fadmin%2Fbatches")

    form = await client.get("/admin/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    assert form.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]

    wrong = await client.post("/admin/login", data={"token": "nope", "next": "/admin"})
    assert wrong.status_code == 401
    assert "Wrong token." in text_of(wrong) and 'name="token"' in wrong.text
    assert "set-cookie" not in wrong.headers

    right = await client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin/accounts"}
    )
    assert (right.status_code, right.headers["location"]) == (303, "/admin/accounts")
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{session.SESSION_COOKIE}=")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/admin" in attributes
    assert ADMIN_TOKEN not in cookie
    assert (await client.get("/admin/accounts")).status_code == 200

    # somewhere else after signing in: never another site
    away = await client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "next": "//evil.example/admin"}
    )
    assert away.headers["location"] == "/admin"


async def test_sign_out_ends_the_session(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    out = await client.post("/admin/logout", data={"csrf": csrf})
    assert out.headers["location"] == "/admin/login?signed_out=1"
    assert "You have signed out." in text_of(await client.get(out.headers["location"]))
    assert (await client.get("/admin")).status_code == 303


async def test_an_expired_forged_or_garbage_session_goes_back_to_sign_in(
    client: httpx.AsyncClient,
) -> None:
    past = session.new_session(
        ADMIN_TOKEN, now=utcnow() - timedelta(seconds=session.SESSION_SECONDS + 1)
    )
    other_token = session.new_session("another-token", now=utcnow())
    # signed with the right key but never opened by a sign-in: unknown to the server
    unopened = session.new_session(ADMIN_TOKEN, now=utcnow())
    await sign_in(client)
    good = client.cookies[session.SESSION_COOKIE]
    client.cookies.clear()
    for value in ("garbage", past, other_token, good[:-2] + "xx", "1.2.3", "", unopened):
        client.cookies.set(session.SESSION_COOKIE, value, path="/admin")
        page = await client.get("/admin/batches?status=queued")
        assert page.status_code == 303, value
        assert page.headers["location"] == (
            "/admin/login?next=%2Fadmin%2Fbatches%3Fstatus%3Dqueued&expired=1"
        )
        login = await client.get(page.headers["location"])
        assert "Your session has expired" in text_of(login)
        live = await client.get("/admin/batches/x/progress")
        assert (live.status_code, live.json()) == (401, {"signed_in": False})
    client.cookies.clear()
    client.cookies.set(session.SESSION_COOKIE, good, path="/admin")
    assert (await client.get("/admin")).status_code == 200


async def test_a_signed_out_session_cookie_no_longer_works(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    stolen = client.cookies[session.SESSION_COOKIE]
    out = await client.post("/admin/logout", data={"csrf": csrf})
    assert out.status_code == 303
    # the old cookie, presented again (as by whoever copied it): the session is over
    client.cookies.set(session.SESSION_COOKIE, stolen, path="/admin")
    again = await client.get("/admin")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/admin/login?")
    refused = await client.post("/admin/logout", data={"csrf": csrf})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/admin/login")


async def test_a_request_without_the_cookie_never_clears_it(client: httpx.AsyncClient) -> None:
    # A link from another site arrives without the cookie (SameSite=Strict): the answer
    # sends the browser to sign in but must not delete the operator's cookie.
    await sign_in(client)
    cookie = client.cookies[session.SESSION_COOKIE]
    client.cookies.clear()
    anonymous = await client.get("/admin/batches")
    assert anonymous.status_code == 303
    assert "set-cookie" not in anonymous.headers
    client.cookies.set(session.SESSION_COOKIE, cookie, path="/admin")
    assert (await client.get("/admin/batches")).status_code == 200
    # a cookie the request did bring, and that is no good, is cleared
    client.cookies.set(session.SESSION_COOKIE, "garbage", path="/admin")
    bad = await client.get("/admin/batches")
    assert bad.status_code == 303
    assert bad.headers["set-cookie"].startswith(f"{session.SESSION_COOKIE}=")


async def test_wrong_tokens_at_sign_in_are_throttled_per_address(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    clock = FakeClock()
    runtime.clock = clock
    for _ in range(10):
        wrong = await client.post("/admin/login", data={"token": "w" * 40})
        assert wrong.status_code == 401
    throttled = await client.post("/admin/login", data={"token": "w" * 40})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "60"
    assert "Too many wrong tokens" in text_of(throttled)
    # the right token is refused too while throttled: a refusal tells a guesser nothing
    right = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert right.status_code == 429 and "set-cookie" not in right.headers
    # another address is not held back
    elsewhere = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client.app, client=("10.9.8.7", 4000)),  # type: ignore[attr-defined]
        base_url="http://vidbatch.test",
    )
    async with elsewhere:
        assert (await elsewhere.post("/admin/login", data={"token": "w" * 40})).status_code == 401
    clock.advance(59)
    still = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert (still.status_code, still.headers["retry-after"]) == (429, "1")
    clock.advance(1)
    assert (await client.post("/admin/login", data={"token": ADMIN_TOKEN})).status_code == 303


async def test_without_an_admin_token_the_dashboard_does_not_exist(
    settings_factory: Any, runtime: Any
) -> None:
    app = create_app(settings_factory(admin_token=None), runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidbatch.test") as c:
        for method, path in (
            ("GET", "/admin"),
            ("GET", "/admin/login"),
            ("POST", "/admin/login"),
            ("GET", "/admin/batches/x"),
            ("GET", "/admin/static/dashboard.css"),
        ):
            response = await c.request(method, path, data={"token": ""})
            assert response.status_code == 404, (method, path)
            assert "VIDBATCH_ADMIN_TOKEN is not set" in text_of(response)


# --- pages -----------------------------------------------------------------------------------


async def test_pages_show_the_real_figures(
    client: httpx.AsyncClient, runtime: Any, sim: Any
) -> None:
    acme = await new_account(runtime.engine, credits=1000, name="acme")
    other = await new_account(runtime.engine, credits=500, name="globex")
    done = await new_batch(runtime.engine, acme, items(3))
    await run_until_settled(runtime)
    waiting = await new_batch(
        runtime.engine, other, [{"prompt": "a lighthouse <b>at dusk</b>", "model": "sora-2"}] * 2
    )
    await sign_in(client)

    overview = await client.get("/admin")
    assert overview.status_code == 200
    seen = text_of(overview)
    assert "Tasks by status now" in seen and "Throughput, last hour" in seen
    assert re.search(r'data-status="succeeded">3<', overview.text)
    assert re.search(r'data-status="pending">2<', overview.text)
    assert re.search(r'id="fig-hour">3<', overview.text)  # the three settled tasks
    assert re.search(r'id="fig-waiting">2<', overview.text)
    assert 'id="fig-oldest">—<' not in overview.text  # two tasks wait: they have an age
    assert "Submits 3 0 0.0%" in seen  # every submit accepted by the simulator
    assert done.batch_id in overview.text and waiting.batch_id in overview.text

    listing = await client.get("/admin/batches")
    seen = text_of(listing)
    row = re.search(rf'<tr data-batch="{done.batch_id}">(.*?)</tr>', listing.text, re.S)
    assert row
    cells = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", row.group(1))).split())
    assert "acme completed" in cells and "3 of 3 ended: 3 succeeded" in cells
    assert "30 30 0 matches" in cells  # reserved, charged, refunded, ledger
    assert "0 of 2 ended: 2 pending" in seen
    only_globex = text_of(await client.get(f"/admin/batches?account={other.account_id}"))
    assert waiting.batch_id in only_globex and done.batch_id not in only_globex
    by_status = text_of(await client.get("/admin/batches?status=completed"))
    assert done.batch_id in by_status and waiting.batch_id not in by_status
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    assert "No batches match." in text_of(await client.get(f"/admin/batches?from={tomorrow}"))
    today = utcnow().date().isoformat()
    assert done.batch_id in text_of(await client.get(f"/admin/batches?to={today}"))
    bad = await client.get("/admin/batches?from=yesterday")
    assert bad.status_code == 400 and "not a date" in text_of(bad)

    detail = await client.get(f"/admin/batches/{done.batch_id}")
    assert detail.status_code == 200
    seen = text_of(detail)
    assert "Status completed" in seen and "3 of 3 ended" in seen
    videos = re.findall(r'<video controls preload="none"[^>]*src="([^"]+)"', detail.text)
    # the archived copy where a result store is configured (SQLite's default), else the
    # provider's URL
    archived = "http://vidbatch.test/results/videos/"
    assert len(videos) == 3 and all(v.startswith((sim.url, archived)) for v in videos)
    if videos[0].startswith(archived):
        posters = re.findall(r'<video [^>]*poster="([^"]+)"', detail.text)
        assert len(posters) == 3 and "/results/thumbnails/" in posters[0]
        assert "archive: stored" in text_of(detail)
    assert re.search(r'id="ledger".*reserve.*settle', detail.text, re.S)
    assert "The ledger matches the batch's own figures." in seen
    assert 'href="#billing"' in detail.text and 'id="webhooks"' in detail.text
    assert "Retry failed items" not in seen and "Cancel batch" not in seen

    other_detail = await client.get(f"/admin/batches/{waiting.batch_id}")
    assert "a lighthouse &lt;b&gt;at dusk&lt;/b&gt;" in other_detail.text  # escaped
    assert "Cancel batch…" in text_of(other_detail)
    live = (await client.get(f"/admin/batches/{waiting.batch_id}/progress")).json()
    assert (live["status"], live["settled"], live["progress"]["pending"]) == ("queued", False, 2)
    assert live["credits"] == {"reserved": 20, "charged": 0, "refunded": 0, "held": 20}

    accounts_page = text_of(await client.get("/admin/accounts"))
    assert "acme 1000 0 1000" not in accounts_page  # acme paid for its batch
    assert "acme 970 0 970" in accounts_page and "globex 500 20 480" in accounts_page

    css = await client.get("/admin/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await client.get("/admin/static/nope.js")).status_code == 404


async def test_tasks_are_paged_and_filtered(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=10_000)
    created = await new_batch(runtime.engine, caller, items(batch_pages.TASKS_PER_PAGE + 5))
    await sign_in(client)
    first = await client.get(f"/admin/batches/{created.batch_id}")
    assert first.text.count("<tr data-task=") == batch_pages.TASKS_PER_PAGE
    assert "page 1 of 2" in text_of(first) and "Next tasks" in text_of(first)
    second = await client.get(f"/admin/batches/{created.batch_id}?page=2")
    assert second.text.count("<tr data-task=") == 5 and "Previous tasks" in text_of(second)
    none = await client.get(f"/admin/batches/{created.batch_id}?status=succeeded")
    assert "No tasks." in text_of(none)
    assert (await client.get(f"/admin/batches/{created.batch_id}?page=0")).status_code == 400


async def test_a_missing_batch_is_a_404_page(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    for path in ("/admin/batches/nope", "/admin/batches/nope/cancel"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("text/html")
        assert "batch nope not found" in text_of(missing)
    post = await client.post("/admin/batches/nope/cancel", data={"csrf": csrf})
    assert post.status_code == 404
    assert (await client.get("/admin/batches/x/explode")).status_code == 404


# --- actions ---------------------------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(runtime.engine, caller, items(2))
    await sign_in(client)
    for data in ({}, {"csrf": "forged"}):
        for path in (
            f"/admin/batches/{created.batch_id}/cancel",
            f"/admin/accounts/{caller.account_id}/keys",
            f"/admin/keys/{caller.key_id}/deactivate",
            "/admin/logout",
        ):
            refused = await client.post(path, data=data)
            assert refused.status_code == 403, path
            assert "CSRF" in text_of(refused)
    assert (await batch_row(runtime.engine, created.batch_id)).status == "queued"
    async with runtime.engine.connect() as conn:
        keys = await account_svc.list_keys(conn, caller.account_id)
    assert [(k["id"], k["is_active"]) for k in keys] == [(caller.key_id, True)]


async def test_cancel_through_the_page_refunds(client: httpx.AsyncClient, runtime: Any) -> None:
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(runtime.engine, caller, items(3))
    assert await balance(runtime.engine, caller.account_id) == (1000, 30)
    csrf = await sign_in(client)

    confirm = await client.get(f"/admin/batches/{created.batch_id}/cancel")
    assert confirm.status_code == 200
    assert "Cancel this batch?" in text_of(confirm)
    assert f'action="/admin/batches/{created.batch_id}/cancel"' in confirm.text

    page = await follow(
        client, await client.post(f"/admin/batches/{created.batch_id}/cancel", data={"csrf": csrf})
    )
    seen = text_of(page)
    assert (
        "3 item(s) cancelled and 30 credits refunded now; nothing is left running: "
        "the batch has ended (cancelled)." in seen
    )
    assert "Status cancelled" in seen
    assert await balance(runtime.engine, caller.account_id) == (1000, 0)
    async with runtime.engine.connect() as conn:
        kinds = [
            r.type
            for r in (
                await conn.execute(
                    select(credit_ledger)
                    .where(credit_ledger.c.batch_id == created.batch_id)
                    .order_by(credit_ledger.c.id)
                )
            ).all()
        ]
    assert kinds == ["reserve", "refund"]
    await assert_audit_clean(runtime.engine)
    # the flash message is shown once
    assert "refunded now" not in text_of(await client.get(f"/admin/batches/{created.batch_id}"))

    # the batch ended meanwhile: the API's message, nothing changes
    again = await follow(
        client, await client.post(f"/admin/batches/{created.batch_id}/cancel", data={"csrf": csrf})
    )
    assert f"batch {created.batch_id} already ended (cancelled)" in text_of(again)
    assert 'role="alert"' in again.text
    await assert_audit_clean(runtime.engine)


async def test_retry_failed_and_resend_through_the_page(
    client: httpx.AsyncClient, runtime: Any, sim: Any
) -> None:
    sim.configure(error_rate=1.0)
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(
        runtime.engine, caller, {"items": items(2), "webhook_url": "http://127.0.0.1:9/hook"}
    )
    await run_until_settled(runtime)
    sim.configure(error_rate=0.0)
    csrf = await sign_in(client)
    detail = text_of(await client.get(f"/admin/batches/{created.batch_id}"))
    assert "Status failed" in detail and "Retry failed items…" in detail
    assert "Resend webhook…" in detail and "batch.completed" in detail

    child_page = await follow(
        client,
        await client.post(f"/admin/batches/{created.batch_id}/retry-failed", data={"csrf": csrf}),
    )
    seen = text_of(child_page)
    assert "Retry batch" in seen and "2 item(s), 20 credits reserved" in seen
    assert f"retry of {created.batch_id}" in seen

    resent = await follow(
        client,
        await client.post(f"/admin/batches/{created.batch_id}/resend-webhook", data={"csrf": csrf}),
    )
    assert "Webhook event batch.completed will be sent again now." in text_of(resent)

    no_hook = await new_batch(runtime.engine, caller, items(1))
    refused = await follow(
        client,
        await client.post(f"/admin/batches/{no_hook.batch_id}/resend-webhook", data={"csrf": csrf}),
    )
    assert "has no webhook events" in text_of(refused)
    await assert_audit_clean(runtime.engine)


async def test_a_new_key_is_shown_once_and_never_listed(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    caller = await new_account(runtime.engine, credits=100, name="acme")
    csrf = await sign_in(client)
    created = await client.post(
        f"/admin/accounts/{caller.account_id}/keys",
        data={"csrf": csrf, "name": "render farm", "rate_limit_per_min": "42"},
    )
    assert created.status_code == 303
    shown_at = created.headers["location"]
    shown = await client.get(shown_at)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    api_key = shown_once("new-api-key", shown.text)
    secret = shown_once("new-webhook-secret", shown.text)
    assert api_key.startswith(account_svc.KEY_PREFIX) and secret
    async with runtime.engine.connect() as conn:
        identity = await account_svc.verify_key(conn, api_key)
    assert identity is not None and identity.account_id == caller.account_id

    again = await client.get(shown_at)
    assert again.status_code == 410 and api_key not in again.text
    listing = await client.get("/admin/accounts")
    assert api_key not in listing.text and secret not in listing.text
    assert "render farm" in listing.text and api_key[:8] in listing.text
    assert 'value="42"' in listing.text


async def test_keys_and_credits_from_the_accounts_page(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    caller = await new_account(runtime.engine, credits=100, name="acme")
    csrf = await sign_in(client)
    key = caller.key_id
    assert key is not None

    off = await follow(
        client, await client.post(f"/admin/keys/{key}/deactivate", data={"csrf": csrf})
    )
    assert "deactivated" in text_of(off)
    async with runtime.engine.connect() as conn:
        assert (await account_svc.get_key(conn, key))["is_active"] is False
    await client.post(f"/admin/keys/{key}/activate", data={"csrf": csrf})
    limited = await follow(
        client,
        await client.post(
            f"/admin/keys/{key}/rate-limit", data={"csrf": csrf, "rate_limit_per_min": "7"}
        ),
    )
    assert "7 requests per minute" in text_of(limited)
    async with runtime.engine.connect() as conn:
        stored = await account_svc.get_key(conn, key)
    assert (stored["is_active"], stored["rate_limit_per_min"]) == (True, 7)
    bad = await follow(
        client,
        await client.post(
            f"/admin/keys/{key}/rate-limit", data={"csrf": csrf, "rate_limit_per_min": "0"}
        ),
    )
    assert "more than 0" in text_of(bad)

    # adjusting credits asks first, then posts once with its reason
    review = await client.post(
        f"/admin/accounts/{caller.account_id}/adjust",
        data={"csrf": csrf, "credits": "-30", "reason": "goodwill fix", "idempotency_key": "adj-1"},
    )
    assert review.status_code == 200
    seen = text_of(review)
    assert "Remove 30 credits?" in seen and "Balance after 70" in seen
    assert await balance(runtime.engine, caller.account_id) == (100, 0)
    for _ in range(2):  # a double submit posts once
        done = await follow(
            client,
            await client.post(
                f"/admin/accounts/{caller.account_id}/adjust",
                data={
                    "csrf": csrf,
                    "credits": "-30",
                    "reason": "goodwill fix",
                    "idempotency_key": "adj-1",
                    "confirmed": "yes",
                },
            ),
        )
    assert "acme: -30 credits (goodwill fix); balance now 70." in text_of(done)
    assert await balance(runtime.engine, caller.account_id) == (70, 0)
    too_much = await follow(
        client,
        await client.post(
            f"/admin/accounts/{caller.account_id}/adjust",
            data={"csrf": csrf, "credits": "-500", "reason": "x", "confirmed": "yes"},
        ),
    )
    assert "credits" in text_of(too_much) and 'role="alert"' in too_much.text
    assert await balance(runtime.engine, caller.account_id) == (70, 0)
    await assert_audit_clean(runtime.engine)


async def test_forms_take_only_bounded_whole_numbers(
    client: httpx.AsyncClient, runtime: Any
) -> None:
    """A 12-digit rate limit is refused on the page (PostgreSQL's INTEGER would overflow);
    so are credits that are not plain whole numbers, or beyond the cap."""
    caller = await new_account(runtime.engine, credits=100, name="acme")
    csrf = await sign_in(client)
    key = caller.key_id
    assert key is not None
    for path in (f"/admin/keys/{key}/rate-limit", f"/admin/accounts/{caller.account_id}/keys"):
        for value in ("999999999999", "2147483648", "1000001"):
            bad = await follow(
                client, await client.post(path, data={"csrf": csrf, "rate_limit_per_min": value})
            )
            assert "Rate limit: at most 1000000" in text_of(bad), (path, value)
    async with runtime.engine.connect() as conn:
        assert (await account_svc.get_key(conn, key))["rate_limit_per_min"] == 60
        assert len(await account_svc.list_keys(conn, caller.account_id)) == 1
    for value in ("1_000", "+5", "5.0", "٥", "true"):
        bad = await follow(
            client,
            await client.post(
                f"/admin/accounts/{caller.account_id}/adjust",
                data={"csrf": csrf, "credits": value, "reason": "x", "confirmed": "yes"},
            ),
        )
        assert 'role="alert"' in bad.text and "Credits:" in text_of(bad), value
    assert await balance(runtime.engine, caller.account_id) == (100, 0)
    await assert_audit_clean(runtime.engine)


@pytest.mark.parametrize("path", ["/admin/accounts/nope/keys", "/admin/keys/nope/activate"])
async def test_actions_on_missing_things_are_404_pages(
    client: httpx.AsyncClient, path: str
) -> None:
    csrf = await sign_in(client)
    response = await client.post(path, data={"csrf": csrf})
    assert response.status_code == 404 and "not found" in text_of(response)
