"""Provider efficiency: how many calls a task costs, and how late vidbatch learns it ended.

    python -m bench.provider_efficiency [--tasks N] [--compress F] [--runs R] [--quick]
                                        [--json FILE]

Generation times come from a realistic distribution compressed in time: lognormal, median
8 min, sigma 0.5, clamped to 1..30 min, all divided by F (default 100). vidbatch's time
settings are compressed by the same factor: the original's poll backoff 5/15/30 s, the
30 min wait limit and the 120 s callback grace. The poll count limit (20) is vidbatch's
default and is not compressed.

* polling mode: one ``vidbatch worker`` (PostgreSQL), no callbacks;
* webhook mode: the same worker plus ``vidbatch serve --no-worker`` receiving callbacks, 10 %
  of them lost (``callback_loss_rate`` 0.1), progress callbacks every 30 s (compressed); a
  task whose final callback is lost is found by the grace-period poll.

Figures: provider calls per task by endpoint (creates, polls), detection delay (the
simulator's finish time of each task -> the task's ``completed_at``) as p50/p95/max, both
as measured and scaled back by F ("real" seconds), and the tasks that ended otherwise than
succeeded (e.g. the poll-count limit).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench import common as c

CREATE_PATH = "/v1/video/sora-video"
RESULT_PATH = "/v1/draw/result"


def knobs(f: float, mode: str) -> tuple[dict[str, Any], dict[str, str]]:
    sim = {
        "gen_time_mode": "lognormal",
        "gen_time": 480 / f,
        "gen_time_sigma": 0.5,
        "gen_time_min": 60 / f,
        "gen_time_max": 1800 / f,
        "callback_interval": 30 / f,
    }
    env = {
        "VIDBATCH_POLL_INTERVALS": f"{5 / f:g},{15 / f:g},{30 / f:g}",
        "VIDBATCH_MAX_WAIT_SECONDS": str(max(1, round(1800 / f))),
        "VIDBATCH_CALLBACK_GRACE_SECONDS": f"{120 / f:g}",
        "VIDBATCH_WORKER_IDLE_SECONDS": f"{min(1.0, 5 / f):g}",
        "VIDBATCH_LEASE_SECONDS": "60",
    }
    if mode == "webhook":
        sim["callback_loss_rate"] = 0.1
    return sim, env


async def run_one(mode: str, n_tasks: int, f: float, work: c.Workdir) -> dict[str, Any]:
    sim_knobs, env_extra = knobs(f, mode)
    sim = c.Sim(work, **sim_knobs)
    procs: list[c.Proc] = []
    try:
        async with c.scratch_db("postgres", "eff") as db:
            caller = await c.new_account(db.engine, credits=n_tasks * c.PRICE * 2)
            env = c.vidbatch_env(db.url, sim.url, **env_extra)
            if mode == "webhook":
                port = c.free_port()
                env["APP_URL"] = f"http://127.0.0.1:{port}"
                api, _ = await c.start_api(env, work, port=port)
                procs.append(api)
            procs += await c.start_workers(1, env, work)
            t0 = time.time()
            sizes = c.batch_sizes(n_tasks, max(1, n_tasks // 100))
            await c.create_batches(db.engine, caller, sizes)
            if not await c.wait_settled(db.engine, timeout=60 + 3600 / f, procs=procs):
                raise RuntimeError("not settled in time")
            elapsed = time.time() - t0
            stats = sim.stats()
            sim_tasks = {t["remote_id"]: t for t in sim.tasks()}
            finals = {cb["remote_id"] for cb in sim.final_callbacks()}
            async with db.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT grsai_task_id, status, failure_reason, completed_at, "
                            "poll_count "
                            "FROM video_tasks"
                        )
                    )
                ).all()
    finally:
        c.stop_all(procs)
        sim.stop()
    delays: list[float] = []
    delays_lost: list[float] = []
    outcomes: dict[str, int] = {}
    for remote_id, status, reason, completed_at, _polls in rows:
        key = status if status == "succeeded" else f"{status}:{reason}"
        outcomes[key] = outcomes.get(key, 0) + 1
        t = sim_tasks.get(remote_id)
        if t is None or t["done"] is None or completed_at is None or status != "succeeded":
            continue
        d = completed_at.timestamp() - t["done"]
        (delays if mode == "polling" or remote_id in finals else delays_lost).append(d)
    calls = stats.get("calls_per_endpoint", {})
    return {
        "mode": mode,
        "tasks": n_tasks,
        "elapsed_s": elapsed,
        "creates_per_task": calls.get(CREATE_PATH, 0) / n_tasks,
        "polls_per_task": calls.get(RESULT_PATH, 0) / n_tasks,
        "callbacks_lost": stats.get("callbacks_lost", 0),
        "callbacks_sent": stats.get("callbacks_sent", 0),
        "delays": delays,
        "delays_lost": delays_lost,
        "outcomes": outcomes,
    }


def delay_row(
    label: str, mode: str, runs: list[dict[str, Any]], key: str, f: float
) -> dict[str, Any]:
    vals = [d for r in runs for d in r[key]]
    p50, p95 = c.percentile(vals, 50), c.percentile(vals, 95)
    mx = max(vals) if vals else None
    return {
        "mode": label,
        "n": len(vals),
        "polls_per_task": c.median(r["polls_per_task"] for r in runs),
        "creates_per_task": c.median(r["creates_per_task"] for r in runs),
        "p50_ms": 1000 * p50 if p50 is not None else None,
        "p95_ms": 1000 * p95 if p95 is not None else None,
        "max_ms": 1000 * mx if mx is not None else None,
        "p50_real_s": p50 * f if p50 is not None else None,
        "p95_real_s": p95 * f if p95 is not None else None,
        "raw_mode": mode,
    }


async def main_async(args: Any) -> dict[str, Any]:
    info = c.print_machine()
    f = args.compress
    n = args.tasks or (100 if args.quick else 300)
    runs = args.runs or (1 if args.quick else 3)
    sim_knobs, env = knobs(f, "polling")
    print(
        f"{n} tasks, compression {f:g}x, {runs} run(s) per mode; simulator {sim_knobs}; "
        f"worker {env}"
    )
    work = c.Workdir(keep=args.keep_logs)
    by_mode: dict[str, list[dict[str, Any]]] = {}
    try:
        for mode in ("polling", "webhook"):
            for _ in range(runs):
                r = await run_one(mode, n, f, work)
                by_mode.setdefault(mode, []).append(r)
                print(
                    f"  {mode}: {r['polls_per_task']:.2f} polls/task, outcomes "
                    f"{r['outcomes']}, {r['elapsed_s']:.0f}s",
                    flush=True,
                )
    finally:
        work.close()
    rows = [
        delay_row("polling", "polling", by_mode["polling"], "delays", f),
        delay_row("webhook, callback arrived", "webhook", by_mode["webhook"], "delays", f),
        delay_row("webhook, final callback lost", "webhook", by_mode["webhook"], "delays_lost", f),
    ]
    print()
    print(
        c.table(
            rows,
            [
                ("mode", "mode"),
                ("n", "tasks"),
                ("creates_per_task", "creates/task"),
                ("polls_per_task", "polls/task (all)"),
                ("p50_ms", "delay p50 ms"),
                ("p95_ms", "delay p95 ms"),
                ("max_ms", "delay max ms"),
                ("p50_real_s", "p50 real s"),
                ("p95_real_s", "p95 real s"),
            ],
        )
    )
    lost = sum(r["callbacks_lost"] for r in by_mode["webhook"])
    print(
        f"  webhook runs: {lost} callbacks lost of "
        f"{lost + sum(r['callbacks_sent'] for r in by_mode['webhook'])} "
        f"(progress + final); outcomes: "
        + "; ".join(f"{m}: {by_mode[m][0]['outcomes']}" for m in by_mode)
    )
    return {
        "machine": info,
        "compress": f,
        "tasks": n,
        "runs": runs,
        "simulator": sim_knobs,
        "worker_env": env,
        "rows": rows,
        "outcomes": {m: [r["outcomes"] for r in rs] for m, rs in by_mode.items()},
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--tasks", type=int, help="tasks per run (default 300, quick 100)")
    p.add_argument("--compress", type=float, default=100.0, help="time compression factor")
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
