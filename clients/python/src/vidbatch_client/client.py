"""``Client``: the synchronous client of the vidbatch ``/api/v1``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from vidbatch_client import _core, errors
from vidbatch_client._download import (
    CHUNK,
    DownloadedItem,
    DownloadReport,
    already_there,
    discard,
    finish,
    make_folder,
    open_part,
    part_path,
    resume_headers,
    thumbnail_path,
    video_path,
)
from vidbatch_client.models import (
    Balance,
    Batch,
    BatchesPage,
    CancelResult,
    CreatedBatch,
    Item,
    ItemsPage,
    LedgerEntry,
    ResultLine,
)

ProgressCallback = Callable[[Batch], None]


class _RetryLater(Exception):
    """A file answer worth retrying (429, 5xx, a part to start again, a wrong checksum)."""

    def __init__(self, retry_after: float | None, reason: str = "") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


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
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, _core.API + path, params=params, json=json_body, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt >= self.retry.max_retries:
                    raise _core.connection_failed(method, path, exc) from exc
                delay = self.retry.delay(attempt)
            else:
                if attempt >= self.retry.max_retries or not _core.should_retry(response):
                    return response
                delay = self.retry.delay(attempt, _core.retry_after(response))
                response.close()
            time.sleep(delay)
            attempt += 1

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return _core.json_of(self._request(method, path, **kw))

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
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = BatchesPage.model_validate(self._json("GET", "/batches", params=params))
            yield from page.batches
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def iter_items(
        self, batch_id: str, status: str | None = None, page_size: int = _core.ITEMS_PAGE
    ) -> Iterator[Item]:
        """Every item of a batch in index order (``status``: pending, running, succeeded or
        failed), pages followed for you."""
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": page_size, "offset": offset}
            if status:
                params["status"] = status
            data = self._json("GET", f"/batches/{batch_id}/items", params=params)
            page = ItemsPage.model_validate(data)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

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
        for line in self.results(batch_id).splitlines():
            if line.strip():
                yield ResultLine.model_validate(json.loads(line))

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
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _core.first_pause(poll_interval)
        while True:
            batch = self.get_batch(batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch.ended:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(
                    f"batch {batch_id} is still {batch.status} after {timeout} s", batch
                )
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            pause = min(poll_interval, pause * 2)

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
        params = _core.ledger_params(batch_id, type, since, until)
        offset = 0
        while True:
            data = self._json(
                "GET", "/credits/ledger", params={**params, "limit": page_size, "offset": offset}
            )
            entries = [LedgerEntry.model_validate(e) for e in data.get("entries", [])]
            yield from entries
            offset += len(entries)
            total = data.get("total")
            if len(entries) < page_size or (isinstance(total, int) and offset >= total):
                return

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
        report = DownloadReport()
        wanted: list[Item] = []
        for item in self.iter_items(batch_id):
            (wanted if item.status == "succeeded" and item.video_url else report.missing).append(
                item
            )

        def one(item: Item) -> DownloadedItem:
            done = self._download_item(folder, item, thumbnails)
            if on_file is not None:
                on_file(done)
            return done

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            report.items = list(pool.map(one, wanted))
        return report

    def _download_item(self, folder: Path, item: Item, thumbnails: bool) -> DownloadedItem:
        assert item.video_url is not None
        path = video_path(folder, item)
        present = already_there(path, item.video_sha256, item.video_size_bytes)
        skipped = present is not None
        digest = present or self._fetch(
            item.video_url, path, item.video_sha256, item.video_size_bytes
        )
        thumb = None
        if thumbnails and item.thumbnail_url:
            thumb = thumbnail_path(folder, item, item.thumbnail_url)
            if not thumb.is_file():
                self._fetch(item.thumbnail_url, thumb, None, None)
                skipped = False
        return DownloadedItem(
            item_id=item.item_id,
            index=item.index,
            path=path,
            sha256=digest,
            size=path.stat().st_size,
            skipped=skipped,
            thumbnail_path=thumb,
        )

    def _file_headers(self, url: str) -> dict[str, str]:
        same_server = httpx.URL(url).join("/") == httpx.URL(self.base_url).join("/")
        return {"x-api-key": self._api_key} if same_server else {}

    def _fetch(self, url: str, path: Path, sha256: str | None, size: int | None) -> str:
        part = part_path(path)
        attempt = 0
        while True:
            try:
                self._fetch_once(url, part)
                actual = finish(part, path, sha256, size)
                if actual is None:
                    raise _RetryLater(None, "the bytes do not match the server's SHA-256/size")
                return actual
            except (httpx.TransportError, _RetryLater) as exc:
                if attempt >= self.retry.max_retries:
                    raise errors.DownloadError(f"{path.name} from {url}: {exc!r}") from exc
                wait = exc.retry_after if isinstance(exc, _RetryLater) else None
                time.sleep(self.retry.delay(attempt, wait))
                attempt += 1

    def _fetch_once(self, url: str, part: Path) -> None:
        have, hdrs = resume_headers(part, self._file_headers(url))
        with self._files.stream("GET", url, headers=hdrs) as r:
            if r.status_code == 416:  # the part is already whole (or wrong): start again
                discard(part)
                raise _RetryLater(0)
            if _core.should_retry(r):
                raise _RetryLater(_core.retry_after(r))
            if r.status_code not in (200, 206):
                raise errors.DownloadError(f"GET {url}: HTTP {r.status_code}")
            with open_part(part, r.status_code, have) as f:
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
