"""What the synchronous and the asynchronous client share: configuration, the requests they
send, how answers become models or exceptions, and when and how long to wait before a retry."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from vidbatch_client import errors
from vidbatch_client._version import __version__
from vidbatch_client.models import Batch, Item, LedgerEntry, ResultLine

T = TypeVar("T")

API = "/api/v1"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Items asked for per page when following pages (the server allows up to 1,000).
ITEMS_PAGE = 500
#: Ledger entries asked for per page (the server allows up to 500).
LEDGER_PAGE = 200
#: Statuses retried: rate limited, and the server's own failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: 409 IDEMPOTENCY_CONFLICT_NO_BATCH: the first request with this id is still being processed.
RETRY_CODES = frozenset({"IDEMPOTENCY_CONFLICT_NO_BATCH"})


#: The first pause of ``wait``; pauses double up to its ``poll_interval``.
FIRST_POLL = 0.25


def first_pause(poll_interval: float) -> float:
    return min(FIRST_POLL, poll_interval)


@dataclass(frozen=True)
class RetryPolicy:
    """How requests are retried on network errors, 429 and 5xx.

    ``max_retries`` retries after the first attempt; the n-th waits ``backoff * 2**n``
    seconds (at most ``max_backoff``), with up to 25 % added at random so many clients do not
    retry together — or the server's ``Retry-After`` when it says longer.
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        base += random.uniform(0, base / 4)
        if retry_after is not None:
            return max(base, retry_after)
        return base


def make_timeout(timeout: float | httpx.Timeout | None, connect_timeout: float | None) -> Any:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=connect_timeout if connect_timeout else timeout)


