"""Saturation under a provider concurrency cap: are the K slots kept busy, never exceeded?

    python -m bench.saturation [--cap K] [--tasks N] [--workers W] [--runs R] [--quick]
                               [--json FILE]

The simulator allows K tasks running at once (``max_running``; a create beyond it is a 429
and counts in ``cap_overshoots``). W ``vidbatch worker`` processes (default 3) on PostgreSQL
share the fleet-wide cap ``VIDBATCH_PROVIDER_MAX_INFLIGHT=K``; polling mode with the
original's backoff compressed 100x (0.05/0.15/0.3 s). Generation times: lognormal, median
2 s, sigma 0.5, 0.5..8 s.

Figures: the share of time the K slots are busy while work is pending (``running_now``
sampled every 50 ms from the first batch until the last task was created at the provider),
``cap_overshoots`` (must be 0) and ``max_running_seen``, and the makespan (first create
request -> last batch settled) against the ideal ``sum(generation time) / K``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import common as c

SIM_KNOBS = {
    "gen_time_mode": "lognormal",
    "gen_time": 2.0,
    "gen_time_sigma": 0.5,
    "gen_time_min": 0.5,
    "gen_time_max": 8.0,
}
ENV = {
    "VIDBATCH_POLL_INTERVALS": "0.05,0.15,0.3",
    "VIDBATCH_WORKER_IDLE_SECONDS": "0.05",
    "BATCH_TASK_CONCURRENCY": "16",
    "BATCH_WORKER_MAX_START_TASKS_PER_BATCH": "100",
    "BATCH_WORKER_MAX_POLL": "200",
}


async def run_one(cap: int, n_tasks: int, workers: int, work: c.Workdir) -> dict[str, Any]:
    sim = c.Sim(work, max_running=cap, **SIM_KNOBS)
    procs: list[c.Proc] = []
    try:
        async with c.scratch_db("postgres", "sat") as db:
            caller = await c.new_account(db.engine, credits=n_tasks * c.PRICE * 2)
            env = c.vidbatch_env(db.url, sim.url, VIDBATCH_PROVIDER_MAX_INFLIGHT=str(cap), **ENV)
            procs = await c.start_workers(workers, env, work)
            samples: list[tuple[int, int]] = []
            done = asyncio.Event()

            async def sampler() -> None:
                while not done.is_set():
                    st = await asyncio.to_thread(sim.stats)
                    samples.append((st["running_now"], st["tasks_created"]))
                    await asyncio.sleep(0.05)

            t0 = time.time()
            sampling = asyncio.create_task(sampler())
            await c.create_batches(db.engine, caller, c.batch_sizes(n_tasks, 4))
            ok = await c.wait_settled(db.engine, timeout=600, procs=procs)
            done.set()
            await sampling
            if not ok:
                raise RuntimeError("not settled in time")
            t_end, succeeded, total = await c.completion_span(db.engine)
            stats = sim.stats()
            gen = sum(t["gen_time"] for t in sim.tasks())
    finally:
        c.stop_all(procs)
        sim.stop()
    pending = [running for running, created in samples if created < n_tasks]
    busy = sum(pending) / (cap * len(pending)) if pending else None
    makespan = t_end - t0
    ideal = gen / cap
    return {
        "busy_fraction": busy,
        "samples": len(pending),
        "cap_overshoots": stats["cap_overshoots"],
        "max_running_seen": stats["max_running_seen"],
        "http_429_sent": stats["http_429_sent"],
        "makespan_s": makespan,
        "ideal_s": ideal,
        "makespan_vs_ideal": makespan / ideal,
        "succeeded": succeeded,
        "total": total,
    }


async def main_async(args: Any) -> dict[str, Any]:
    info = c.print_machine()
    n = args.tasks or (200 if args.quick else 500)
    runs = args.runs or (1 if args.quick else 3)
    print(
        f"cap K={args.cap}, {n} tasks, {args.workers} workers, {runs} run(s); "
        f"simulator {SIM_KNOBS}; worker {ENV}"
    )
    work = c.Workdir(keep=args.keep_logs)
    results = []
    try:
        for _ in range(runs):
            r = await run_one(args.cap, n, args.workers, work)
            results.append(r)
            print(
                f"  busy {r['busy_fraction']:.2f}, overshoots {r['cap_overshoots']}, "
                f"makespan {r['makespan_s']:.1f}s vs ideal {r['ideal_s']:.1f}s",
                flush=True,
            )
    finally:
        work.close()
    row = {
        k: c.median(r[k] for r in results)
        for k in ("busy_fraction", "makespan_s", "ideal_s", "makespan_vs_ideal")
    }
    row.update(
        cap=args.cap,
        workers=args.workers,
        tasks=n,
        runs=runs,
        cap_overshoots=sum(r["cap_overshoots"] for r in results),
        max_running_seen=max(r["max_running_seen"] for r in results),
    )
    print()
    print(
        c.table(
            [row],
            [
                ("cap", "K"),
                ("workers", "workers"),
                ("tasks", "tasks"),
                ("runs", "runs"),
                ("busy_fraction", "slots busy (pending)"),
                ("cap_overshoots", "overshoots (all runs)"),
                ("max_running_seen", "max running seen"),
                ("makespan_s", "makespan s"),
                ("ideal_s", "ideal s"),
                ("makespan_vs_ideal", "makespan/ideal"),
            ],
        )
    )
    return {
        "machine": info,
        "simulator": SIM_KNOBS,
        "worker_env": ENV,
        "summary": row,
        "runs": results,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--cap", type=int, default=50, help="provider concurrency cap K")
    p.add_argument("--tasks", type=int, help="tasks per run (default 500, quick 200)")
    p.add_argument("--workers", type=int, default=3, help="worker processes")
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
