"""Profile one ``vidbatch worker`` on PostgreSQL while it works through a polling-mode load.

    python -m bench.profile_worker [--tasks N] [--idle] [--out FILE]

Needs ``py-spy`` on the PATH or in the venv (``pip install py-spy``; it is not a vidbatch
dependency). Same set-up as ``bench.worker_throughput`` (PostgreSQL, one worker, tuned
settings, zero-latency simulator). py-spy samples the worker at 250 Hz (``--idle`` also
counts waiting threads) and writes collapsed stacks; this prints the top frames by own time
and by total time (share of samples), and the top vidbatch functions.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import common as c
from bench.worker_throughput import TUNED_ENV


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def analyse(raw: Path, top: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(n_text)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
        # The innermost vidbatch frame: which of our functions the time is spent under.
        mine = [f for f in frames if "vidbatch/" in f]
        if mine:
            ours[mine[-1]] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"pct": 100 * n / samples, "frame": f} for f, n in counter.most_common(top)]

    return {"samples": samples, "own": rows(own), "total": rows(total), "vidbatch": rows(ours)}


async def main_async(args: Any) -> dict[str, Any]:
    exe = py_spy()
    if exe is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    c.print_machine()
    work = c.Workdir(keep=args.keep_logs)
    sim = c.Sim(work)
    procs: list[c.Proc] = []
    raw = Path(args.out)
    try:
        async with c.scratch_db("postgres", "prof") as db:
            caller = await c.new_account(db.engine, credits=args.tasks * c.PRICE * 2)
            env = c.vidbatch_env(db.url, sim.url, **TUNED_ENV)
            procs = await c.start_workers(1, env, work)
            cmd = [
                exe,
                "record",
                "--pid",
                str(procs[0].pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ] + (["--idle"] if args.idle else [])
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(0.5)
            await c.create_batches(db.engine, caller, c.batch_sizes(args.tasks, args.tasks // 100))
            await c.wait_settled(db.engine, timeout=600, procs=procs)
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
    finally:
        c.stop_all(procs)
        sim.stop()
        work.close()
    result = analyse(raw)
    print(f"{result['samples']} samples ({'including' if args.idle else 'excluding'} idle)")
    for key, title in (
        ("own", "own time"),
        ("total", "total time"),
        ("vidbatch", "innermost vidbatch frame"),
    ):
        print(f"\n-- top frames by {title}:")
        for row in result[key][:20]:
            print(f"  {row['pct']:5.1f}%  {row['frame'][:150]}")
    return result


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--tasks", type=int, default=1000, help="tasks (default 1,000)")
    p.add_argument("--idle", action="store_true", help="also sample idle (waiting) time")
    p.add_argument(
        "--out", default="/tmp/vidbatch_worker_profile.txt", help="collapsed stacks file"
    )
    args = p.parse_args()
    out = c.run_async(main_async(args))
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