def resolve(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    """The key and server, from the arguments or ``VIDBATCH_API_KEY`` / ``VIDBATCH_BASE_URL``."""
    key = api_key or os.environ.get("VIDBATCH_API_KEY")
    if not key:
        raise errors.AuthenticationError(
            "no API key: set VIDBATCH_API_KEY (or pass api_key= / --api-key)",
            status=0,
            code="MISSING_API_KEY",
        )
    url = base_url or os.environ.get("VIDBATCH_BASE_URL") or DEFAULT_BASE_URL
    return key, url.rstrip("/")


def headers(api_key: str) -> dict[str, str]:
    return {
        "x-api-key": api_key,
        "accept": "application/json",
        "user-agent": f"vidbatch-client-python/{__version__}",
    }


def new_request_id() -> str:
    """An idempotency key for a create that was given none."""
    return f"vbc_{uuid.uuid4().hex}"


def create_body(
    items: Iterable[Mapping[str, Any] | str],
    request_id: str,
    webhook_url: str | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of ``POST /batches``; a bare string is an item with only a prompt."""
    body: dict[str, Any] = {
        "items": [{"prompt": i} if isinstance(i, str) else dict(i) for i in items],
        "request_id": request_id,
    }
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def ledger_params(
    batch_id: str | None,
    type: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if batch_id:
        params["batch_id"] = batch_id
    if type:
        params["type"] = type
    if since:
        params["from"] = since.isoformat()
    if until:
        params["to"] = until.isoformat()
    return params


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (either form), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def should_retry(response: httpx.Response) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 409 and _code(response) in RETRY_CODES


def raise_for(response: httpx.Response) -> None:
    """Turn an error answer into the exception of the tree (nothing for a success)."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": response.text[:500] or response.reason_phrase}
    code = body.get("error") if isinstance(body.get("error"), str) else None
    message = str(body.get("message") or response.reason_phrase or "error")
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    cls = errors.error_class(response.status_code, code)
    kw: dict[str, Any] = {
        "status": response.status_code,
        "code": code,
        "details": details,
        "request_id": response.headers.get("x-request-id"),
        "body": body,
    }
    if cls is errors.RateLimited:
        raise errors.RateLimited(message, retry_after=retry_after(response), **kw)
    raise cls(message, **kw)


def json_of(response: httpx.Response) -> dict[str, Any]:
    raise_for(response)
    body = response.json()
    if not isinstance(body, dict):
        raise errors.APIError("the answer is not a JSON object", status=response.status_code)
    return body


def connection_failed(method: str, url: str, exc: Exception) -> errors.ConnectionFailed:
    return errors.ConnectionFailed(f"{method} {url}: {type(exc).__name__}: {exc}")


# --- the logic of the loops both clients run (they only add the I/O) ---------------------


class Attempts:
    """Counts the attempts of one request: after a failure, how long to wait before the
    next, or the exception to raise when the retries have run out."""

    def __init__(self, policy: RetryPolicy, give_up: Callable[[Exception], Exception]) -> None:
        self.policy = policy
        self.give_up = give_up
        self.attempt = 0

    def _next(self, exc: Exception | None, retry_after: float | None) -> float | None:
        if self.attempt >= self.policy.max_retries:
            if exc is None:
                return None
            raise self.give_up(exc) from exc
        delay = self.policy.delay(self.attempt, retry_after)
        self.attempt += 1
        return delay

    def failed(self, exc: Exception, retry_after: float | None = None) -> float:
        """A network error (or a retryable file answer): the pause before the next attempt."""
        delay = self._next(exc, retry_after)
        assert delay is not None
        return delay

    def answered(self, response: httpx.Response) -> float | None:
        """None to take this answer, else the pause before asking again."""
        if not should_retry(response):
            return None
        return self._next(None, retry_after(response))


def api_attempts(policy: RetryPolicy, method: str, path: str) -> Attempts:
    return Attempts(policy, lambda exc: connection_failed(method, path, exc))


class Waiter:
    """``wait``'s clock: polls start FIRST_POLL apart and double up to ``poll_interval``."""

    def __init__(self, batch_id: str, poll_interval: float, timeout: float | None) -> None:
        self.batch_id = batch_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = first_pause(poll_interval)

    def next_pause(self, batch: Batch) -> float | None:
        """None when the batch has ended; else the pause before the next poll. Raises
        WaitTimeout when the time is up."""
        if batch.ended:
            return None
        pause = self.pause
        self.pause = min(self.poll_interval, self.pause * 2)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise errors.WaitTimeout(
                    f"batch {self.batch_id} is still {batch.status} after {self.timeout} s", batch
                )
            pause = min(pause, left)
        return pause


class Pager(Generic[T]):
    """Follows the pages of a list: ``params()`` asks for the next page, ``feed(answer)``
    returns its rows; ``done`` once the last page was read."""

    def __init__(
        self,
        path: str,
        params: dict[str, Any],
        key: str,
        parse: Callable[[Any], T],
        *,
        by_cursor: bool = False,
    ) -> None:
        self.path = path
        self.base = params
        self.key = key
        self.parse = parse
        self.by_cursor = by_cursor
        self.done = False
        self.offset = 0
        self.cursor: str | None = None

    def params(self) -> dict[str, Any]:
        if self.by_cursor:
            return {**self.base, "cursor": self.cursor} if self.cursor else self.base
        return {**self.base, "offset": self.offset}

    def feed(self, answer: dict[str, Any]) -> list[T]:
        rows = [self.parse(row) for row in answer.get(self.key) or []]
        if self.by_cursor:
            self.cursor = answer.get("next_cursor")
            self.done = not self.cursor
            return rows
        self.offset += len(rows)
        total = answer.get("total")
        if not rows:
            self.done = True
        elif isinstance(total, int):  # a server may clamp the page: trust the total
            self.done = self.offset >= total
        else:
            self.done = len(rows) < self.base["limit"]
        return rows


def _with_status(params: dict[str, Any], status: str | None) -> dict[str, Any]:
    return {**params, "status": status} if status else params


def items_pager(batch_id: str, status: str | None, page_size: int) -> Pager[Item]:
    params = _with_status({"limit": page_size}, status)
    return Pager(f"/batches/{batch_id}/items", params, "items", Item.model_validate)


def batches_pager(status: str | None, page_size: int) -> Pager[Batch]:
    params = _with_status({"limit": page_size}, status)
    return Pager("/batches", params, "batches", Batch.model_validate, by_cursor=True)


def ledger_pager(
    batch_id: str | None,
    type: str | None,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
) -> Pager[LedgerEntry]:
    params = {**ledger_params(batch_id, type, since, until), "limit": page_size}
    return Pager("/credits/ledger", params, "entries", LedgerEntry.model_validate)


def result_lines(text: str) -> list[ResultLine]:
    return [ResultLine.model_validate(json.loads(line)) for line in text.splitlines() if line]
