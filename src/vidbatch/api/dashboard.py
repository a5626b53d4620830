"""The operator's dashboard under ``/admin``: server-rendered pages on the admin services.

Every figure and every action goes through ``vidbatch.services.admin`` and the same service
calls as the admin API (``/api/admin``); this module only renders and routes.

Signing in: the operator types ``VIDBATCH_ADMIN_TOKEN`` once; the answer is a session
cookie (HTTP-only, SameSite=Strict, path ``/admin``) holding an expiry and a nonce signed
with a key derived from the token, never the token itself. Changing the token ends every
session. Each form that changes something carries a CSRF token, an HMAC of the session,
checked before the action runs. With no admin token configured every page answers 404.

Live progress: the batch page polls ``/admin/batches/{id}/progress`` (a few numbers as
JSON) about once a second until the batch has settled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import mimetypes
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import status_for
from vidbatch.api.v1 import decode_cursor, encode_cursor
from vidbatch.clock import utcnow
from vidbatch.exceptions import InvalidInput, NotFound, VidbatchError
from vidbatch.metrics import Metrics
from vidbatch.services import accounts, batches
from vidbatch.services import admin as svc

log = logging.getLogger(__name__)

SESSION_COOKIE = "vidbatch_admin"
FLASH_COOKIE = "vidbatch_flash"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 8 * 3600
#: How long the page showing a new key's secrets can be opened (once) after creating it.
SHOW_ONCE_SECONDS = 600
TASKS_PER_PAGE = 25
BATCHES_PER_PAGE = 50
ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]{1,64}$")]
BATCH_STATUSES = ("queued", "processing", "completed", "partial", "failed", "cancelled")
TASK_STATUSES = (
    "pending",
    "queued",
    "submitting",
    "processing",
    "succeeded",
    "failed",
    "cancelled",
)
#: Every response of the dashboard: no framing, no caching of operator data, only our own
#: scripts and styles; videos may come from the provider's host.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self'; media-src 'self' http: https:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# --- sessions and CSRF (no I/O) ----------------------------------------------------------


def session_key(admin_token: str) -> bytes:
    """The key that signs sessions, derived from the admin token."""
    return hmac.new(admin_token.encode(), b"vidbatch dashboard session v1", hashlib.sha256).digest()


def _sign(admin_token: str, purpose: str, body: str) -> str:
    mac = hmac.new(session_key(admin_token), f"{purpose}:{body}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def new_session(admin_token: str, *, now: datetime) -> str:
    """A session cookie value: ``<expires>.<nonce>.<signature>``."""
    body = f"{int(now.timestamp()) + SESSION_SECONDS}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_sign(admin_token, 'session', body)}"


def valid_session(admin_token: str, value: str, *, now: datetime) -> bool:
    """True for a session signed with this token's key that has not expired."""
    body, _, signature = value.rpartition(".")
    expires, _, nonce = body.partition(".")
    if not (expires.isdigit() and nonce and signature):
        return False
    expected = _sign(admin_token, "session", body)
    return (
        hmac.compare_digest(signature.encode(), expected.encode())
        and int(expires) > now.timestamp()
    )


def csrf_token(admin_token: str, session: str) -> str:
    """The CSRF token of a session: every form that changes something sends it back."""
    return _sign(admin_token, "csrf", session)


def _pack_flash(admin_token: str, kind: str, text: str) -> str:
    body = base64.urlsafe_b64encode(json.dumps([kind, text]).encode()).decode().rstrip("=")
    return f"{body}.{_sign(admin_token, 'flash', body)}"


def _unpack_flash(admin_token: str, value: str) -> tuple[str, str] | None:
    body, _, signature = value.rpartition(".")
    if not body or not hmac.compare_digest(
        signature.encode(), _sign(admin_token, "flash", body).encode()
    ):
        return None
    try:
        kind, text = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None
    return str(kind), str(text)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if value and value.startswith("/admin") and "//" not in value and "\\" not in value:
        return value
    return "/admin"


# --- what the pages show (no I/O) --------------------------------------------------------


