"""How pages look: the formatting filters, the templates and static files (read on first
use, then kept), and the responses every page answers with."""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from vidbatch.domain.states import TASK_RUNNING, TASK_WAITING, BatchStatus, TaskStatus
from vidbatch.timestamps import as_utc
from vidbatch.web.session import (
    COOKIE_PATH,
    FLASH_COOKIE,
    Operator,
    admin_token,
    pack_flash,
    unpack_flash,
)

#: The orders in which pages list statuses: the enums' own.
BATCH_STATUSES = tuple(BatchStatus)
TASK_STATUSES = tuple(TaskStatus)

#: The progress bar's parts, in the order it shows them, and the task states each counts.
PROGRESS_PARTS: dict[str, frozenset[TaskStatus]] = {
    "succeeded": frozenset({TaskStatus.SUCCEEDED}),
    "failed": frozenset({TaskStatus.FAILED}),
    "cancelled": frozenset({TaskStatus.CANCELLED}),
    "running": TASK_RUNNING,
    "pending": TASK_WAITING,
}


# --- what the pages show (no I/O) ----------------------------------------------------------


def progress(counts: dict[str, int], total: int | None = None) -> dict[str, Any]:
    """A batch's tasks as the progress bar shows them: counts and widths in percent."""
    parts = {
        part: sum(counts.get(status, 0) for status in states)
        for part, states in PROGRESS_PARTS.items()
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


def when(value: str | datetime | None) -> str:
    if value is None:
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def excerpt(value: str | None, length: int = 80) -> str:
    text = " ".join((value or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"


def playable(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://"))


def signed(value: int | None) -> str:
    return "—" if value is None else f"{value:+d}" if value else "0"


# --- templates and static files (read once, on first use) ---------------------------------


@functools.cache
def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, short hash for cache busting)."""
    out = {}
    for entry in resources.files("vidbatch.web").joinpath("static").iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            data = entry.read_bytes()
            media = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            out[entry.name] = (data, media, hashlib.sha256(data).hexdigest()[:10])
    return out


def static_url(name: str) -> str:
    return f"/admin/static/{name}?v={static_files()[name][2]}"


@functools.cache
def templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("vidbatch.web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {"when": when, "excerpt": excerpt, "playable": playable, "signed": signed}
    env.globals |= {"static": static_url, "TaskStatus": TaskStatus}
    return Jinja2Templates(env=env)


# --- responses -----------------------------------------------------------------------------


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
        flash = unpack_flash(token, raw)
    response = templates().TemplateResponse(
        request,
        name,
        {"operator": operator, "flash": flash, "path": request.url.path, **context},
        status_code=status,
    )
    if raw:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
    return response


def redirect(request: Request, url: str, *, flash: tuple[str, str] | None = None) -> Response:
    """303 to ``url``, leaving a flash message for the page there."""
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        response.set_cookie(
            FLASH_COOKIE,
            pack_flash(admin_token(request), *flash),
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
