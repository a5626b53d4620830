"""``Client``: the synchronous client of the vidbatch ``/api/v1``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from vidbatch_client import _core
from vidbatch_client._download import (
    CHUNK,
    MISMATCH,
    DownloadedItem,
    DownloadReport,
    ItemPlan,
    RetryLater,
    check_file_answer,
    file_attempts,
    file_headers,
    finish,
    make_folder,
    open_part,
    part_path,
    plan_item,
    resume_headers,
    split,
)
from vidbatch_client.models import (
    Balance,
    Batch,
    CancelResult,
    CreatedBatch,
    Item,
    LedgerEntry,
    ResultLine,
)

ProgressCallback = Callable[[Batch], None]
T = TypeVar("T")


class Client:
    """A client of one vidbatch server with one API key.

    ``api_key`` and ``base_url`` default to ``VIDBATCH_API_KEY`` and ``VIDBATCH_BASE_URL``.
    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds each attempt; ``connect_timeout``
    the connection alone. Network errors, 429 and 5xx are retried per ``retry``
    (:class:`RetryPolicy`); every create carries a request id, so a retried create is never
    charged twice. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        connect_timeout: float | None = 10.0,
        retry: _core.RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key, url = _core.resolve(api_key, base_url)
        self.base_url = url
        self.retry = retry or _core.RetryPolicy()
        timeouts = _core.make_timeout(timeout, connect_timeout)
        self._http = httpx.Client(
            base_url=url, headers=_core.headers(key), timeout=timeouts, transport=transport
        )
        # Files come from the provider or a storage host: never send them the API key.
        self._files = httpx.Client(timeout=timeouts, follow_redirects=True, transport=transport)
        self._api_key = key

    # --- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        self._files.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        attempts = _core.api_attempts(self.retry, method, path)
        while True:
            try:
                response = self._http.request(
                    method, _core.API + path, params=params, json=json_body, headers=headers
                )
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                pause = attempts.answered(response)
                if pause is None:
                    return response
                delay = pause
                response.close()
            time.sleep(delay)

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return _core.json_of(self._request(method, path, **kw))

    def _follow(self, pager: _core.Pager[T]) -> Iterator[T]:
        while not pager.done:
            yield from pager.feed(self._json("GET", pager.path, params=pager.params()))

    # --- batches -------------------------------------------------------------------------

    def create_batch(
        self,
        items: Iterable[Mapping[str, Any] | str],
        request_id: str | None = None,
        webhook_url: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> CreatedBatch:
        """Create a batch. ``items`` are dicts (``prompt``, ``model``, ``aspect_ratio``,
        ``duration``, ``metadata``, ...) or bare prompts. ``request_id`` is the idempotency
        key (one is generated when not given, and reused by every retry): the same id with
        the same items answers the first batch (``idempotent_replay``), never a second one."""
        rid = request_id or _core.new_request_id()
        body = _core.create_body(items, rid, webhook_url, metadata)
        data = self._json("POST", "/batches", json_body=body, headers={"idempotency-key": rid})
        return CreatedBatch.model_validate(data)

    def get_batch(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._json("GET", f"/batches/{batch_id}"))

    def iter_batches(self, status: str | None = None, page_size: int = 100) -> Iterator[Batch]:
        """Your batches, newest first (pages followed for you)."""
        return self._follow(_core.batches_pager(status, page_size))

    def iter_items(
        self, batch_id: str, status: str | None = None, page_size: int = _core.ITEMS_PAGE
    ) -> Iterator[Item]:
        """Every item of a batch in index order (``status``: pending, running, succeeded or
        failed), pages followed for you."""
        return self._follow(_core.items_pager(batch_id, status, page_size))

    def cancel(self, batch_id: str) -> CancelResult:
        """Cancel what has not started; items already at the provider finish (and are
        charged only if they succeed)."""
        return CancelResult.model_validate(self._json("POST", f"/batches/{batch_id}/cancel"))

    def results(self, batch_id: str, format: Literal["jsonl", "csv"] = "jsonl") -> str:
        """Every item's result as text: JSON Lines (default) or CSV."""
        response = self._request("GET", f"/batches/{batch_id}/results", params={"format": format})
        _core.raise_for(response)
        return response.text

    def iter_results(self, batch_id: str) -> Iterator[ResultLine]:
        """Every item's result, parsed."""
        return iter(_core.result_lines(self.results(batch_id)))

    def wait(
        self,
        batch_id: str,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        poll_interval: float = 2.0,
    ) -> Batch:
        """Poll until the batch has ended (``succeeded``, ``partial``, ``failed`` or
        ``cancelled``) and return it; ``on_progress(batch)`` is called after every poll.
        Raises :class:`WaitTimeout` after ``timeout`` seconds. Polls start a quarter of a
        second apart and double up to ``poll_interval``, so a short batch is seen at once."""
        waiter = _core.Waiter(batch_id, poll_interval, timeout)
        while True:
            batch = self.get_batch(batch_id)
            if on_progress is not None:
                on_progress(batch)
            pause = waiter.next_pause(batch)
            if pause is None:
                return batch
            time.sleep(pause)

    # --- credits -------------------------------------------------------------------------

    def balance(self) -> Balance:
        return Balance.model_validate(self._json("GET", "/credits/balance"))

    def iter_ledger(
        self,
        batch_id: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = _core.LEDGER_PAGE,
    ) -> Iterator[LedgerEntry]:
        """Ledger entries, newest first, pages followed for you."""
        return self._follow(_core.ledger_pager(batch_id, type, since, until, page_size))

    # --- files ---------------------------------------------------------------------------

    def download(
        self,
        batch_id: str,
        dest: str | os.PathLike[str],
        thumbnails: bool = True,
        concurrency: int = 8,
        *,
        on_file: Callable[[DownloadedItem], None] | None = None,
    ) -> DownloadReport:
        """Download every succeeded item's video (and thumbnail, when the server has one)
        into ``dest`` as ``<index>-<item_id>.mp4``. Resumable: a file already present with
        the server's SHA-256 (when it gives one) is skipped, an interrupted one is continued;
        a video whose bytes do not match the server's SHA-256 raises :class:`DownloadError`."""
        folder = make_folder(dest)
        wanted, missing = split(self.iter_items(batch_id))

        def one(item: Item) -> DownloadedItem:
            done = self._download_item(plan_item(folder, item, thumbnails))
            if on_file is not None:
                on_file(done)
            return done

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return DownloadReport(items=list(pool.map(one, wanted)), missing=missing)

    def _download_item(self, plan: ItemPlan) -> DownloadedItem:
        item = plan.item
        assert item.video_url is not None
        digest = plan.present or self._fetch(
            item.video_url, plan.path, item.video_sha256, item.video_size_bytes
        )
        if plan.fetch_thumbnail and plan.thumbnail and item.thumbnail_url:
            self._fetch(item.thumbnail_url, plan.thumbnail, None, None)
        return plan.result(digest)

    def _fetch(self, url: str, path: Path, sha256: str | None, size: int | None) -> str:
        part = part_path(path)
        attempts = file_attempts(self.retry, url, path)
        while True:
            try:
                self._fetch_once(url, part)
                actual = finish(part, path, sha256, size)
                if actual is None:
                    raise RetryLater(None, MISMATCH)
                return actual
            except httpx.TransportError as exc:
                time.sleep(attempts.failed(exc))
            except RetryLater as exc:
                time.sleep(attempts.failed(exc, exc.retry_after))

    def _fetch_once(self, url: str, part: Path) -> None:
        have, hdrs = resume_headers(part, file_headers(url, self.base_url, self._api_key))
        with self._files.stream("GET", url, headers=hdrs) as r:
            check_file_answer(url, part, r)
            with open_part(part, r.status_code, have) as f:
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
