"""Settlement latency in webhook mode: the provider's last callback -> batch settled.

    python -m bench.latency [--batches B] [--size S] [--workers W] [--runs R] [--quick]
                            [--result-store default,none] [--json FILE]

PostgreSQL, one ``vidbatch serve --no-worker`` receiving the simulator's callbacks
(``APP_URL`` set) and W daemon ``vidbatch worker`` processes (default 1), with vidbatch's
default settings otherwise. Batches of S items (each with a customer ``webhook_url``, a sink
in the simulator process) are posted at a steady pace while earlier ones run; generation
times are lognormal (median 1 s, sigma 0.5, 0.2..5 s).

``--result-store`` (a comma list, each measured apart): ``default`` keeps result archiving on
as a one-machine operator has it; PostgreSQL has no default store, so a ``file://`` directory
in the run's temporary directory (removed after the run); ``none`` turns it off; anything else
is a store URL used as given. API and workers have the same setting. After each run:
the tasks succeeded and archived, and ``vidbatch audit`` with the run's environment.

For every batch: the wall time the simulator started POSTing the last final callback of its
tasks (the simulator process records it) to the batch's ``completed_at`` (settled) and to the
``created_at`` of its ``batch.completed`` outbox row (``webhook_deliveries``). For every task:
its final callback to its ``completed_at``; and the settle step alone: the batch's last
task ``completed_at`` to the batch's ``completed_at``. Percentiles pool the batches of all runs. The
clocks are the same machine's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from bench import common as c

LATENCY_ENV = {
    "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": "false",
}
SIM_KNOBS = {
    "gen_time_mode": "lognormal",
    "gen_time": 1.0,
    "gen_time_sigma": 0.5,
    "gen_time_min": 0.2,
    "gen_time_max": 5.0,
    "callback_interval": 0.5,
}


async def run_one(
    n_batches: int,
    size: int,
    workers: int,
    pace: float,
    work: c.Workdir,
    *,
    result_store: str = c.STORE_NONE,
) -> dict[str, Any]:
    sim = c.Sim(work, **SIM_KNOBS)
    procs: list[c.Proc] = []
    try:
        async with c.scratch_db("postgres", "lat") as db:
            caller = await c.new_account(db.engine, credits=n_batches * size * c.PRICE * 2)
            store = c.result_store_setting(result_store, db)
            env = c.vidbatch_env(db.url, sim.url, result_store=store, **LATENCY_ENV)
            port = c.free_port()
            env["APP_URL"] = f"http://127.0.0.1:{port}"
            api, _ = await c.start_api(env, work, port=port)
            procs.append(api)
            procs += await c.start_workers(workers, env, work)
            hook = f"{sim.url}/_bench/hook"
            for b in range(n_batches):
                started = time.monotonic()
                await c.create_batches(db.engine, caller, [size], webhook_url=hook, tag=f"r{b}-")
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - started)))
            if not await c.wait_settled(db.engine, timeout=300, procs=procs):
                raise RuntimeError("batches not settled within 300 s")
            finals = sim.final_callbacks()
            async with db.engine.connect() as conn:
                task_rows = (
                    await conn.execute(
                        text("SELECT grsai_task_id, batch_job_id, completed_at FROM video_tasks")
                    )
                ).all()
                batch_rows = (
                    await conn.execute(
                        text(
                            "SELECT b.id, b.completed_at, w.created_at AS outbox_at "
                            "FROM batch_jobs b "
                            "LEFT JOIN webhook_deliveries w ON w.batch_id = b.id "
                            "AND w.event_type IN ('batch.completed', 'batch.failed')"
                        )
                    )
                ).all()
            c.stop_all(procs)
            archive = await c.archive_counts(db.engine)
            _, succeeded, total = await c.completion_span(db.engine)
            violations = c.vidbatch_audit(env, work)
    finally:
        c.stop_all(procs)
        sim.stop()
    sent: dict[str, float] = {}
    for cb in finals:  # the first delivery of each task's final state
        sent.setdefault(cb["remote_id"], cb["sent"])
    per_task: list[float] = []
    last_cb: dict[str, float] = {}
    last_done: dict[str, float] = {}
    for remote_id, batch_id, completed_at in task_rows:
        if completed_at is not None:
            last_done[batch_id] = max(last_done.get(batch_id, 0.0), completed_at.timestamp())
        if remote_id in sent and completed_at is not None:
            per_task.append(completed_at.timestamp() - sent[remote_id])
            last_cb[batch_id] = max(last_cb.get(batch_id, 0.0), sent[remote_id])
    settled, outbox, settle_step = [], [], []
    for batch_id, completed_at, outbox_at in batch_rows:
        if batch_id not in last_cb or completed_at is None:
            continue
        settled.append(completed_at.timestamp() - last_cb[batch_id])
        settle_step.append(completed_at.timestamp() - last_done[batch_id])
        if outbox_at is not None:
            outbox.append(outbox_at.timestamp() - last_cb[batch_id])
    return {
        "settled": settled,
        "outbox": outbox,
        "task": per_task,
        "settle_step": settle_step,
        "tasks_without_final_callback": len(task_rows) - len(per_task),
        "succeeded": succeeded,
        "total": total,
        "archived": archive.get("stored", 0),
        "archive_status": archive,
        "audit": violations,
    }


#: The latencies reported (keys of run_one's result).
LATENCIES = (
    ("settled", "final callback -> batch settled (completed_at)"),
    ("outbox", "final callback -> outbox row (webhook_deliveries)"),
    ("task", "final callback -> task completed_at"),
    ("settle_step", "batch's last task completed_at -> settled"),
)


def pct_row(store: str, name: str, values: list[float]) -> dict[str, Any]:
    ms = [1000 * v for v in values]
    return {
        "store": store,
        "what": name,
        "n": len(ms),
        "p50": c.percentile(ms, 50),
        "p95": c.percentile(ms, 95),
        "p99": c.percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


async def measure_store(
    store: str, runs: int, n_batches: int, size: int, args: Any, work: c.Workdir
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``runs`` runs with ``--result-store`` value ``store``: the pooled latencies and the
    tasks succeeded, archived and audited over all runs."""
    pooled: dict[str, list[float]] = {key: [] for key, _ in LATENCIES}
    check: dict[str, Any] = {
        "store": store,
        "tasks": 0,
        "succeeded": 0,
        "archived": 0,
        "without_final_callback": 0,
        "audit": [],
    }
    for r in range(runs):
        res = await run_one(n_batches, size, args.workers, args.pace, work, result_store=store)
        for k in pooled:
            pooled[k] += res[k]
        check["tasks"] += res["total"]
        check["succeeded"] += res["succeeded"]
        check["archived"] += res["archived"]
        check["without_final_callback"] += res["tasks_without_final_callback"]
        check["audit"] += res["audit"]
        print(
            f"  store {store} run {r + 1}: median settle latency "
            f"{1000 * (c.median(res['settled']) or 0):.0f} ms; {res['succeeded']} of "
            f"{res['total']} succeeded, {res['archived']} archived, "
            f"audit {len(res['audit'])} violation(s)",
            flush=True,
        )
    check["audit_violations"] = len(check["audit"])
    return pooled, check