def progress(counts: dict[str, int], total: int | None = None) -> dict[str, Any]:
    """A batch's tasks as the progress bar shows them: counts and widths in percent."""
    parts = {
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "cancelled": counts.get("cancelled", 0),
        "running": counts.get("submitting", 0) + counts.get("processing", 0),
        "pending": counts.get("pending", 0) + counts.get("queued", 0),
    }
    whole = max(total if total is not None else sum(parts.values()), sum(parts.values()))
    ended = parts["succeeded"] + parts["failed"] + parts["cancelled"]
    widths = {k: round(100 * v / whole, 2) if whole else 0.0 for k, v in parts.items()}
    label = ", ".join(f"{v} {k}" for k, v in parts.items() if v) or "no tasks"
    return {
        **parts,
        "total": whole,
        "ended": ended,
        "widths": widths,
        "label": f"{ended} of {whole} ended: {label}",
    }


def counter_values(counter: Any) -> dict[str, float]:
    """A labelled Prometheus counter's totals by its one label."""
    out: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels:
                out[next(iter(sample.labels.values()))] = sample.value
    return out


def provider_figures(metrics: Metrics) -> dict[str, Any]:
    """Provider calls made by this process and how many went wrong. A submit is wrong
    unless it was accepted; a poll is wrong when it got no usable answer."""

    def rate(values: dict[str, float], is_error: Callable[[str], bool]) -> dict[str, Any]:
        total = int(sum(values.values()))
        errors = int(sum(v for outcome, v in values.items() if is_error(outcome)))
        return {
            "total": total,
            "errors": errors,
            "rate": round(100 * errors / total, 1) if total else None,
            "by_outcome": {k: int(v) for k, v in sorted(values.items())},
        }

    return {
        "submits": rate(counter_values(metrics.submits), lambda o: o != "ok"),
        "polls": rate(counter_values(metrics.polls), lambda o: o in ("transient", "not_found")),
    }


