"""The ``vidbatch-client`` command against a real server: a 2,500-line file split into three
batches, waited for and downloaded; a crash in the middle of a submit and a re-run; the
typed refusal of a customer without enough credits."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from cli_run import popen, run
from vbstack import Account, FaultProxy, Server
from vidbatch_client import Client


def write_jsonl(path: Path, n: int, tag: str) -> Path:
    lines = [json.dumps({"prompt": f"{tag} clip {i}", "metadata": {"line": i}}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def reserves(vb: Client) -> list[str]:
    """The batch of every reserve entry of the account (one per batch ever charged)."""
    return [e.batch_id or "" for e in vb.iter_ledger(type="reserve")]


def is_mp4(path: Path) -> bool:
    head = path.read_bytes()[:12]
    return len(head) == 12 and head[4:8] == b"ftyp"


@pytest.mark.one_database  # the client's work; both databases are covered by the others
def test_submit_2500_lines_wait_and_download(
    server: Server, account: Account, vb: Client, workdir: Path
) -> None:
    prompts = write_jsonl(workdir / "prompts.jsonl", 2500, "big")
    videos = workdir / "videos"
    done = run(
        server,
        account,
        "submit",
        str(prompts),
        "--wait",
        "--download",
        str(videos),
        "--poll-interval",
        "0.2",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    batches = summary["batches"]
    # the server takes at most 1,000 items a batch (ENTERPRISE_BATCH_MAX_ITEMS)
    assert [b["items"] for b in batches] == [1000, 1000, 500]
    assert all(b["status"] == "succeeded" and not b["idempotent_replay"] for b in batches)
    assert "batch 3/3" in done.stderr and "total" in done.stderr  # the progress bars

    for entry in batches:
        folder = videos / entry["batch_id"]
        items = list(vb.iter_items(entry["batch_id"]))
        files = sorted(folder.glob("*.mp4"))
        assert len(files) == len(items) == entry["items"] == entry["downloaded"]
        assert not list(folder.glob("*.part"))
        by_name = {f"{i.index:05d}-{i.item_id}.mp4": i for i in items}
        for path in files:
            assert is_mp4(path), path
            item = by_name[path.name]
            # no result store: the provider's URL, nothing else to fetch
            thumbs = [p for p in folder.glob(f"{path.stem}.*") if p.suffix != ".mp4"]
            assert (item.archive_status, item.video_sha256, thumbs) == (None, None, [])

    # charged once per batch; the same command again creates, charges and downloads nothing
    assert sorted(reserves(vb)) == sorted(b["batch_id"] for b in batches)
    again = run(server, account, "submit", str(prompts), "--download", str(videos), "--json")
    assert again.returncode == 0, again.stderr
    replayed = json.loads(again.stdout.strip().splitlines()[-1])["batches"]
    assert [b["batch_id"] for b in replayed] == [b["batch_id"] for b in batches]
    assert all(b["idempotent_replay"] for b in replayed)
    assert [(b["downloaded"], b["skipped"]) for b in replayed] == [(0, 1000), (0, 1000), (0, 500)]
    assert len(reserves(vb)) == 3


def test_a_submit_killed_midway_and_run_again_submits_nothing_twice(
    server: Server, account: Account, vb: Client, proxy: FaultProxy, workdir: Path
) -> None:
    prompts = write_jsonl(workdir / "crash.jsonl", 30, "crash")
    args = ("submit", str(prompts), "--batch-size", "10", "--json")
    # the second create reaches the server, which makes the batch; the answer is held back
    # and the command killed before it arrives
    proxy.inject("POST", "/api/v1/batches", "forward", "hold")
    first = popen(proxy.url, account, *args)
    try:
        assert proxy.held.wait(60), "the second create never reached the server"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        proxy.release.set()
        if first.poll() is None:
            first.kill()
    made = [b.batch_id for b in vb.iter_batches()]
    assert len(made) == 2

    rerun = run(server, account, *args)
    assert rerun.returncode == 0, rerun.stderr
    batches = json.loads(rerun.stdout.strip().splitlines()[-1])["batches"]
    assert [b["idempotent_replay"] for b in batches] == [True, True, False]
    assert sorted(b["batch_id"] for b in batches[:2]) == sorted(made)
    assert len(list(vb.iter_batches())) == 3
    # one reserve per batch: the re-run charged only the third one
    assert sorted(reserves(vb)) == sorted(b["batch_id"] for b in batches)
    for entry in batches:
        vb.wait(entry["batch_id"], poll_interval=0.1)
    # 30 items made, 30 paid for: 10 credits each, nothing more held
    assert vb.balance().model_dump() == {
        "ok": True,
        "available": account.credits - 300,
        "reserved": 0,
        "total": account.credits - 300,
    }

    # and a third run (everything already there) changes nothing at all
    third = run(server, account, *args)
    assert third.returncode == 0, third.stderr
    assert all(b["idempotent_replay"] for b in json.loads(third.stdout)["batches"])
    assert len(reserves(vb)) == 3


def test_not_enough_credits_is_a_clear_error(server: Server, workdir: Path) -> None:
    poor = server.account(credits=50)
    prompts = write_jsonl(workdir / "poor.jsonl", 10, "poor")
    done = run(server, poor, "submit", str(prompts))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: not enough credits: 100 needed, 50 available"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.one_database
def test_status_cancel_results_and_balance(
    server: Server, account: Account, vb: Client, workdir: Path
) -> None:
    created = vb.create_batch(["one", "two"])
    batch = vb.wait(created.batch_id, poll_interval=0.1)
    status = run(server, account, "status", created.batch_id, "--json")
    assert json.loads(status.stdout)["status"] == batch.status == "succeeded"
    assert created.batch_id in run(server, account, "status", created.batch_id).stdout

    lines = run(server, account, "results", created.batch_id).stdout.splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded", "succeeded"]
    out = workdir / "r.csv"
    run(server, account, "results", created.batch_id, "--format", "csv", "-o", str(out))
    assert out.read_text().splitlines()[0].startswith("index,")

    ended = run(server, account, "cancel", created.batch_id)
    assert ended.returncode == 1
    assert "BATCH_ALREADY_ENDED" in ended.stderr

    balance = json.loads(run(server, account, "balance", "--json").stdout)
    assert balance == vb.balance().model_dump(mode="json")


@pytest.mark.one_database
def test_a_batch_over_the_servers_limit_says_what_to_do(
    server: Server, account: Account, workdir: Path
) -> None:
    prompts = write_jsonl(workdir / "wide.jsonl", 1001, "wide")
    done = run(server, account, "submit", str(prompts), "--batch-size", "1001")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 400 TOO_MANY_ITEMS: ")
    assert last.endswith("(pass a smaller --batch-size)")


@pytest.mark.one_database
def test_a_bad_file_is_a_usage_error(server: Server, account: Account, workdir: Path) -> None:
    bad = workdir / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    done = run(server, account, "submit", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == 'error: line 2: expected an object with a "prompt" string'
