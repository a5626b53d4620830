"""Ceilings on this machine, to read vidbatch's throughput against.

    python -m bench.limits [--quick] [--json FILE]

* PostgreSQL: ``pgbench`` with a custom one-statement script (update one random row of a
  1,000-row table, autocommit), 1 and 16 clients, ~10 s each (5 s with ``--quick``), on a
  scratch database. Each task costs vidbatch several such transactions, so the figure to
  compare is transactions/s, shown with vidbatch's transactions/s.
* HTTP: aiohttp round trips per second against the simulator (``POST /v1/draw/result`` for
  an existing task, i.e. the poll), at concurrency 1 and 16, for ~5 s each.
* A job queue on the same database: procrastinate's rate for no-op jobs (one process,
  concurrency 16, jobs deferred in bulk first), run from a separate venv
  ``bench/.venv-ref`` (``python3.11 -m venv bench/.venv-ref &&
  bench/.venv-ref/bin/pip install 'procrastinate[asyncpg]' 'psycopg[binary]'``); procrastinate is
  never a dependency of vidbatch. When that venv is missing, the output says so.

``bench.worker_throughput --with-limits`` measures these in the same run and prints the
fractions.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import common as c

REF_PYTHON = Path(__file__).resolve().parent / ".venv-ref" / "bin" / "python"
PGBENCH_SCRIPT = """\\set id random(1, 1000)
UPDATE bench_counter SET v = v + 1 WHERE id = :id;
"""


async def pgbench(seconds: int) -> dict[str, Any]:
    exe = shutil.which("pgbench")
    if exe is None:
        return {"error": "pgbench not found"}
    out: dict[str, Any] = {}
    async with c.scratch_db("postgres", "pgbench", migrate=False) as db:
        async with db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text("CREATE TABLE bench_counter (id int PRIMARY KEY, v bigint)"))
            await conn.execute(
                text("INSERT INTO bench_counter SELECT g, 0 FROM generate_series(1, 1000) g")
            )
        await db.engine.dispose()
        script = Path(c.Workdir().path) / "update.sql"
        script.write_text(PGBENCH_SCRIPT)
        from sqlalchemy.engine import make_url

        url = make_url(c.PG_ADMIN)
        for clients in (1, 16):
            cmd = [
                exe,
                "-n",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(seconds),
                "-f",
                str(script),
                db.name,
            ]
            proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True)
            m = re.search(r"tps = ([\d.]+)", proc.stdout)
            lat = re.search(r"latency average = ([\d.]+) ms", proc.stdout)
            out[f"tps_c{clients}"] = float(m.group(1)) if m else None
            out[f"latency_ms_c{clients}"] = float(lat.group(1)) if lat else None
            if not m:
                out["error"] = (proc.stderr or proc.stdout)[-500:]
        script.unlink()
        script.parent.rmdir()
    return out


async def http_round_trips(seconds: float) -> dict[str, Any]:
    work = c.Workdir()
    sim = c.Sim(work, gen_time=0.0)
    out: dict[str, Any] = {}
    try:
        headers = {"Authorization": "Bearer sk-bench"}
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=10)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            async with http.post(
                f"{sim.url}/v1/video/sora-video",
                json={
                    "model": "sora-2",
                    "prompt": "probe",
                    "webHook": "-1",
                    "aspectRatio": "9:16",
                    "duration": 10,
                },
            ) as r:
                body = await r.json()
            task_id = body["data"]["id"]
            for conc in (1, 16):
                done = 0
                stop_at = time.perf_counter() + seconds

                async def lane(stop_at: float = stop_at) -> None:
                    nonlocal done
                    while time.perf_counter() < stop_at:
                        async with http.post(
                            f"{sim.url}/v1/draw/result", json={"id": task_id}
                        ) as resp:
                            await resp.read()
                        done += 1

                t0 = time.perf_counter()
                await asyncio.gather(*(lane() for _ in range(conc)))
                out[f"rps_c{conc}"] = done / (time.perf_counter() - t0)
    finally:
        sim.stop()
        work.close()
    return out


async def procrastinate_rate(jobs: int, concurrency: int = 16) -> dict[str, Any]:
    if not REF_PYTHON.exists():
        return {
            "error": "procrastinate not measured: the reference venv bench/.venv-ref is "
            "missing (see bench/limits.py for how to make it)"
        }
    async with c.scratch_db("postgres", "procr", migrate=False) as db:
        await db.engine.dispose()
        dsn = c.pg_url(db.name)
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                str(REF_PYTHON),
                str(Path(__file__).with_name("procrastinate_ref.py")),
                dsn,
                str(jobs),
                str(concurrency),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        xacts = await c.pg_xacts(db.name)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"procrastinate failed: {(proc.stderr or proc.stdout)[-800:]}"}
    result = dict(json.loads(lines[-1]))
    result["pg_xacts_total"] = xacts
    return result


async def measure(quick: bool = False) -> dict[str, Any]:
    print("\nmeasuring the ceilings ...", flush=True)
    seconds = 5 if quick else 10
    lim: dict[str, Any] = {"pgbench": await pgbench(seconds)}
    lim["http"] = await http_round_trips(3 if quick else 5)
    lim["procrastinate"] = await procrastinate_rate(2000 if quick else 10_000)
    print_limits(lim)
    return lim


def print_limits(lim: dict[str, Any]) -> None:
    pg, http, pr = lim["pgbench"], lim["http"], lim["procrastinate"]
    rows = [
        {"what": "pgbench single-row UPDATE, 1 client", "value": pg.get("tps_c1"), "unit": "tx/s"},
        {
            "what": "pgbench single-row UPDATE, 16 clients",
            "value": pg.get("tps_c16"),
            "unit": "tx/s",
        },
        {
            "what": "aiohttp -> simulator poll, concurrency 1",
            "value": http.get("rps_c1"),
            "unit": "req/s",
        },
        {
            "what": "aiohttp -> simulator poll, concurrency 16",
            "value": http.get("rps_c16"),
            "unit": "req/s",
        },
        {
            "what": "procrastinate no-op jobs (1 proc, conc. 16)",
            "value": pr.get("jobs_per_s"),
            "unit": "jobs/s",
        },
    ]
    print(c.table(rows, [("what", "ceiling"), ("value", "value"), ("unit", "unit")]))
    if "error" in pr:
        print(f"  {pr['error']}")
    if "error" in pg:
        print(f"  pgbench: {pg['error']}")


def report_fractions(best: dict[str, Any], lim: dict[str, Any]) -> dict[str, Any]:
    """vidbatch's figure (a worker_throughput summary) against each ceiling."""
    tps = best["tasks_per_s"]
    xacts = (best.get("pg_xacts_per_task") or 0) * tps
    calls = (best.get("provider_calls_per_task") or 0) * tps
    pg, http, pr = lim["pgbench"], lim["http"], lim["procrastinate"]
    out = {
        "vidbatch": f"{best['label']} {best['mode']} store {best['store']} {best['tasks']} tasks",
        "tasks_per_s": tps,
        "pg_xacts_per_s": xacts,
        "provider_calls_per_s": calls,
        "xacts_vs_pgbench_c16": xacts / pg["tps_c16"] if pg.get("tps_c16") else None,
        "xacts_vs_pgbench_c1": xacts / pg["tps_c1"] if pg.get("tps_c1") else None,
        "calls_vs_aiohttp_c16": calls / http["rps_c16"] if http.get("rps_c16") else None,
        "tasks_vs_procrastinate": tps / pr["jobs_per_s"] if pr.get("jobs_per_s") else None,
    }
    print(
        f"\nvidbatch ({out['vidbatch']}): {tps:.0f} tasks/s = {xacts:.0f} PG tx/s, "
        f"{calls:.0f} provider calls/s"
    )
    for key, label in (
        ("xacts_vs_pgbench_c16", "PG transactions vs pgbench (16 clients)"),
        ("xacts_vs_pgbench_c1", "PG transactions vs pgbench (1 client)"),
        ("calls_vs_aiohttp_c16", "provider calls vs aiohttp (conc. 16)"),
        ("tasks_vs_procrastinate", "tasks/s vs procrastinate jobs/s"),
    ):
        print(f"  {label}: {c.fmt(out[key])}")
    return out


def main() -> None:
    p = c.parser(__doc__)
    args = p.parse_args()
    c.print_machine()
    lim = c.run_async(measure(quick=args.quick))
    c.write_json(args.json, {"machine": c.machine(), "limits": lim})


if __name__ == "__main__":
    main()
