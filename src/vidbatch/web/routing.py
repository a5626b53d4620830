"""Dashboard routes answer with pages: every error becomes a page (a sign-in redirect, a
404, a 403 …), never JSON or a stack trace, and every answer carries the security
headers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from vidbatch.api.errors import limiter_of, status_for
from vidbatch.exceptions import NotFound, VidbatchError
from vidbatch.web.render import message_page, redirect
from vidbatch.web.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    AdminDisabled,
    CsrfRefused,
    SignInRequired,
    safe_next,
)

log = logging.getLogger(__name__)

ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]{1,64}$")]
#: Every response of the dashboard: no framing, no caching of operator data, only our own
#: scripts and styles; videos and their thumbnails may come from the provider's host or the
#: result store (a presigned S3 URL, a CDN).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' http: https:; "
        "media-src 'self' http: https:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _problems(exc: RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    )


def error_page(request: Request, exc: Exception) -> Response:
    """The page an error answers with."""
    if isinstance(exc, AdminDisabled):
        return message_page(
            request,
            404,
            "Dashboard disabled",
            "The operator dashboard is disabled on this server: VIDBATCH_ADMIN_TOKEN is not set.",
        )
    if isinstance(exc, SignInRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.headers.get("referer", "") or "/admin"
            target = target.split(str(request.base_url).rstrip("/"), 1)[-1]
        response = redirect(
            request,
            "/admin/login?" + urlencode({"next": safe_next(target), "expired": "1"}),
        )
        if SESSION_COOKIE in request.cookies:  # never clear a cookie this request did not bring
            response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response
    if isinstance(exc, CsrfRefused):
        return message_page(
            request,
            403,
            "Request refused",
            "This form did not carry a valid CSRF token. Go back, reload the page and try again.",
        )
    if isinstance(exc, RequestValidationError):
        return message_page(request, 400, "Invalid request", _problems(exc))
    if isinstance(exc, NotFound):
        return message_page(request, 404, "Not found", exc.message)
    if isinstance(exc, VidbatchError):
        status = status_for(exc)
        if status == 500:
            log.error("dashboard error", extra={"action": "dashboard", "code": exc.code})
        return message_page(
            request,
            status,
            "Not possible",
            exc.message if status != 500 else "Internal error.",
        )
    limiter_of(request).log(
        log,
        logging.ERROR,
        f"dashboard page failed: {type(exc).__name__}",
        key=("dashboard", type(exc).__name__, request.url.path, str(exc)[:200]),
        exc=exc,
        extra={"action": "dashboard"},
    )
    return message_page(
        request, 500, "Internal error", "Something went wrong; the error is in the log."
    )


def is_form(request: Request) -> bool:
    """True for the url-encoded body every dashboard form sends (or no body at all).
    Nothing else (multipart above all) is parsed: no form of the dashboard uploads anything."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind in ("", "application/x-www-form-urlencoded")


class PageRoute(APIRoute):
    """A dashboard route: its errors become pages, its answers carry the headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            response: Response
            try:
                if request.method == "POST" and not is_form(request):
                    response = message_page(
                        request,
                        415,
                        "Unsupported form",
                        "Dashboard forms are sent as application/x-www-form-urlencoded.",
                    )
                else:
                    response = await handler(request)
            except Exception as exc:
                response = error_page(request, exc)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if not request.url.path.startswith("/admin/static/"):
                response.headers["Cache-Control"] = "no-store"
            return response

        return page


def page_router() -> APIRouter:
    """A router of dashboard pages under ``/admin``."""
    return APIRouter(prefix="/admin", route_class=PageRoute)
