"""Signing in and out. Wrong tokens are throttled per client address together with the
admin API's (``vidbatch.domain.throttle``); a session is recorded server-side at sign-in
and deleted at sign-out."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import Response

from vidbatch.api.app import client_address, runtime_of
from vidbatch.clock import utcnow
from vidbatch.services import admin_sessions
from vidbatch.web.render import redirect, render
from vidbatch.web.routing import page_router
from vidbatch.web.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Checked,
    admin_token,
    new_session,
    safe_next,
    session_expiry,
    session_id,
)

log = logging.getLogger(__name__)

router = page_router()


@router.get("/login")
async def login_form(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next", max_length=500)] = None,
    expired: Annotated[str | None, Query(max_length=5)] = None,
    signed_out: Annotated[str | None, Query(max_length=5)] = None,
) -> Response:
    admin_token(request)
    notice = (
        "You have signed out."
        if signed_out
        else "Your session has expired or is not valid: sign in again."
        if expired
        else None
    )
    return render(
        request, "login.html", {"next": safe_next(next_url), "notice": notice, "error": None}
    )


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=1000)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=500)] = "/admin",
) -> Response:
    expected = admin_token(request)
    rt = runtime_of(request)
    client = client_address(request)
    wait = rt.admin_failures.retry_after(client, rt.clock.monotonic())
    if wait is not None:
        log.warning("dashboard sign-in throttled", extra={"action": "dashboard_login"})
        throttled = render(
            request,
            "login.html",
            {
                "next": safe_next(next_url),
                "notice": None,
                "error": f"Too many wrong tokens: try again in {wait} s.",
            },
            status=429,
        )
        throttled.headers["Retry-After"] = str(wait)
        return throttled
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        rt.admin_failures.failed(client, rt.clock.monotonic())
        log.warning(
            "dashboard sign-in refused", extra={"action": "dashboard_login", "client": client}
        )
        return render(
            request,
            "login.html",
            {"next": safe_next(next_url), "notice": None, "error": "Wrong token."},
            status=401,
        )
    rt.admin_failures.succeeded(client)
    now = utcnow()
    value = new_session(expected, now=now)
    await admin_sessions.open_session(
        rt.engine, session_id(value), expires_at=session_expiry(value), now=now
    )
    response = redirect(request, safe_next(next_url))
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    log.info("dashboard sign-in", extra={"action": "dashboard_login"})
    return response


@router.post("/logout")
async def logout(request: Request, operator: Checked) -> Response:
    await admin_sessions.close_session(runtime_of(request).engine, session_id(operator.session))
    log.info("dashboard sign-out", extra={"action": "dashboard_logout"})
    response = redirect(request, "/admin/login?signed_out=1")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
