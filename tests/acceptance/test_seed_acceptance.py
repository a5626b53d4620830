"""The seed's acceptance test, verbatim: its curl commands against `vidbatch serve` in a
subprocess, with the GrsAI simulator in another, in polling mode and in webhook mode; then
settlement, the refund of a failed item through the original's /api/video/batch alias, the
audit, and a look at the server's logs for secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from vidbatch.domain.callback_tokens import callback_token
from vidbatch.embedded import bind

pytestmark = pytest.mark.slow

CREATE_BATCH = r"""curl -X POST "$BASE_URL/api/enterprise/video-batch" \
  -H "x-api-key: $ENTERPRISE_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "items": [
      {"prompt": "A cinematic video of a city", "model": "sora-2",
       "aspect_ratio": "9:16", "duration": 10},
      {"prompt": "An anime style video", "model": "veo-flash",
       "aspect_ratio": "16:9", "meta": {"firstFrameUrl": "https://example.com/first.jpg"}}
    ]
  }'"""

TRIGGER_WORKER = (
    'curl -X POST "$BASE_URL/api/internal/batch-worker" '
    '-H "x-worker-secret: $INTERNAL_WORKER_SECRET"'
)

WORKER_SECRET = "acceptance-worker-secret"
CALLBACK_SECRET = "acceptance-callback-secret"
GRSAI_KEY = "sk-acceptance-key"
BASE_URL_VARS = ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL", "APP_URL")


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def query(db_url: str, sql: str, **params: Any) -> list[Any]:
    """Read the database as an operator would (a plain synchronous connection)."""
    import asyncio

    from tests.helpers import keyed_engine as make_engine

    async def go() -> list[Any]:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


