"""The operator's batch and webhook commands, run for real in subprocesses against a SQLite
file: what an operator reads, and the one-line errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.acceptance.cli_helpers import assert_usage_error, ok, one_json
from tests.helpers import finish_tasks, items, new_batch
from tests.helpers import keyed_engine as make_engine
from vidbatch.db.schema import video_tasks
from vidbatch.services.batches import Caller

#: Webhooks go to a closed local port: attempts fail fast with "connection refused".
ENV = {
    "VIDBATCH_ALLOW_PRIVATE_WEBHOOKS": "1",
    "GRSAI_API_KEY": "sk-test",
    "GRSAI_HOST": "http://127.0.0.1:9",
}
CLOSED = "http://127.0.0.1:9/hook"


def cli(args: Sequence[str], db_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as an operator would."""
    env = {**os.environ, "COLUMNS": "200", "DATABASE_URL": db_url, **ENV, **extra}
    return subprocess.run(
        [sys.executable, "-m", "vidbatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_many(calls: Sequence[Sequence[str]], db_url: str) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once (each in its own process)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: cli(args, db_url), calls))


async def _setup(db_url: str, account_id: str, key_id: str) -> tuple[str, str]:
    """A settled batch (1 succeeded, 1 failed, 1 refused by moderation) with a webhook, and
    a queued batch without one; made through the services, as the API would."""
    engine = make_engine(db_url)
    try:
        caller = Caller(account_id=account_id, key_id=key_id)
        settled = await new_batch(engine, caller, {"items": items(3), "webhook_url": CLOSED})
        await finish_tasks(engine, settled.batch_id, {0: "succeeded", 1: "failed", 2: "failed"})
        async with engine.begin() as conn:
            await conn.execute(
                update(video_tasks)
                .where(
                    video_tasks.c.batch_job_id == settled.batch_id, video_tasks.c.batch_index == 2
                )
                .values(failure_type="moderation")
            )
        plain = await new_batch(engine, caller, items(1))
        return settled.batch_id, plain.batch_id
    finally:
        await engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/admin.db"


def test_batches_and_webhooks_commands(sqlite_url: str) -> None:
    acc = one_json(cli(["accounts", "create", "acme", "--credits", "100", "--json"], sqlite_url))
    settled, plain = asyncio.run(_setup(sqlite_url, acc["account_id"], acc["key_id"]))
    # one worker round settles the batch whose items ended and tries its webhooks
    ok(cli(["worker", "--once"], sqlite_url))

    (listed, table, mine, nobody, shown, text, hooks, all_hooks) = cli_many(
        [
            ["batches", "list", "--json"],
            ["batches", "list", "--status", "partial"],
            ["batches", "list", "--account", acc["account_id"], "--json"],
            ["batches", "list", "--account", "nobody", "--json"],
            ["batches", "show", settled, "--json"],
            ["batches", "show", settled],
            ["webhooks", "list", settled, "--json"],
            ["webhooks", "list"],
        ],
        sqlite_url,
    )
    by_id = {b["batch_id"]: b for b in one_json(listed)}
    assert set(by_id) == {settled, plain}
    s = by_id[settled]
    assert (s["status"], s["reserved"], s["charged"], s["refunded"], s["net"]) == (
        "partial",
        30,
        10,
        20,
        10,
    )
    assert s["reconciled"] and s["ledger"] == {
        "reserved": 30,
        "charged": 10,
        "refunded": 20,
        "net": 10,
    }
    assert by_id[plain]["status"] == "queued" and by_id[plain]["held"] == 10
    assert settled in ok(table) and plain not in table.stdout and "ok" in table.stdout
    assert len(one_json(mine)) == 2 and one_json(nobody) == []

    detail = one_json(shown)
    assert detail["task_counts"] == {"failed": 2, "succeeded": 1}
    assert detail["failure_types"] == {"model_error": 1, "moderation": 1}
    assert detail["webhook_url"] == CLOSED
    assert "partial" in ok(text) and settled in text.stdout
    # read by a person: no Python dicts, no None
    assert "None" not in text.stdout and "{" not in text.stdout
    assert "failed=2, succeeded=1" in text.stdout
    assert "parent_batch_id" in text.stdout
    # every id whole on one line, even in a narrow terminal
    narrow = ok(cli(["batches", "list"], sqlite_url, COLUMNS="60"))
    rows = [ln for ln in narrow.splitlines() if settled in ln or plain in ln]
    assert len(rows) == 2 and acc["account_id"] in rows[0]

    # webhooks: every event was tried once and refused by the closed port
    events = one_json(hooks)
    assert [h["event_type"] for h in events] == [
        "batch.created",
        "batch.completed",
        "batch.refunded",
    ]
    assert all(h["attempts"] == 1 and h["state"] == "retrying" for h in events)
    assert all(h["last_error"].startswith("connection refused") for h in events)
    assert "connection refused" in ok(all_hooks)
    out = ok(cli(["webhooks", "resend", settled], sqlite_url))
    assert out.startswith("batch.completed of batch") and "sent again" in out
    hooks = one_json(cli(["webhooks", "list", settled, "--json"], sqlite_url))
    assert [(h["event_type"], h["attempts"], h["state"]) for h in hooks][1] == (
        "batch.completed",
        0,
        "pending",
    )

    # retry the failed item (moderation left out), once
    out = ok(cli(["batches", "retry-failed", settled], sqlite_url))
    assert "retries item(s) 1 of" in out and "10 credits reserved" in out
    assert "1 moderation failure(s) left out" in out
    child = out.split()[1]
    again = one_json(cli(["batches", "retry-failed", settled, "--json"], sqlite_url))
    assert again["batch_id"] == child and again["idempotent_replay"] is True
    both = one_json(
        cli(["batches", "retry-failed", settled, "--include-moderation", "--json"], sqlite_url)
    )
    # only the moderation failure is left to retry: item 1 is not charged twice
    assert both["retried_indices"] == [2] and both["required_credits"] == 10
    child_view = one_json(cli(["batches", "show", child, "--json"], sqlite_url))
    assert (child_view["parent_batch_id"], child_view["source"]) == (settled, "admin-retry")

    out = ok(cli(["batches", "cancel", child], sqlite_url))
    assert f"batch {child} cancelled: 1 item(s) cancelled, 10 credits refunded" in out
    assert ok(cli(["audit"], sqlite_url)).strip() == "audit: clean"
    after = one_json(cli(["batches", "show", settled, "--json"], sqlite_url))
    assert after["charged"] == 10 and after["refunded"] == 20  # the parent is unchanged


def test_errors_are_one_line(sqlite_url: str) -> None:
    cases = [
        (["batches", "show", "nope"], "batch nope not found"),
        (["batches", "cancel", "nope"], "batch nope not found"),
        (["batches", "retry-failed", "nope"], "batch nope not found"),
        (["batches", "list", "--status", "bogus"], "--status must be one of"),
        (["batches", "list", "--limit", "0"], "--limit"),
        (["webhooks", "list", "nope"], "batch nope not found"),
        (["webhooks", "resend", "nope"], "batch nope not found"),
        (["batches", "show"], "Missing argument"),
    ]
    ok(cli(["batches", "list"], sqlite_url))  # the database exists before they race
    results = cli_many([args for args, _ in cases], sqlite_url)
    for (args, expected), result in zip(cases, results, strict=True):
        assert expected in assert_usage_error(result), args


def test_refused_actions_say_why(sqlite_url: str) -> None:
    acc = one_json(cli(["accounts", "create", "acme", "--credits", "100", "--json"], sqlite_url))
    _, plain = asyncio.run(_setup(sqlite_url, acc["account_id"], acc["key_id"]))
    early, no_hooks = cli_many(
        [["batches", "retry-failed", plain], ["webhooks", "resend", plain]], sqlite_url
    )
    assert "retry its failed items once it has settled" in assert_usage_error(early)
    assert "has no webhook events" in assert_usage_error(no_hooks)
    ok(cli(["batches", "cancel", plain], sqlite_url))
    line = assert_usage_error(cli(["batches", "cancel", plain], sqlite_url))
    assert "already ended" in line
    nothing = assert_usage_error(cli(["batches", "retry-failed", plain], sqlite_url))
    assert "no failed items to retry" in nothing
