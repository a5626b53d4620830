"""Rounds at scale: do rounds stay cheap with 10k, 100k and 1M rows in video_tasks?

    python -m bench.scale [--max-rows N] [--live N] [--quick] [--json FILE]

PostgreSQL scratch database. History is bulk-inserted with ``generate_series`` (settled
batches of 10,000 succeeded tasks each; ``next_attempt_at`` NULL as the worker leaves them),
then ``VACUUM ANALYZE``. At each size (10k, 100k, 1M; ``--quick`` or ``--max-rows 100000``
stops at 100k):

* idle round: ``run_once`` with nothing due (median of 10);
* live round: a small live workload (2 batches x 50 tasks, zero-latency simulator) run by
  ``run_once`` in this process until settled: rounds, median duration of rounds that did
  work, total time;
* ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim statements (``claims.claim_for_submit`` and
  ``claims.claim_for_poll``, captured as the worker sends them and re-run inside a rolled-back
  transaction with some live tasks due), and the execution time and scans of the round's
  other queries (``pick_batches``, ``settleable_batches``, ``count_waiting_polls``,
  ``next_due_at``, the pipeline stages' due-time reads, ``inflight_room``).
"""

from __future__ import annotations

import random
import re
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import common as c
from vidbatch.clock import utcnow
from vidbatch.runtime import Runtime
from vidbatch.settings import Settings
from vidbatch.worker import claims
from vidbatch.worker.round import run_once

SIZES = (10_000, 100_000, 1_000_000)
PER_BATCH = 10_000