async def main_async(args: Any) -> dict[str, Any]:
    info = c.print_machine()
    runs = args.runs or (1 if args.quick else 3)
    n_batches = args.batches or (15 if args.quick else 40)
    size = args.size or 10
    print(
        f"{runs} run(s) x {n_batches} batches of {size}, one every {args.pace}s; "
        f"{args.workers} worker(s); simulator {SIM_KNOBS}"
    )
    stores = c.parse_result_stores(args.result_store)
    info["result_store"] = c.print_result_stores(stores, ["postgres"])
    work = c.Workdir(keep=args.keep_logs)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    try:
        for store in stores:
            pooled, check = await measure_store(store, runs, n_batches, size, args, work)
            checks.append(check)
            rows += [pct_row(store, what, pooled[key]) for key, what in LATENCIES]
    finally:
        work.close()
    print()
    print(
        c.table(
            rows,
            [
                ("store", "store"),
                ("what", "latency, ms"),
                ("n", "n"),
                ("p50", "p50"),
                ("p95", "p95"),
                ("p99", "p99"),
                ("max", "max"),
            ],
        )
    )
    print()
    print(
        c.table(
            checks,
            [
                ("store", "store"),
                ("tasks", "tasks"),
                ("succeeded", "succeeded"),
                ("archived", "archived"),
                ("without_final_callback", "no final callback"),
                ("audit_violations", "audit violations"),
            ],
        )
    )
    for check in checks:
        for v in check["audit"]:
            print(f"  audit (store {check['store']}): {v}")
    return {
        "machine": info,
        "runs": runs,
        "batches": n_batches,
        "size": size,
        "workers": args.workers,
        "simulator": SIM_KNOBS,
        "rows": rows,
        "checks": checks,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--batches", type=int, help="batches per run (default 40, quick 15)")
    p.add_argument("--size", type=int, help="items per batch (default 10)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--pace", type=float, default=0.25, help="seconds between batches")
    c.add_result_store_option(p, default=f"{c.STORE_DEFAULT},{c.STORE_NONE}")
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
