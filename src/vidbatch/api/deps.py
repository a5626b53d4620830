"""What every customer endpoint shares: the API key (``x-api-key`` or ``Authorization:
Bearer``), the per-key rate limit, and the rate-limit headers on every answer to a known key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from vidbatch.api.app import runtime_of
from vidbatch.api.errors import ApiError
from vidbatch.exceptions import RateLimited
from vidbatch.services import accounts, ratelimit
from vidbatch.services.accounts import KeyIdentity
from vidbatch.services.batches import Caller
from vidbatch.services.ratelimit import RateState

api_key_header = APIKeyHeader(
    name="x-api-key",
    scheme_name="ApiKey",
    description="Your API key (`vb_...`).",
    auto_error=False,
)
bearer = HTTPBearer(
    scheme_name="Bearer",
    description="The same API key as `Authorization: Bearer <key>`.",
    auto_error=False,
)


@dataclass(frozen=True)
class Authenticated:
    """The verified key behind a request."""

    key: KeyIdentity

    @property
    def caller(self) -> Caller:
        return Caller(account_id=self.key.account_id, key_id=self.key.key_id)

    @property
    def account_id(self) -> str:
        return self.key.account_id


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Authenticated:
    """The caller's key: 401 ``MISSING_API_KEY`` without one, 403 ``INVALID_API_KEY`` for an
    unknown, revoked or inactive key (or account)."""
    presented = (api_key or "").strip() or (credentials.credentials.strip() if credentials else "")
    if not presented:
        raise ApiError(
            401, "MISSING_API_KEY", "an API key is required (x-api-key or Authorization: Bearer)"
        )
    async with runtime_of(request).engine.connect() as conn:
        identity = await accounts.verify_key(conn, presented)
    if identity is None:
        raise ApiError(403, "INVALID_API_KEY", "unknown, revoked or inactive API key")
    request.state.key_id = identity.key_id  # for the access log (the id, never the key)
    return Authenticated(identity)


def _budget(request: Request, auth: Authenticated) -> tuple[str, int]:
    """A GET counts against the key's read budget (``VIDBATCH_READ_RATE_LIMIT``); creates
    and cancels against its ``rate_limit_per_min``."""
    if request.method in ("GET", "HEAD"):
        return ratelimit.READ, runtime_of(request).settings.read_rate_limit_per_min
    return ratelimit.WRITE, auth.key.rate_limit_per_min


async def count_request(request: Request, auth: Authenticated) -> RateState:
    """Count this request against the key's limit; raise RateLimited when it is spent.

    The state is kept on the request so that every answer carries the rate-limit headers.
    """
    scope, limit = _budget(request, auth)
    state = await ratelimit.admit(runtime_of(request).engine, auth.key.key_id, limit, scope=scope)
    request.state.rate_limit = state
    if not state.allowed:
        raise RateLimited(limit=state.limit, retry_after=state.retry_after)
    return state


async def show_rate(request: Request, auth: Authenticated) -> RateState:
    """Attach the key's current rate-limit state without counting the request."""
    scope, limit = _budget(request, auth)
    state = await ratelimit.peek(runtime_of(request).engine, auth.key.key_id, limit, scope=scope)
    request.state.rate_limit = state
    return state


async def rate_limited(
    request: Request, auth: Annotated[Authenticated, Depends(authenticate)]
) -> Authenticated:
    """An authenticated request that counts against the key's rate limit."""
    await count_request(request, auth)
    return auth


#: A verified key; the route counts the request itself (the create route, after its replay
#: check, since a replay of a finished request is not counted).
Key = Annotated[Authenticated, Depends(authenticate)]
#: A verified key whose request has been counted against its rate limit.
LimitedKey = Annotated[Authenticated, Depends(rate_limited)]


def _handler_for(request: Request, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
    handlers: dict[Any, Any] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        if cls in handlers:
            handler: Callable[..., Awaitable[Response]] = handlers[cls]
            return handler
    return None


class KeyedRoute(APIRoute):
    """A route whose every answer to a known key, errors included, carries
    ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handle(request)
            except Exception as exc:
                handler = _handler_for(request, exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            state: RateState | None = getattr(request.state, "rate_limit", None)
            if state is not None:
                response.headers.update(state.headers())
            return response

        return route