async def add_history(db: c.Scratch, account_id: str, have: int, target: int) -> float:
    t0 = time.perf_counter()
    first_batch, last_batch = have // PER_BATCH, target // PER_BATCH
    async with db.engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO batch_jobs (id, user_id, status, total_count, success_count,
                cost_per_video, frozen_credits, credits_spent, settlement_status, settled_at,
                request_id, created_at, updated_at, completed_at)
            SELECT 'hist-b' || g, :acct, 'completed', :per, :per, 10, :per * 10, :per * 10,
                'finalized', now() - interval '1 day', 'hist-' || g,
                now() - interval '2 days', now() - interval '1 day', now() - interval '1 day'
            FROM generate_series(:b0, :b1 - 1) g"""),
            {"acct": account_id, "per": PER_BATCH, "b0": first_batch, "b1": last_batch},
        )
        await conn.execute(
            text("""
            INSERT INTO video_tasks (id, batch_job_id, account_id, batch_index, model, prompt,
                cost_credits, status, progress, video_url, grsai_task_id, attempts,
                poll_count, submitted_at, created_at, updated_at, completed_at)
            SELECT 'hist-t' || g, 'hist-b' || (g / :per), :acct, g % :per, 'sora-2',
                'history ' || g, 10, 'succeeded', 100, 'https://cdn.example/' || g || '.mp4',
                '4-hist-' || g, 1, 2, now() - interval '2 days', now() - interval '2 days',
                now() - interval '1 day', now() - interval '1 day'
            FROM generate_series(:t0, :t1 - 1) g"""),
            {"acct": account_id, "per": PER_BATCH, "t0": have, "t1": target},
        )
    async with db.engine.connect() as conn:
        conn2 = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn2.execute(text("VACUUM ANALYZE video_tasks"))
        await conn2.execute(text("VACUUM ANALYZE batch_jobs"))
    return time.perf_counter() - t0


class Capture:
    def __init__(self, db: c.Scratch) -> None:
        self.on = False
        self.seen: list[tuple[str, Any]] = []

        @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
        def _cap(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _m: bool) -> None:
            if self.on:
                self.seen.append((statement, params))


async def explain(conn: AsyncConnection, statement: str, params: Any) -> list[str]:
    rows = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
    return [r[0] for r in rows.all()]


def plan_summary(lines: list[str]) -> str:
    scans = sorted(
        {
            m.group(0)
            for ln in lines
            for m in [
                re.search(
                    r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan)"
                    r"( using \w+)? on \w+",
                    ln,
                )
            ]
            if m
        }
    )
    exec_ms = next((ln.split(":")[1].strip() for ln in lines if "Execution Time" in ln), "?")
    return f"{exec_ms}; " + "; ".join(scans)


async def make_due(conn: AsyncConnection, batch_id: str) -> None:
    """Half the live batch's tasks processing and due for a poll (inside the caller's
    transaction, rolled back afterwards)."""
    now = utcnow()
    await conn.execute(
        text(
            "UPDATE video_tasks SET status = 'processing', grsai_task_id = 'x-' || id, "
            "next_attempt_at = :due WHERE batch_job_id = :b AND batch_index % 2 = 0"
        ),
        {"due": now - timedelta(seconds=1), "b": batch_id},
    )


async def explain_claims(db: c.Scratch, cap: Capture, caller: Any) -> dict[str, Any]:
    batch_id = (await c.create_batches(db.engine, caller, [50], tag="explain"))[0]
    now = utcnow()
    calls = {
        "claim_for_submit": lambda conn: claims.claim_for_submit(
            conn, batch_id, owner="bench", now=now, lease_until=now + timedelta(seconds=60), limit=1
        ),
        "claim_for_poll": lambda conn: claims.claim_for_poll(
            conn, owner="bench", now=now, lease_until=now + timedelta(seconds=60), limit=1
        ),
        "pick_batches": lambda conn: claims.pick_batches(conn, now, 20),
        "settleable_batches": lambda conn: claims.settleable_batches(conn, 10),
        "count_waiting_polls": lambda conn: claims.count_waiting_polls(conn, now),
        "next_due_at": lambda conn: claims.next_due_at(conn),
        "next_submit_due": lambda conn: claims.next_due_at(conn, claims.SUBMIT_DUE),
        "next_poll_due": lambda conn: claims.next_due_at(conn, claims.POLL_DUE),
        "next_archive_due_at": lambda conn: claims.next_archive_due_at(conn),
        "inflight_room": lambda conn: claims.inflight_room(conn, 50, now),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        async with db.engine.connect() as conn:
            await conn.begin()
            await make_due(conn, batch_id)
            cap.seen.clear()
            cap.on = True
            await call(conn)
            cap.on = False
            await conn.rollback()
        statement, params = next(s for s in cap.seen if "pg_advisory" not in s[0])
        async with db.engine.connect() as conn:
            await conn.begin()
            await make_due(conn, batch_id)
            lines = await explain(conn, statement, params)
            await conn.rollback()
        out[name] = {"plan": lines, "summary": plan_summary(lines)}
    # Leave the database as it was: the explain batch is settled out of the way.
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE video_tasks SET status='cancelled', next_attempt_at=NULL"
                " WHERE batch_job_id = :b"
            ),
            {"b": batch_id},
        )
        await conn.execute(
            text(
                "UPDATE batch_jobs SET settled_at = now(), completed_at = now(),"
                " status = 'cancelled', settlement_status = 'refunded' "
                "WHERE id = :b"
            ),
            {"b": batch_id},
        )
    return out


async def rounds(db: c.Scratch, sim: c.Sim, caller: Any) -> dict[str, Any]:
    settings = Settings(
        database_url=db.url,
        grsai_host=sim.url,
        grsai_api_key="sk-bench",
        require_https_video_url=False,
        poll_intervals="0.02,0.02,0.02",
        callback_secret="bench",
        secret_key=c.BENCH_SECRET_KEY,
        task_concurrency=16,
        worker_max_start_tasks_per_batch=100,
        worker_max_claim=20,
        worker_max_poll=500,
    )
    rt = await Runtime.open(settings, engine=db.engine)
    rng = random.Random(1)
    try:
        idle = []
        for _ in range(10):
            s = await run_once(rt, owner="bench", rng=rng, deliver_webhooks=False)
            idle.append(s.duration_ms)
        await c.create_batches(db.engine, caller, [50, 50], tag="live")
        t0 = time.perf_counter()
        work, n = [], 0
        while await c.unsettled(db.engine) and n < 500:
            s = await run_once(rt, owner="bench", rng=rng, deliver_webhooks=False)
            n += 1
            if s.did_work:
                work.append(s.duration_ms)
        live_s = time.perf_counter() - t0
    finally:
        await rt.close()
    return {
        "idle_round_ms": c.median(idle),
        "work_round_ms": c.median(work),
        "rounds": n,
        "live_100_tasks_s": live_s,
    }


async def main_async(args: Any) -> dict[str, Any]:
    info = c.print_machine()
    max_rows = args.max_rows or (100_000 if args.quick else 1_000_000)
    sizes = [s for s in SIZES if s <= max_rows]
    work = c.Workdir(keep=args.keep_logs)
    sim = c.Sim(work)
    results = []
    try:
        async with c.scratch_db("postgres", "scale") as db:
            cap = Capture(db)
            caller = await c.new_account(db.engine, credits=10_000_000)
            have = 0
            for size in sizes:
                insert_s = await add_history(db, caller.account_id, have, size)
                have = size
                r = await rounds(db, sim, caller)
                plans = await explain_claims(db, cap, caller)
                r.update(rows=size, insert_s=insert_s, plans=plans)
                results.append(r)
                print(
                    f"\n=== {size:,} rows in video_tasks (history inserted in {insert_s:.1f}s) ==="
                )
                print(
                    f"idle round {r['idle_round_ms']} ms; live workload (100 tasks): "
                    f"{r['rounds']} rounds, median working round {r['work_round_ms']} ms, "
                    f"{r['live_100_tasks_s']:.2f} s"
                )
                for name in ("claim_for_submit", "claim_for_poll"):
                    print(f"-- EXPLAIN (ANALYZE, BUFFERS) {name}:")
                    for ln in plans[name]["plan"]:
                        print("   " + ln)
                for name, p in plans.items():
                    print(f"   {name:20s} {p['summary']}")
    finally:
        sim.stop()
        work.close()
    print()
    print(
        c.table(
            results,
            [
                ("rows", "rows in video_tasks"),
                ("idle_round_ms", "idle round ms"),
                ("work_round_ms", "working round ms (median)"),
                ("rounds", "rounds for 100 tasks"),
                ("live_100_tasks_s", "100 tasks s"),
            ],
        )
    )
    return {"machine": info, "results": results}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--max-rows", type=int, help="stop after this size (default 1,000,000)")
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