def age(since: datetime | None, now: datetime) -> str:
    """'3 h 02 min', '4 min 10 s', '12 s' — or '—'."""
    if since is None:
        return "—"
    seconds = max(0, int((now - since).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _when(value: str | datetime | None) -> str:
    if value is None:
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _excerpt(value: str | None, length: int = 80) -> str:
    text = " ".join((value or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"


def _playable(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://"))


def _signed(value: int | None) -> str:
    return "—" if value is None else f"{value:+d}" if value else "0"


_env = Environment(
    loader=PackageLoader("vidbatch.api", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=_when, excerpt=_excerpt, playable=_playable, signed=_signed)
templates = Jinja2Templates(env=_env)


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, short hash for cache busting)."""
    out = {}
    for entry in resources.files("vidbatch.api").joinpath("static").iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            data = entry.read_bytes()
            media = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            out[entry.name] = (data, media, hashlib.sha256(data).hexdigest()[:10])
    return out


STATIC = _static_files()
_env.globals["static"] = lambda name: f"/admin/static/{name}?v={STATIC[name][2]}"


# --- who is there ------------------------------------------------------------------------


class _AdminDisabled(Exception):
    pass


class _SignInRequired(Exception):
    pass


class _CsrfRefused(Exception):
    pass


@dataclass(frozen=True)
class Operator:
    """A signed-in operator: the session and its CSRF token."""

    session: str
    csrf: str


def _admin_token(request: Request) -> str:
    token: str | None = request.app.state.settings.admin_token
    if not token:
        raise _AdminDisabled
    return token


async def signed_in(request: Request) -> Operator:
    token = _admin_token(request)
    value = request.cookies.get(SESSION_COOKIE, "")
    if not value or not valid_session(token, value, now=utcnow()):
        raise _SignInRequired
    return Operator(session=value, csrf=csrf_token(token, value))


async def checked(
    request: Request,
    operator: Annotated[Operator, Depends(signed_in)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Operator:
    """A signed-in operator whose form carries the session's CSRF token."""
    if not csrf or not hmac.compare_digest(csrf.encode(), operator.csrf.encode()):
        raise _CsrfRefused
    return operator


Signed = Annotated[Operator, Depends(signed_in)]
Checked = Annotated[Operator, Depends(checked)]


# --- responses ---------------------------------------------------------------------------


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    operator: Operator | None = None,
) -> HTMLResponse:
    """A page, with the flash message left by the previous action (read once)."""
    flash = None
    raw = request.cookies.get(FLASH_COOKIE)
    token = request.app.state.settings.admin_token
    if raw and token:
        flash = _unpack_flash(token, raw)
    response = templates.TemplateResponse(
        request,
        name,
        {"operator": operator, "flash": flash, "path": request.url.path, **context},
        status_code=status,
    )
    if raw:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
    return response


def redirect(request: Request, url: str, *, flash: tuple[str, str] | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        response.set_cookie(
            FLASH_COOKIE,
            _pack_flash(_admin_token(request), *flash),
            max_age=120,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def message_page(
    request: Request, status: int, title: str, text: str, operator: Operator | None = None
) -> HTMLResponse:
    return render(
        request, "message.html", {"title": title, "text": text}, status=status, operator=operator
    )


class PageRoute(APIRoute):
    """Dashboard routes answer with pages: a sign-in redirect, a 404 page, a 403 page,
    never JSON or a stack trace; every answer carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except _AdminDisabled:
                response = message_page(
                    request,
                    404,
                    "Dashboard disabled",
                    "The operator dashboard is disabled on this server: "
                    "VIDBATCH_ADMIN_TOKEN is not set.",
                )
            except _SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":
                    target = request.headers.get("referer", "") or "/admin"
                    target = target.split(str(request.base_url).rstrip("/"), 1)[-1]
                response = redirect(
                    request,
                    "/admin/login?" + urlencode({"next": safe_next(target), "expired": "1"}),
                )
                response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
            except _CsrfRefused:
                response = message_page(
                    request,
                    403,
                    "Request refused",
                    "This form did not carry a valid CSRF token. Go back, reload the page "
                    "and try again.",
                )
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: "
                    f"{e.get('msg', 'invalid')}"
                    for e in exc.errors()
                )
                response = message_page(request, 400, "Invalid request", problems)
            except NotFound as exc:
                response = message_page(request, 404, "Not found", exc.message)
            except VidbatchError as exc:
                status = status_for(exc)
                if status == 500:
                    log.error("dashboard error", extra={"action": "dashboard", "code": exc.code})
                response = message_page(
                    request,
                    status,
                    "Not possible",
                    exc.message if status != 500 else "Internal error.",
                )
            except Exception:
                log.exception("dashboard page failed", extra={"action": "dashboard"})
                response = message_page(
                    request, 500, "Internal error", "Something went wrong; the error is in the log."
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if not request.url.path.startswith("/admin/static/"):
                response.headers["Cache-Control"] = "no-store"
            return response

        return page


router = APIRouter(prefix="/admin", route_class=PageRoute, include_in_schema=False)


# --- signing in --------------------------------------------------------------------------


@router.get("/login")
async def login_form(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next", max_length=500)] = None,
    expired: Annotated[str | None, Query(max_length=5)] = None,
    signed_out: Annotated[str | None, Query(max_length=5)] = None,
) -> Response:
    _admin_token(request)
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
    expected = _admin_token(request)
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        log.info("dashboard sign-in refused", extra={"action": "dashboard_login"})
        return render(
            request,
            "login.html",
            {"next": safe_next(next_url), "notice": None, "error": "Wrong token."},
            status=401,
        )
    response = redirect(request, safe_next(next_url))
    response.set_cookie(
        SESSION_COOKIE,
        new_session(expected, now=utcnow()),
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
    response = redirect(request, "/admin/login?signed_out=1")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/static/{name}")
async def static(request: Request, name: Annotated[str, Path(max_length=100)]) -> Response:
    _admin_token(request)
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    data, media, _ = STATIC[name]
    return Response(
        data, media_type=media, headers={"Cache-Control": "public, max-age=86400, immutable"}
    )


# --- overview ----------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, operator: Signed) -> Response:
    rt = runtime_of(request)
    now = utcnow()
    async with rt.engine.connect() as conn:
        counts = await svc.task_status_counts(conn)
        buckets = await svc.completed_per_bucket(conn, now=now)
        oldest = await svc.oldest_waiting_task(conn)
        recent, _ = await svc.list_batches(conn, limit=10)
        recent_counts = await svc.task_counts_by_batch(conn, [b["batch_id"] for b in recent])
        names = {a["account_id"]: a["name"] for a in await svc.list_accounts(conn)}
    peak = max([s + f for _, s, f in buckets] + [1])
    return render(
        request,
        "overview.html",
        {
            "counts": {s: counts.get(s, 0) for s in TASK_STATUSES},
            "total_tasks": sum(counts.values()),
            "in_flight": counts.get("submitting", 0) + counts.get("processing", 0),
            "waiting": counts.get("pending", 0) + counts.get("queued", 0),
            "buckets": [
                {
                    "start": start,
                    "end": start + timedelta(minutes=10),
                    "succeeded": s,
                    "failed": f,
                    "width": round(100 * (s + f) / peak, 2),
                }
                for start, s, f in buckets
            ],
            "completed_last_hour": sum(s + f for _, s, f in buckets),
            "oldest_waiting": oldest,
            "oldest_age": age(oldest, now),
            "provider": provider_figures(rt.metrics),
            "recent": [
                {
                    **b,
                    "progress": progress(recent_counts.get(b["batch_id"], {}), b["total_count"]),
                    "account_name": names.get(b["account_id"], b["account_id"]),
                }
                for b in recent
            ],
            "now": now,
        },
        operator=operator,
    )


# --- batches -----------------------------------------------------------------------------


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: not a date (YYYY-MM-DD)") from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@router.get("/batches")
async def batch_list(
    request: Request,
    operator: Signed,
    account: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    created_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    created_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    if status and status not in BATCH_STATUSES:
        raise InvalidInput(f"status: one of {', '.join(BATCH_STATUSES)}")
    first, last = _day(created_from, "from"), _day(created_to, "to")
    async with runtime_of(request).engine.connect() as conn:
        page, nxt = await svc.list_batches(
            conn,
            account_id=account or None,
            status=status or None,
            created_from=_midnight(first) if first else None,
            created_to=_midnight(last) + timedelta(days=1) if last else None,
            limit=BATCHES_PER_PAGE,
            cursor=decode_cursor(cursor) if cursor else None,
        )
        counts = await svc.task_counts_by_batch(conn, [b["batch_id"] for b in page])
        account_list = await svc.list_accounts(conn)
    names = {a["account_id"]: a["name"] for a in account_list}
    filters = {
        "account": account or "",
        "status": status or "",
        "from": created_from or "",
        "to": created_to or "",
    }
    next_url = None
    if nxt:
        next_url = "/admin/batches?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "cursor": encode_cursor(*nxt)}
        )
    return render(
        request,
        "batches.html",
        {
            "batches": [
                {
                    **b,
                    "progress": progress(counts.get(b["batch_id"], {}), b["total_count"]),
                    "account_name": names.get(b["account_id"], b["account_id"]),
                }
                for b in page
            ],
            "accounts": account_list,
            "filters": filters,
            "statuses": BATCH_STATUSES,
            "next_url": next_url,
            "paged": bool(cursor),
        },
        operator=operator,
    )


def _progress_json(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "batch_id": detail["batch_id"],
        "status": detail["status"],
        "settled": detail["settled_at"] is not None,
        "progress": progress(detail["task_counts"], detail["total_count"]),
        "credits": {k: detail[k] for k in ("reserved", "charged", "refunded", "held")},
        "webhook_status": detail["webhook_status"],
    }


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request,
    operator: Signed,
    batch_id: ID,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    if status and status not in TASK_STATUSES:
        raise InvalidInput(f"status: one of {', '.join(TASK_STATUSES)}")
    offset = (page - 1) * TASKS_PER_PAGE
    async with runtime_of(request).engine.connect() as conn:
        detail = await svc.batch_detail(conn, batch_id)
        tasks, total = await svc.list_tasks(
            conn, batch_id, status=status or None, limit=TASKS_PER_PAGE, offset=offset
        )
        bill = await svc.billing(conn, batch_id)
        deliveries = await svc.list_deliveries(conn, batch_id, limit=100)
        account = await accounts.get_account(conn, detail["account_id"])
    pages = max(1, -(-total // TASKS_PER_PAGE))

    def page_url(n: int) -> str:
        query = {"page": n, **({"status": status} if status else {})}
        return f"/admin/batches/{batch_id}?{urlencode(query)}#tasks"

    return render(
        request,
        "batch.html",
        {
            "b": detail,
            "live": _progress_json(detail),
            "tasks": tasks,
            "total": total,
            "page": page,
            "pages": pages,
            "task_status": status or "",
            "statuses": TASK_STATUSES,
            "prev_url": page_url(page - 1) if page > 1 else None,
            "next_url": page_url(page + 1) if page < pages else None,
            "billing": bill,
            "deliveries": deliveries,
            "account_name": account["name"],
            "can_cancel": detail["settled_at"] is None,
            "can_retry": detail["settled_at"] is not None and detail["task_counts"].get("failed"),
            "can_resend": bool(deliveries),
        },
        operator=operator,
    )


@router.get("/batches/{batch_id}/progress")
async def batch_progress(request: Request, batch_id: ID) -> Response:
    """The live part of the batch page, as JSON (401 once the session has ended)."""
    try:
        await signed_in(request)
    except _SignInRequired:
        return JSONResponse({"signed_in": False}, status_code=401)
    try:
        async with runtime_of(request).engine.connect() as conn:
            detail = await svc.batch_detail(conn, batch_id)
    except NotFound:
        return JSONResponse({"error": "NOT_FOUND"}, status_code=404)
    return JSONResponse(_progress_json(detail))


@dataclass(frozen=True)
class BatchAction:
    title: str
    text: str
    button: str
    danger: bool = False


BATCH_ACTIONS = {
    "cancel": BatchAction(
        "Cancel this batch?",
        "Items not yet submitted are cancelled and their credits refunded at once; items "
        "already running finish and are charged only if they succeed.",
        "Cancel the batch",
        danger=True,
    ),
    "retry-failed": BatchAction(
        "Retry the failed items?",
        "The failed items become a new batch of the same account, priced and reserved anew "
        "(charged separately). This batch's figures do not change.",
        "Retry failed items",
    ),
    "resend-webhook": BatchAction(
        "Resend the webhook?",
        "The batch's final event (or its latest) is sent again now, with a fresh count of "
        "attempts and its original webhook-id.",
        "Resend webhook",
    ),
}


def _action(name: str) -> BatchAction:
    if name not in BATCH_ACTIONS:
        raise NotFound(f"no action {name!r}")
    return BATCH_ACTIONS[name]


@router.get("/batches/{batch_id}/{action}")
async def confirm_batch_action(
    request: Request,
    operator: Signed,
    batch_id: ID,
    action: Annotated[str, Path(max_length=20)],
) -> Response:
    what = _action(action)
    async with runtime_of(request).engine.connect() as conn:
        detail = await svc.batch_detail(conn, batch_id)
    return render(
        request,
        "confirm.html",
        {
            "title": what.title,
            "text": what.text,
            "button": what.button,
            "danger": what.danger,
            "action_url": f"/admin/batches/{batch_id}/{action}",
            "back_url": f"/admin/batches/{batch_id}",
            "hidden": {},
            "with_moderation_choice": action == "retry-failed",
            "facts": [
                ("Batch", batch_id),
                ("Status", detail["status"]),
                ("Items", str(detail["total_count"])),
                ("Failed items", str(detail["task_counts"].get("failed", 0))),
            ],
        },
        operator=operator,
    )


@router.post("/batches/{batch_id}/{action}")
async def batch_action(
    request: Request,
    operator: Checked,
    batch_id: ID,
    action: Annotated[str, Path(max_length=20)],
    include_moderation: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    _action(action)
    rt = runtime_of(request)
    back = f"/admin/batches/{batch_id}"
    webhook_attempts = rt.settings.webhook_max_attempts
    try:
        if action == "cancel":
            done = await batches.cancel_batch(
                rt.engine, batch_id, account_id=None, webhook_max_attempts=webhook_attempts
            )
            text = (
                f"Batch cancelled: {done.cancelled_items} item(s) cancelled, "
                f"{done.credits_refunded} credits refunded so far."
            )
        elif action == "retry-failed":
            retried = await svc.retry_failed(
                rt.engine,
                batch_id,
                include_moderation=include_moderation == "yes",
                catalog=rt.settings.catalog,
                allow_private_webhooks=rt.settings.allow_private_webhooks,
                webhook_max_attempts=webhook_attempts,
            )
            again = " (it existed already)" if retried["idempotent_replay"] else ""
            return redirect(
                request,
                f"/admin/batches/{retried['batch_id']}",
                flash=(
                    "ok",
                    f"Retry batch {retried['batch_id']} created{again}: "
                    f"{retried['total_count']} item(s), {retried['required_credits']} credits "
                    f"reserved; {retried['excluded_moderation']} left out (moderation).",
                ),
            )
        else:
            delivery = await svc.resend_webhook(rt.engine, batch_id, max_attempts=webhook_attempts)
            text = f"Webhook event {delivery['event_type']} will be sent again now."
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    log.info("dashboard action", extra={"action": f"dashboard_{action}", "batch_id": batch_id})
    return redirect(request, back, flash=("ok", text))


# --- accounts and keys -------------------------------------------------------------------


@router.get("/accounts")
async def account_list(request: Request, operator: Signed) -> Response:
    async with runtime_of(request).engine.connect() as conn:
        items = await svc.list_accounts(conn)
        keys = {a["account_id"]: await svc.list_keys(conn, a["account_id"]) for a in items}
    return render(
        request,
        "accounts.html",
        {
            "accounts": [
                {**a, "keys": keys[a["account_id"]], "adjust_key": secrets.token_urlsafe(12)}
                for a in items
            ],
            "default_rate_limit": runtime_of(request).settings.default_rate_limit_per_min,
        },
        operator=operator,
    )


def _shown_once(request: Request) -> dict[str, tuple[float, dict[str, Any]]]:
    """New keys waiting to be shown, by one-time ticket (in this process's memory only)."""
    store: dict[str, tuple[float, dict[str, Any]]] | None = getattr(
        request.app.state, "dashboard_new_keys", None
    )
    if store is None:
        store = {}
        request.app.state.dashboard_new_keys = store
    now = time.monotonic()
    for ticket in [t for t, (at, _) in store.items() if now - at > SHOW_ONCE_SECONDS]:
        del store[ticket]
    return store


def _positive_int(value: str, field: str, *, allow_empty: bool = False) -> int | None:
    value = value.strip()
    if not value and allow_empty:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{field}: a whole number") from None
    if number <= 0:
        raise InvalidInput(f"{field}: more than 0")
    return number


@router.post("/accounts/{account_id}/keys")
async def create_key(
    request: Request,
    operator: Checked,
    account_id: ID,
    name: Annotated[str, Form(max_length=200)] = "default",
    rate_limit_per_min: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    rt = runtime_of(request)
    back = f"/admin/accounts#account-{account_id}"
    try:
        limit = _positive_int(rate_limit_per_min, "Rate limit", allow_empty=True)
        new = await accounts.create_key(
            rt.engine,
            account_id,
            name=name.strip() or "default",
            rate_limit_per_min=limit or rt.settings.default_rate_limit_per_min,
        )
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    async with rt.engine.connect() as conn:
        key = await svc.get_key(conn, new.key_id)
    ticket = secrets.token_urlsafe(24)
    _shown_once(request)[ticket] = (
        time.monotonic(),
        {"key": key, "api_key": new.api_key, "webhook_secret": new.webhook_secret},
    )
    log.info(
        "dashboard key created", extra={"action": "dashboard_create_key", "key_id": new.key_id}
    )
    return redirect(request, f"/admin/keys/new/{ticket}")


@router.get("/keys/new/{ticket}")
async def new_key(
    request: Request,
    operator: Signed,
    ticket: Annotated[str, Path(max_length=64)],
) -> Response:
    shown = _shown_once(request).pop(ticket, None)
    if shown is None:
        return message_page(
            request,
            410,
            "Already shown",
            "A new key and its webhook secret are shown once only. If they were not saved, "
            "deactivate that key and create another.",
            operator=operator,
        )
    return render(request, "key_created.html", shown[1], operator=operator)


@router.post("/keys/{key_id}/{change}")
async def change_key(
    request: Request,
    operator: Checked,
    key_id: ID,
    change: Annotated[str, Path(max_length=20)],
    rate_limit_per_min: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    rt = runtime_of(request)
    async with rt.engine.connect() as conn:
        key = await svc.get_key(conn, key_id)
    back = f"/admin/accounts#key-{key_id}"
    try:
        if change == "activate":
            await accounts.set_key_state(rt.engine, key_id, active=True)
            text = f"Key {key['key_prefix']}… activated."
        elif change == "deactivate":
            await accounts.set_key_state(rt.engine, key_id, active=False)
            text = f"Key {key['key_prefix']}… deactivated: its requests are refused."
        elif change == "rate-limit":
            limit = _positive_int(rate_limit_per_min, "Rate limit")
            await accounts.set_key_state(rt.engine, key_id, rate_limit_per_min=limit)
            text = f"Key {key['key_prefix']}…: {limit} requests per minute."
        else:
            raise NotFound(f"no change {change!r}")
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    return redirect(request, back, flash=("ok", text))


@router.post("/accounts/{account_id}/adjust")
async def adjust_credits(
    request: Request,
    operator: Checked,
    account_id: ID,
    credits: Annotated[str, Form(max_length=12)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    idempotency_key: Annotated[str, Form(max_length=128)] = "",
    confirmed: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    rt = runtime_of(request)
    back = f"/admin/accounts#account-{account_id}"
    async with rt.engine.connect() as conn:
        account = await accounts.get_account(conn, account_id)
    try:
        amount = int(credits.strip())
    except ValueError:
        return redirect(
            request, back, flash=("error", "Credits: a whole number, e.g. 500 or -200.")
        )
    if amount == 0 or not reason.strip():
        return redirect(
            request, back, flash=("error", "Give a number of credits other than 0 and a reason.")
        )
    if confirmed != "yes":
        return render(
            request,
            "confirm.html",
            {
                "title": f"{'Add' if amount > 0 else 'Remove'} {abs(amount)} credits?",
                "text": "The correction is written to the ledger with its reason.",
                "button": "Adjust credits",
                "danger": amount < 0,
                "action_url": f"/admin/accounts/{account_id}/adjust",
                "back_url": back,
                "hidden": {
                    "credits": str(amount),
                    "reason": reason.strip(),
                    "idempotency_key": idempotency_key,
                    "confirmed": "yes",
                },
                "with_moderation_choice": False,
                "facts": [
                    ("Account", f"{account['name']} ({account_id})"),
                    ("Balance now", str(account["balance_credits"])),
                    ("Balance after", str(account["balance_credits"] + amount)),
                    ("Reason", reason.strip()),
                ],
            },
            operator=operator,
        )
    try:
        done = await svc.adjust(
            rt.engine,
            account_id,
            amount,
            reason=reason.strip(),
            idempotency_key=idempotency_key or None,
        )
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    return redirect(
        request,
        back,
        flash=(
            "ok",
            f"{account['name']}: {amount:+d} credits ({reason.strip()}); balance now "
            f"{done['account']['balance_credits']}.",
        ),
    )