class Stack:
    """The simulator and `vidbatch serve --no-worker` as subprocesses."""

    def __init__(self, db_url: str, tmp: Path, webhook_mode: bool) -> None:
        self.db_url = db_url
        self.tmp = tmp
        sim_sock, api_sock = bind(), bind()
        self.sim_port = sim_sock.getsockname()[1]
        self.api_port = api_sock.getsockname()[1]
        sim_sock.close()
        api_sock.close()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {k: v for k, v in os.environ.items() if k not in BASE_URL_VARS}
        self.env.update(
            {
                "DATABASE_URL": db_url,
                "GRSAI_HOST": f"http://127.0.0.1:{self.sim_port}",
                "GRSAI_API_KEY": GRSAI_KEY,
                "INTERNAL_WORKER_SECRET": WORKER_SECRET,
                "VIDBATCH_CALLBACK_SECRET": CALLBACK_SECRET,
                "VIDBATCH_POLL_INTERVALS": "0.2,0.2,0.2",
                "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": "false",
                "VIDBATCH_LOG_FORMAT": "json",
                "VIDBATCH_LOG_LEVEL": "INFO",
            }
        )
        if webhook_mode:
            self.env["APP_URL"] = self.base_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_path = tmp / "serve.log"

    def start(self) -> None:
        sim_log = open(self.tmp / "sim.log", "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vidbatch",
                    "simulator",
                    "--port",
                    str(self.sim_port),
                    "--seed",
                    "3",
                    "--gen-time",
                    "0.6",
                    "--hold",  # tasks run until the test stops holding them
                ],
                env=self.env,
                stdout=sim_log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"http://127.0.0.1:{self.sim_port}/_sim/health")
        log = open(self.log_path, "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vidbatch",
                    "serve",
                    "--no-worker",
                    "--port",
                    str(self.api_port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"{self.base_url}/healthz")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vidbatch", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop_holding(self) -> None:
        """The simulator finishes the tasks it holds, and holds no new ones."""
        sim = f"http://127.0.0.1:{self.sim_port}/_sim"
        httpx.post(f"{sim}/config", json={"hold": False}, timeout=10).raise_for_status()
        httpx.post(f"{sim}/release", timeout=10).raise_for_status()

    def curl(self, command: str, api_key: str) -> dict[str, Any]:
        env = {**self.env, "BASE_URL": self.base_url, "ENTERPRISE_API_KEY": api_key}
        done = subprocess.run(
            ["bash", "-c", command + " --silent --show-error"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


def batch(db_url: str, batch_id: str) -> Any:
    (row,) = query(db_url, "SELECT * FROM batch_jobs WHERE id = :id", id=batch_id)
    return row


def tasks(db_url: str, batch_id: str) -> list[Any]:
    return query(
        db_url,
        "SELECT * FROM video_tasks WHERE batch_job_id = :id ORDER BY batch_index",
        id=batch_id,
    )


def rounds_until_settled(stack: Stack, api_key: str, batch_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if batch(stack.db_url, batch_id).settled_at is not None:
            return
        stack.curl(TRIGGER_WORKER, api_key)
        time.sleep(0.25)
    raise AssertionError("batch not settled")


@pytest.mark.parametrize("mode", ["polling", "webhook"])
def test_seed_acceptance(db_url: str, tmp_path: Path, mode: str) -> None:
    stack = Stack(db_url, tmp_path, webhook_mode=mode == "webhook")
    try:
        created = stack.cli("accounts", "create", "acme", "--credits", "1000", "--json")
        assert created.returncode == 0, created.stderr
        api_key = json.loads(created.stdout)["api_key"]
        stack.start()

        answer = stack.curl(CREATE_BATCH, api_key)
        assert answer["ok"] is True and answer["status"] == "queued"
        assert (answer["total_count"], answer["required_credits"]) == (2, 60)
        batch_id = answer["batch_id"]

        summary = stack.curl(TRIGGER_WORKER, api_key)
        assert summary["ok"] is True and summary["dispatch"]["tasks_started"] == 2
        rows = tasks(db_url, batch_id)
        assert all(r.grsai_task_id for r in rows)  # video_tasks.grsai_task_id is written
        assert all(r.status == "processing" for r in rows)  # status becomes processing
        assert batch(db_url, batch_id).frozen_credits == 60  # batch_jobs.frozen_credits set
        stack.stop_holding()  # the provider may now finish them

        if mode == "webhook":
            # the provider calls back; the callback writes video_url and status
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = tasks(db_url, batch_id)
                if all(r.status == "succeeded" for r in rows):
                    break
                time.sleep(0.2)
            assert all(r.status == "succeeded" and r.video_url for r in rows)
            # the original settled in the next round; vidbatch's last callback may settle
            # the batch itself (without a result store) — either way exactly once, below
        rounds_until_settled(stack, api_key, batch_id)
        done = batch(db_url, batch_id)
        assert (done.status, done.credits_spent, done.credits_refunded) == ("completed", 60, 0)
        assert done.settlement_status == "finalized"

        # A failed item is refunded — through the original's alias.
        alias = stack.curl(
            'curl -X POST "$BASE_URL/api/video/batch" -H "Authorization: Bearer '
            '$ENTERPRISE_API_KEY" -H "Content-Type: application/json" -d \'{"items": ['
            '{"prompt": "fine", "model": "sora-2"}, '
            '{"prompt": "refused [sim:moderation]", "model": "sora-2"}]}\'',
            api_key,
        )
        assert alias["ok"] is True
        rounds_until_settled(stack, api_key, alias["batch_id"])
        second = batch(db_url, alias["batch_id"])
        assert (second.status, second.credits_spent, second.credits_refunded) == ("partial", 10, 10)
        assert second.settlement_status == "refunded"
        failed = [r for r in tasks(db_url, alias["batch_id"]) if r.status == "failed"]
        assert [r.failure_type for r in failed] == ["moderation"]
        ledger = query(
            db_url,
            "SELECT type, delta, frozen_delta FROM credit_ledger WHERE batch_id = :id ORDER BY id",
            id=alias["batch_id"],
        )
        assert [tuple(r) for r in ledger] == [
            ("reserve", 0, 20),
            ("settle", -10, -10),
            ("refund", 0, -10),
        ]
        audit = stack.cli("audit")
        assert audit.returncode == 0 and "audit: clean" in audit.stdout
    finally:
        stack.stop()

    # Nothing secret reached the server's logs during the whole flow.
    logs = stack.log_path.read_text()
    secrets = [api_key, WORKER_SECRET, CALLBACK_SECRET, GRSAI_KEY]
    secrets += [callback_token(CALLBACK_SECRET.encode(), r.id) for r in tasks(db_url, batch_id)]
    for secret in secrets:
        assert secret not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("batch_id") == batch_id for line in lines)
