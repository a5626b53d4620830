"""``AsyncClient``: the asynchronous client of the vidbatch ``/api/v1`` (the same methods as
:class:`~vidbatch_client.Client`, awaited; the iterators are ``async for``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
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

ProgressCallback = Callable[[Batch], Awaitable[None] | None]
T = TypeVar("T")


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
        attempts = _core.api_attempts(self.retry, method, path)
        while True:
            try:
                response = await self._http.request(
                    method, _core.API + path, params=params, json=json_body, headers=headers
                )
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                pause = attempts.answered(response)
                if pause is None:
                    return response
                delay = pause
                await response.aclose()
            await asyncio.sleep(delay)

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return _core.json_of(await self._request(method, path, **kw))

    async def _follow(self, pager: _core.Pager[T]) -> AsyncIterator[T]:
        while not pager.done:
            for row in pager.feed(await self._json("GET", pager.path, params=pager.params())):
                yield row

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

    def iter_batches(self, status: str | None = None, page_size: int = 100) -> AsyncIterator[Batch]:
        return self._follow(_core.batches_pager(status, page_size))

    def iter_items(
        self, batch_id: str, status: str | None = None, page_size: int = _core.ITEMS_PAGE
    ) -> AsyncIterator[Item]:
        return self._follow(_core.items_pager(batch_id, status, page_size))

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
        for line in _core.result_lines(await self.results(batch_id)):
            yield line

    async def wait(
        self,
        batch_id: str,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        poll_interval: float = 2.0,
    ) -> Batch:
        """See :meth:`vidbatch_client.Client.wait`; ``on_progress`` may be a coroutine."""
        waiter = _core.Waiter(batch_id, poll_interval, timeout)
        while True:
            batch = await self.get_batch(batch_id)
            if on_progress is not None:
                outcome = on_progress(batch)
                if outcome is not None:
                    await outcome
            pause = waiter.next_pause(batch)
            if pause is None:
                return batch
            await asyncio.sleep(pause)

    async def balance(self) -> Balance:
        return Balance.model_validate(await self._json("GET", "/credits/balance"))

    def iter_ledger(
        self,
        batch_id: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = _core.LEDGER_PAGE,
    ) -> AsyncIterator[LedgerEntry]:
        return self._follow(_core.ledger_pager(batch_id, type, since, until, page_size))

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
        wanted, missing = split([item async for item in self.iter_items(batch_id)])
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(item: Item) -> DownloadedItem:
            async with gate:
                done = await self._download_item(plan_item(folder, item, thumbnails))
            if on_file is not None:
                on_file(done)
            return done

        items = await asyncio.gather(*(one(i) for i in wanted))
        return DownloadReport(items=list(items), missing=missing)

    async def _download_item(self, plan: ItemPlan) -> DownloadedItem:
        item = plan.item
        assert item.video_url is not None
        digest = plan.present or await self._fetch(
            item.video_url, plan.path, item.video_sha256, item.video_size_bytes
        )
        if plan.fetch_thumbnail and plan.thumbnail and item.thumbnail_url:
            await self._fetch(item.thumbnail_url, plan.thumbnail, None, None)
        return plan.result(digest)

    async def _fetch(self, url: str, path: Path, sha256: str | None, size: int | None) -> str:
        part = part_path(path)
        attempts = file_attempts(self.retry, url, path)
        while True:
            try:
                await self._fetch_once(url, part)
                actual = finish(part, path, sha256, size)
                if actual is None:
                    raise RetryLater(None, MISMATCH)
                return actual
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.failed(exc))
            except RetryLater as exc:
                await asyncio.sleep(attempts.failed(exc, exc.retry_after))

    async def _fetch_once(self, url: str, part: Path) -> None:
        have, hdrs = resume_headers(part, file_headers(url, self.base_url, self._api_key))
        async with self._files.stream("GET", url, headers=hdrs) as r:
            check_file_answer(url, part, r)
            with open_part(part, r.status_code, have) as f:
                async for chunk in r.aiter_bytes(CHUNK):
                    f.write(chunk)
