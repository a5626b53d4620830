"""Worker throughput: tasks from creation to settled, with a zero-latency provider.

    python -m bench.worker_throughput [--tasks N] [--batches B] [--runs R] [--quick]
                                      [--modes polling,webhook] [--setups sqlite:1,postgres:1]
                                      [--result-store default,none] [--with-limits]
                                      [--json FILE]

For each setup (database x worker processes) and mode, a fresh scratch database, a fresh
simulator (``gen_time`` 0: every task is done the moment it is created) and fresh processes:

* polling mode: N ``vidbatch worker`` processes (SQLite: one);
* webhook mode: the same workers plus one ``vidbatch serve --no-worker`` receiving the
  simulator's callbacks (``APP_URL`` points at it); on SQLite, the single-machine shape, one
  ``vidbatch serve`` process runs API and worker together.

``--result-store`` (a comma list, each measured apart as its own row): ``default`` is what a
one-machine operator gets with ``VIDBATCH_RESULT_STORE`` unset, result archiving on (SQLite:
``vidbatch-results/`` beside the database file; PostgreSQL has no default store, so there a
``file://`` directory in the run's temporary directory); ``none`` turns archiving off; anything
else is a store URL used as given. Every vidbatch process of a run has the same setting. A
run's temporary directory, with the archive, is removed after it.

The workers are started and idle first; then the batches are created through the real
service (the clock starts before the first one) and the run ends at the last batch's
``completed_at``. Figures per run: tasks settled per second, CPU seconds per task of all
vidbatch processes (workers + API; the simulator's and PostgreSQL's are shown apart),
statements, transactions and pool checkouts per task (counted inside every vidbatch process),
PostgreSQL transactions per task (``pg_stat_database``; ``pg_stat_statements`` is not loaded on
this server), and provider calls per task (the simulator's ``calls_per_endpoint``).
After each run: the tasks succeeded and archived (``archive_status = 'stored'``) and
``vidbatch audit`` (the money invariants) with the run's environment.
The table shows the median of the runs (succeeded and archived: the lowest; audit: the
violations of all runs).

Default: 1,000 tasks in 10 batches, 2 runs, SQLite x1 and PostgreSQL x1, both modes, result
store ``default`` and ``none`` (about 10 minutes on a loaded 2-core machine). ``--quick``: 1 run
(about 5 minutes). The README's table: ``--runs 3 --setups sqlite:1,postgres:1,postgres:4
--with-limits`` (about 25 minutes). The 10,000-task configuration (100 batches): ``--tasks
10000 --runs 1`` (``--setups postgres:2`` etc. picks setups). ``--with-limits`` then measures
the ceilings (``bench.limits``) and prints vidbatch's best PostgreSQL figure with the first
store of ``--result-store`` as a fraction of each.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import common as c

#: Worker settings tuned for throughput (reported with the results).
TUNED_ENV = {
    "BATCH_TASK_CONCURRENCY": "16",
    "BATCH_WORKER_MAX_START_TASKS_PER_BATCH": "100",
    "BATCH_WORKER_MAX_CLAIM": "20",
    "BATCH_WORKER_MAX_POLL": "500",
    "BATCH_WORKER_MAX_SETTLE": "50",
    "VIDBATCH_POLL_INTERVALS": "0.05,0.1,0.2",
    "VIDBATCH_WORKER_IDLE_SECONDS": "0.05",
    # Webhook mode: poll a task only if its callback has not come within this time.
    "VIDBATCH_CALLBACK_GRACE_SECONDS": "30",
}

COLUMNS = [
    ("label", "setup"),
    ("mode", "mode"),
    ("store", "store"),
    ("tasks", "tasks"),
    ("runs", "runs"),
    ("tasks_per_s", "tasks/s"),
    ("cpu_ms_per_task", "vidbatch CPU ms/task"),
    ("sim_cpu_ms_per_task", "sim CPU ms/task"),
    ("db_cpu_ms_per_task", "PG CPU ms/task"),
    ("statements_per_task", "stmts/task"),
    ("commits_per_task", "commits/task"),
    ("checkouts_per_task", "checkouts/task"),
    ("pg_xacts_per_task", "PG xacts/task"),
    ("provider_calls_per_task", "provider calls/task"),
    ("create_s", "create s"),
    ("succeeded", "succeeded"),
    ("archived", "archived"),
    ("audit_violations", "audit violations"),
]


async def run_one(
    kind: str,
    workers: int,
    mode: str,
    n_tasks: int,
    n_batches: int,
    work: c.Workdir,
    *,
    result_store: str = c.STORE_NONE,
    env_extra: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """One run, printed as it ends; ``result_store`` is a ``--result-store`` value
    (``default``, ``none``, a URL)."""
    sim = c.Sim(work)
    procs: list[c.Proc] = []
    try:
        async with c.scratch_db(kind, "tp") as db:
            db.count_statements()
            caller = await c.new_account(db.engine, credits=n_tasks * c.PRICE * 2)
            env = c.vidbatch_env(
                db.url,
                sim.url,
                result_store=c.result_store_setting(result_store, db),
                **TUNED_ENV,
                **(env_extra or {}),
            )
            if mode == "webhook":
                port = c.free_port()
                env["APP_URL"] = f"http://127.0.0.1:{port}"
                api, _ = await c.start_api(env, work, with_worker=(kind == "sqlite"), port=port)
                procs.append(api)
            if not (mode == "webhook" and kind == "sqlite"):
                procs += await c.start_workers(workers, env, work)
            await asyncio.sleep(0.3)  # let start-up work settle before the baseline
            for p in procs:
                p.mark_start()
            sim_cpu0 = sim.cpu()
            pg_cpu0 = await c.pg_backend_cpu(db.name) if kind == "postgres" else {}
            xacts0 = await c.pg_xacts(db.name) if kind == "postgres" else 0
            own_commits0 = db.commits

            t0 = time.time()
            await c.create_batches(db.engine, caller, c.batch_sizes(n_tasks, n_batches))
            create_s = time.time() - t0
            if not await c.wait_settled(db.engine, timeout=timeout, procs=procs):
                raise RuntimeError(f"not settled within {timeout}s ({kind} x{workers} {mode})")
            t_end, succeeded, total = await c.completion_span(db.engine)
            cpu = sum(p.mark_end() for p in procs)
            sim_cpu = sim.cpu() - sim_cpu0
            pg_cpu = (
                c.backend_cpu_delta(pg_cpu0, await c.pg_backend_cpu(db.name))
                if kind == "postgres"
                else None
            )
            stats = sim.stats()
            own_commits = db.commits - own_commits0
            c.stop_all(procs)
            xacts = None
            if kind == "postgres":
                await asyncio.sleep(0.6)  # let exited backends' statistics land
                # Ours: creation plus the settled-check polls (autocommit reads count too).
                xacts = (await c.pg_xacts(db.name)) - xacts0 - own_commits
            # After the counting: the checks' own transactions are not the workers'.
            archive = await c.archive_counts(db.engine)
            violations = c.vidbatch_audit(env, work)
            elapsed = t_end - t0
            statements = c.sum_counts(procs, "statements")
            print(
                f"  {kind} x{workers} {mode} store {result_store} {n_tasks} tasks: "
                f"{n_tasks / elapsed:.0f} tasks/s in {elapsed:.1f}s, "
                f"{1000 * cpu / n_tasks:.2f} ms CPU/task; {succeeded} succeeded, "
                f"{archive.get('stored', 0)} archived, audit {len(violations)} violation(s)",
                flush=True,
            )
            return {
                "kind": kind,
                "workers": workers,
                "mode": mode,
                "store": result_store,
                "tasks": n_tasks,
                "batches": n_batches,
                "elapsed_s": elapsed,
                "create_s": create_s,
                "succeeded": succeeded,
                "total": total,
                "archived": archive.get("stored", 0),
                "archive_status": archive,
                "audit_violations": len(violations),
                "audit": violations,
                "tasks_per_s": n_tasks / elapsed,
                "cpu_ms_per_task": 1000 * cpu / n_tasks,
                "sim_cpu_ms_per_task": 1000 * sim_cpu / n_tasks,
                "db_cpu_ms_per_task": 1000 * pg_cpu / n_tasks if pg_cpu is not None else None,
                "statements_per_task": statements / n_tasks,
                "commits_per_task": c.sum_counts(procs, "commits") / n_tasks,
                "checkouts_per_task": c.sum_counts(procs, "checkouts") / n_tasks,
                "pg_xacts_per_task": xacts / n_tasks if xacts is not None else None,
                "provider_calls_per_task": c.provider_calls(stats) / n_tasks,
                "calls_per_endpoint": stats.get("calls_per_endpoint"),
                "top_statements": c.merge_top(procs),
            }
    finally:
        c.stop_all(procs)
        sim.stop()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    label = f"{first['kind']} x{first['workers']}"
    if first["kind"] == "sqlite" and first["mode"] == "webhook":
        label = "sqlite serve (API+worker)"
    out: dict[str, Any] = {
        "label": label,
        "kind": first["kind"],
        "workers": first["workers"],
        "mode": first["mode"],
        "store": first["store"],
        "tasks": first["tasks"],
        "batches": first["batches"],
        "runs": len(runs),
        "succeeded": min(r["succeeded"] for r in runs),
        "archived": min(r["archived"] for r in runs),
        "audit_violations": sum(r["audit_violations"] for r in runs),
    }
    for key in (
        "tasks_per_s",
        "cpu_ms_per_task",
        "sim_cpu_ms_per_task",
        "db_cpu_ms_per_task",
        "statements_per_task",
        "commits_per_task",
        "checkouts_per_task",
        "pg_xacts_per_task",
        "provider_calls_per_task",
        "create_s",
        "elapsed_s",
    ):
        out[key] = c.median(r[key] for r in runs)
    out["calls_per_endpoint"] = first["calls_per_endpoint"]
    out["top_statements"] = first["top_statements"]
    out["all_succeeded"] = all(r["succeeded"] == r["total"] == r["tasks"] for r in runs)
    out["archive_status"] = [r["archive_status"] for r in runs]
    out["audit"] = [v for r in runs for v in r["audit"]]
    return out


def parse_setups(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        kind, _, n = part.strip().partition(":")
        out.append((kind, int(n or 1)))
    return out


def print_report(results: list[dict[str, Any]], store: str) -> None:
    """The table, any audit violations, and the most frequent statements of PostgreSQL x1
    polling with ``store``."""
    print()
    print(c.table(results, COLUMNS))
    for r in results:
        for v in r["audit"]:
            print(f"  audit ({r['label']}, {r['mode']}, store {r['store']}): {v}")
    wanted = ("postgres", 1, "polling", store)
    pg1 = next(
        (r for r in results if (r["kind"], r["workers"], r["mode"], r["store"]) == wanted), None
    )
    if pg1 is not None:
        print(f"\nmost frequent statements (postgres x1, polling, store {store}, one run):")
        for row in pg1["top_statements"][:8]:
            print(f"  {row['n'] / pg1['tasks']:6.2f}/task  {row['sql'][:150]}")


async def main_async(args: Any) -> dict[str, Any]:
    info = c.print_machine()
    info["postgres"] = await c.server_version()
    print(
        f"PostgreSQL {info['postgres']}; worker settings: "
        + " ".join(f"{k}={v}" for k, v in TUNED_ENV.items())
    )
    if args.quick:
        sizes = [(args.tasks or 1000, args.batches or 10, args.runs or 1)]
        setups = parse_setups(args.setups or "sqlite:1,postgres:1")
    elif args.tasks:
        sizes = [(args.tasks, args.batches or max(1, args.tasks // 100), args.runs or 3)]
        setups = parse_setups(args.setups or "sqlite:1,postgres:1,postgres:2,postgres:4")
    else:
        sizes = [(1000, 10, args.runs or 2)]
        setups = parse_setups(args.setups or "sqlite:1,postgres:1")
    modes = args.modes.split(",")
    stores = c.parse_result_stores(args.result_store)
    info["result_store"] = c.print_result_stores(stores, (kind for kind, _ in setups))
    work = c.Workdir(keep=args.keep_logs)
    results: list[dict[str, Any]] = []
    try:
        for n_tasks, n_batches, runs in sizes:
            for mode in modes:
                for kind, workers in setups:
                    for store in stores:
                        one = (kind, workers, mode, n_tasks, n_batches, work)
                        done = [await run_one(*one, result_store=store) for _ in range(runs)]
                        results.append(summarise(done))
    finally:
        work.close()
    print_report(results, stores[0])
    # The ceilings are compared with the first store of --result-store (default: archiving on).
    best = max(
        (r for r in results if r["kind"] == "postgres" and r["store"] == stores[0]),
        key=lambda r: r["tasks_per_s"],
        default=None,
    )
    out: dict[str, Any] = {"machine": info, "settings": TUNED_ENV, "results": results}
    if args.with_limits:
        from bench import limits

        lim = await limits.measure(quick=args.quick)
        out["limits"] = lim
        if best is not None:
            out["fractions"] = limits.report_fractions(best, lim)
    return out


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--tasks", type=int, help="tasks per run (default 1,000)")
    p.add_argument("--batches", type=int, help="batches per run (default: tasks / 100)")
    p.add_argument("--modes", default="polling,webhook", help="polling,webhook")
    p.add_argument("--setups", help="database:workers list, e.g. sqlite:1,postgres:2")
    c.add_result_store_option(p, default=f"{c.STORE_DEFAULT},{c.STORE_NONE}")
    p.add_argument(
        "--with-limits",
        action="store_true",
        help="also measure the ceilings (bench.limits) and compare",
    )
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
