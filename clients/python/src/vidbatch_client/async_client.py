"""``AsyncClient``: the asynchronous client of the vidbatch ``/api/v1`` (the same methods as
:class:`~vidbatch_client.Client`, awaited; the iterators are ``async for``)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
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
from vidbatch_client.client import _RetryLater
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

ProgressCallback = Callable[[Batch], Awaitable[None] | None]


class AsyncClient:
    """The asynchronous client; see :class:`~vidbatch_client.Client` for the arguments."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        connect_timeout: float | None = 10.0,
        retry: _core.RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key, url = _core.resolve(api_key, base_url)
        self.base_url = url
        self.retry = retry or _core.RetryPolicy()
        timeouts = _core.make_timeout(timeout, connect_timeout)
        self._http = httpx.AsyncClient(
            base_url=url, headers=_core.headers(key), timeout=timeouts, transport=transport
        )
        self._files = httpx.AsyncClient(
            timeout=timeouts, follow_redirects=True, transport=transport
        )
        self._api_key = key

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._files.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(
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
                response = await self._http.request(
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
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return _core.json_of(await self._request(method, path, **kw))

    async def create_batch(
        self,
        items: Iterable[Mapping[str, Any] | str],
        request_id: str | None = None,
        webhook_url: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> CreatedBatch:
        rid = request_id or _core.new_request_id()
        body = _core.create_body(items, rid, webhook_url, metadata)
        data = await self._json(
            "POST", "/batches", json_body=body, headers={"idempotency-key": rid}
        )
        return CreatedBatch.model_validate(data)

    async def get_batch(self, batch_id: str) -> Batch:
        return Batch.model_validate(await self._json("GET", f"/batches/{batch_id}"))

    async def iter_batches(
        self, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Batch]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = BatchesPage.model_validate(await self._json("GET", "/batches", params=params))
            for batch in page.batches:
                yield batch
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def iter_items(
        self, batch_id: str, status: str | None = None, page_size: int = _core.ITEMS_PAGE
    ) -> AsyncIterator[Item]:
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": page_size, "offset": offset}
            if status:
                params["status"] = status
            data = await self._json("GET", f"/batches/{batch_id}/items", params=params)
            page = ItemsPage.model_validate(data)
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def cancel(self, batch_id: str) -> CancelResult:
        data = await self._json("POST", f"/batches/{batch_id}/cancel")
        return CancelResult.model_validate(data)

    async def results(self, batch_id: str, format: Literal["jsonl", "csv"] = "jsonl") -> str:
        response = await self._request(
            "GET", f"/batches/{batch_id}/results", params={"format": format}
        )
        _core.raise_for(response)
        return response.text

    async def iter_results(self, batch_id: str) -> AsyncIterator[ResultLine]:
        for line in (await self.results(batch_id)).splitlines():
            if line.strip():
                yield ResultLine.model_validate(json.loads(line))

    async def wait(
        self,
        batch_id: str,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        poll_interval: float = 2.0,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _core.first_pause(poll_interval)
        while True:
            batch = await self.get_batch(batch_id)
            if on_progress is not None:
                outcome = on_progress(batch)
                if outcome is not None:
                    await outcome
            if batch.ended:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(
                    f"batch {batch_id} is still {batch.status} after {timeout} s", batch
                )
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            await asyncio.sleep(pause)
            pause = min(poll_interval, pause * 2)

    async def balance(self) -> Balance:
        return Balance.model_validate(await self._json("GET", "/credits/balance"))

    async def iter_ledger(
        self,
        batch_id: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = _core.LEDGER_PAGE,
    ) -> AsyncIterator[LedgerEntry]:
        params = _core.ledger_params(batch_id, type, since, until)
        offset = 0
        while True:
            data = await self._json(
                "GET", "/credits/ledger", params={**params, "limit": page_size, "offset": offset}
            )
            entries = [LedgerEntry.model_validate(e) for e in data.get("entries", [])]
            for entry in entries:
                yield entry
            offset += len(entries)
            total = data.get("total")
            if len(entries) < page_size or (isinstance(total, int) and offset >= total):
                return

    async def download(
        self,
        batch_id: str,
        dest: str | os.PathLike[str],
        thumbnails: bool = True,
        concurrency: int = 8,
        *,
        on_file: Callable[[DownloadedItem], None] | None = None,
    ) -> DownloadReport:
        """See :meth:`vidbatch_client.Client.download`."""
        folder = make_folder(dest)
        report = DownloadReport()
        wanted: list[Item] = []
        async for item in self.iter_items(batch_id):
            (wanted if item.status == "succeeded" and item.video_url else report.missing).append(
                item
            )
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(item: Item) -> DownloadedItem:
            async with gate:
                done = await self._download_item(folder, item, thumbnails)
            if on_file is not None:
                on_file(done)
            return done

        report.items = list(await asyncio.gather(*(one(i) for i in wanted)))
        return report

    async def _download_item(self, folder: Path, item: Item, thumbnails: bool) -> DownloadedItem:
        assert item.video_url is not None
        path = video_path(folder, item)
        present = already_there(path, item.video_sha256, item.video_size_bytes)
        skipped = present is not None
        digest = present or await self._fetch(
            item.video_url, path, item.video_sha256, item.video_size_bytes
        )
        thumb = None
        if thumbnails and item.thumbnail_url:
            thumb = thumbnail_path(folder, item, item.thumbnail_url)
            if not thumb.is_file():
                await self._fetch(item.thumbnail_url, thumb, None, None)
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

    async def _fetch(self, url: str, path: Path, sha256: str | None, size: int | None) -> str:
        part = part_path(path)
        attempt = 0
        while True:
            try:
                await self._fetch_once(url, part)
                actual = finish(part, path, sha256, size)
                if actual is None:
                    raise _RetryLater(None, "the bytes do not match the server's SHA-256/size")
                return actual
            except (httpx.TransportError, _RetryLater) as exc:
                if attempt >= self.retry.max_retries:
                    raise errors.DownloadError(f"{path.name} from {url}: {exc!r}") from exc
                wait = exc.retry_after if isinstance(exc, _RetryLater) else None
                await asyncio.sleep(self.retry.delay(attempt, wait))
                attempt += 1

    async def _fetch_once(self, url: str, part: Path) -> None:
        have, hdrs = resume_headers(part, self._file_headers(url))
        async with self._files.stream("GET", url, headers=hdrs) as r:
            if r.status_code == 416:  # the part is already whole (or wrong): start again
                discard(part)
                raise _RetryLater(0)
            if _core.should_retry(r):
                raise _RetryLater(_core.retry_after(r))
            if r.status_code not in (200, 206):
                raise errors.DownloadError(f"GET {url}: HTTP {r.status_code}")
            with open_part(part, r.status_code, have) as f:
                async for chunk in r.aiter_bytes(CHUNK):
                    f.write(chunk)
