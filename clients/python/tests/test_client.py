"""``Client`` and ``AsyncClient`` against a real server: the published flow, retries through
injected 429s and 5xx (one batch, charged once), the typed errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import vidbatch_client as vc
from conftest import FAST_RETRY
from vbstack import Account, FaultProxy, Server
from vidbatch_client import AsyncClient, Client


def test_create_wait_items_results_ledger(vb: Client, account: Account) -> None:
    seen: list[str] = []
    created = vb.create_batch(
        [
            {"prompt": "A cat surfing", "metadata": {"sku": "C1"}},
            "A fox in the snow",
            {"prompt": "refused [sim:moderation]"},
        ],
        request_id="order-0001",
    )
    assert (created.status, created.total_count, created.idempotent_replay) == ("pending", 3, False)
    assert created.request_id == "order-0001"
    batch = vb.wait(
        created.batch_id, on_progress=lambda b: seen.append(b.status), poll_interval=0.1
    )
    assert (batch.status, batch.succeeded_count, batch.failed_count) == ("partial", 2, 1)
    assert seen[-1] == "partial" and batch.completed_at is not None
    assert batch.credits_reserved == batch.credits_settled + batch.credits_refunded

    items = list(vb.iter_items(created.batch_id, page_size=2))  # two pages
    assert [i.index for i in items] == [0, 1, 2]
    assert items[0].metadata == {"sku": "C1"}
    assert items[2].failure_type == "model_error" and items[2].video_url is None
    assert [i.index for i in vb.iter_items(created.batch_id, status="failed")] == [2]
    assert [r.status for r in vb.iter_results(created.batch_id)] == [i.status for i in items]

    # the same request id again: the first batch, not a second one
    again = vb.create_batch(
        [
            {"prompt": "A cat surfing", "metadata": {"sku": "C1"}},
            "A fox in the snow",
            {"prompt": "refused [sim:moderation]"},
        ],
        request_id="order-0001",
    )
    assert (again.batch_id, again.idempotent_replay) == (created.batch_id, True)

    entries = list(vb.iter_ledger(batch_id=created.batch_id, page_size=1))
    assert sorted(e.type for e in entries) == ["refund", "reserve", "settle"]
    balance = vb.balance()
    assert balance.total == balance.available + balance.reserved
    assert balance.available == account.credits - batch.credits_settled
    with pytest.raises(vc.BatchAlreadyEnded):
        vb.cancel(created.batch_id)


def test_429_and_5xx_are_retried_into_one_batch(
    server: Server, account: Account, proxy: FaultProxy, vb: Client
) -> None:
    # refused three times before it reaches the server; then an answer lost after the server
    # made the batch (a 502 from the proxy): the retry carries the same request id
    proxy.inject("POST", "/api/v1/batches", 429, 500, 503)
    with Client(account.api_key, proxy.url, retry=FAST_RETRY) as flaky:
        created = flaky.create_batch(["retried"])
        assert created.idempotent_replay is False
        proxy.inject("GET", "/api/v1/batches/", 502, 429)
        assert flaky.get_batch(created.batch_id).batch_id == created.batch_id
    statuses = [s for m, p, s in proxy.seen if m == "POST"]
    assert statuses == [429, 500, 503, 200]
    assert [b.batch_id for b in vb.iter_batches()] == [created.batch_id]
    assert [e.batch_id for e in vb.iter_ledger(type="reserve")] == [created.batch_id]


def test_an_answer_lost_after_the_server_created_the_batch(
    account: Account, proxy: FaultProxy, vb: Client
) -> None:
    proxy.inject("POST", "/api/v1/batches", "lose")
    with Client(account.api_key, proxy.url, retry=FAST_RETRY) as flaky:
        created = flaky.create_batch(["lost once"])  # no request id given: one is generated
    assert created.idempotent_replay is True  # the retry found the first attempt's batch
    assert [s for m, _, s in proxy.seen if m == "POST"] == [502, 200]
    assert [b.batch_id for b in vb.iter_batches()] == [created.batch_id]
    assert len(list(vb.iter_ledger(type="reserve"))) == 1


@pytest.mark.one_database
def test_retries_run_out_into_typed_errors(account: Account, proxy: FaultProxy) -> None:
    few = vc.RetryPolicy(max_retries=1, backoff=0.01)
    with Client(account.api_key, proxy.url, retry=few) as vb:
        proxy.inject("GET", "/api/v1/credits/balance", 503, 503)
        with pytest.raises(vc.ServerError) as server_error:
            vb.balance()
        assert server_error.value.status == 503
        proxy.inject("GET", "/api/v1/credits/balance", 429, 429)
        with pytest.raises(vc.RateLimited) as limited:
            vb.balance()
        assert limited.value.retry_after == 0
    with (
        Client(account.api_key, "http://127.0.0.1:9", retry=few, timeout=2) as nowhere,
        pytest.raises(vc.ConnectionFailed),
    ):
        nowhere.balance()


def test_not_enough_credits_is_the_typed_error(server: Server) -> None:
    poor = server.account(credits=50)
    with (
        Client(poor.api_key, server.base_url) as client,
        pytest.raises(vc.InsufficientCredits) as short,
    ):
        client.create_batch(["p"] * 10)
    assert (short.value.required, short.value.available, short.value.status) == (100, 50, 402)
    assert short.value.code == "INSUFFICIENT_CREDITS"
    with Client(poor.api_key, server.base_url) as client:
        assert list(client.iter_batches()) == []  # nothing was created
        assert client.balance().available == 50


@pytest.mark.one_database
def test_typed_errors(server: Server, vb: Client) -> None:
    with pytest.raises(vc.InvalidRequest) as invalid:
        vb.create_batch([{"prompt": ""}, {"prompt": "ok", "duration": 7}])
    assert [(e["index"], e["field"]) for e in invalid.value.item_errors] == [
        (0, "prompt"),
        (1, "duration"),
    ]
    with pytest.raises(vc.TooManyItems):
        vb.create_batch(["x"] * 1001)
    with pytest.raises(vc.NotFound):
        vb.get_batch("no-such-batch")
    vb.create_batch(["a"], request_id="same-id")
    with pytest.raises(vc.IdempotencyKeyReused):
        vb.create_batch(["b"], request_id="same-id")
    with Client("vb_not_a_key", server.base_url) as stranger, pytest.raises(vc.AuthenticationError):
        stranger.balance()


def test_the_async_client(server: Server, simulator: str, account: Account, tmp_path: Path) -> None:
    async def flow() -> None:
        async with AsyncClient(account.api_key, server.base_url, retry=FAST_RETRY) as vb:
            created = await vb.create_batch(["async one", "async two"])
            progress: list[int] = []

            async def note(batch: vc.Batch) -> None:
                progress.append(batch.done_count)

            batch = await vb.wait(created.batch_id, on_progress=note, poll_interval=0.1)
            assert batch.status == "succeeded" and progress[-1] == 2
            items = [i async for i in vb.iter_items(created.batch_id)]
            assert [i.status for i in items] == ["succeeded", "succeeded"]
            report = await vb.download(created.batch_id, tmp_path, concurrency=2)
            assert (report.downloaded, report.skipped) == (2, 0)
            assert all(f.path.read_bytes()[4:8] == b"ftyp" for f in report.items)
            again = await vb.download(created.batch_id, tmp_path)
            assert (again.downloaded, again.skipped) == (0, 2)
            assert [e.type async for e in vb.iter_ledger(batch_id=created.batch_id)]
            assert (await vb.balance()).reserved == 0
            newest = [b.batch_id async for b in vb.iter_batches()]
            assert newest == [created.batch_id]
            # held at the provider until released: still running when the time is up
            held = await vb.create_batch(["held [sim:hold]"])
            with pytest.raises(vc.WaitTimeout) as late:
                await vb.wait(held.batch_id, timeout=0)
            assert not late.value.batch.ended
            httpx.post(f"{simulator}/_sim/release", timeout=10).raise_for_status()
            assert (await vb.wait(held.batch_id, poll_interval=0.1)).ended

    asyncio.run(flow())


@pytest.mark.one_database
def test_download_resumes_and_replaces_a_broken_file(vb: Client, tmp_path: Path) -> None:
    created = vb.create_batch(["resume one", "resume two"])
    vb.wait(created.batch_id, poll_interval=0.1)
    first = vb.download(created.batch_id, tmp_path)
    whole = first.items[0].path.read_bytes()
    # an interrupted download left half a file behind: it is continued, not restarted
    first.items[0].path.unlink()
    part = first.items[0].path.with_name(first.items[0].path.name + ".part")
    part.write_bytes(whole[: len(whole) // 2])
    again = vb.download(created.batch_id, tmp_path)
    assert (again.downloaded, again.skipped) == (1, 1)
    assert first.items[0].path.read_bytes() == whole and not part.exists()
