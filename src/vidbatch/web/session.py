"""Who is there: signed session cookies, CSRF tokens and one-shot flash messages, all
keyed by the admin token, and the dependencies that let a signed-in operator in.

A session cookie is valid only while its session is recorded server-side
(``services/admin_sessions``): signing out deletes the record, so the old cookie stops
working at once instead of 8 hours later."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Form, Request

from vidbatch.clock import utcnow
from vidbatch.services import admin_sessions

SESSION_COOKIE = "vidbatch_admin"
FLASH_COOKIE = "vidbatch_flash"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 8 * 3600


# --- signing (no I/O) ----------------------------------------------------------------------


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


def session_id(value: str) -> str:
    """The server-side id of a session cookie: the SHA-256 of its nonce."""
    body, _, _signature = value.rpartition(".")
    _expires, _, nonce = body.partition(".")
    return hashlib.sha256(nonce.encode()).hexdigest()


def session_expiry(value: str) -> datetime:
    """When a (valid) session cookie expires."""
    return datetime.fromtimestamp(int(value.partition(".")[0]), UTC)


def csrf_token(admin_token: str, session: str) -> str:
    """The CSRF token of a session: every form that changes something sends it back."""
    return _sign(admin_token, "csrf", session)


def pack_flash(admin_token: str, kind: str, text: str) -> str:
    """A flash message as a signed cookie value."""
    body = base64.urlsafe_b64encode(json.dumps([kind, text]).encode()).decode().rstrip("=")
    return f"{body}.{_sign(admin_token, 'flash', body)}"


def unpack_flash(admin_token: str, value: str) -> tuple[str, str] | None:
    """(kind, text) of a flash cookie signed with this token's key, else None."""
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


# --- the request's operator ----------------------------------------------------------------


class AdminDisabled(Exception):
    """No admin token is configured: the dashboard does not exist."""


class SignInRequired(Exception):
    """No valid session: the operator signs in (again)."""


class CsrfRefused(Exception):
    """A form that changes something came without its session's CSRF token."""


@dataclass(frozen=True)
class Operator:
    """A signed-in operator: the session and its CSRF token."""

    session: str
    csrf: str


def admin_token(request: Request) -> str:
    """The configured admin token (AdminDisabled without one)."""
    token: str | None = request.app.state.settings.admin_token
    if not token:
        raise AdminDisabled
    return token


async def signed_in(request: Request) -> Operator:
    token = admin_token(request)
    value = request.cookies.get(SESSION_COOKIE, "")
    now = utcnow()
    if not value or not valid_session(token, value, now=now):
        raise SignInRequired
    engine = request.app.state.runtime.engine
    if not await admin_sessions.is_open(engine, session_id(value), now=now):
        raise SignInRequired  # signed out: the cookie outlived its session
    return Operator(session=value, csrf=csrf_token(token, value))


async def checked(
    request: Request,
    operator: Annotated[Operator, Depends(signed_in)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Operator:
    """A signed-in operator whose form carries the session's CSRF token."""
    if not csrf or not hmac.compare_digest(csrf.encode(), operator.csrf.encode()):
        raise CsrfRefused
    return operator


Signed = Annotated[Operator, Depends(signed_in)]
Checked = Annotated[Operator, Depends(checked)]
