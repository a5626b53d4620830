"""procrastinate's rate for no-op jobs, as a reference ceiling for a PostgreSQL job queue.

Run with the reference venv's Python (``bench/.venv-ref``), never vidbatch's: procrastinate
is not a dependency of vidbatch. Prints one JSON line.

    bench/.venv-ref/bin/python bench/procrastinate_ref.py DSN JOBS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

import procrastinate


async def main(dsn: str, jobs: int, concurrency: int) -> None:
    logging.disable(logging.CRITICAL)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        t0 = time.perf_counter()
        for start in range(0, jobs, 1000):
            await noop.batch_defer_async(*({"i": i} for i in range(start, min(jobs, start + 1000))))
        defer_s = time.perf_counter() - t0
        cpu0 = sum(os.times()[:2])
        t1 = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
            delete_jobs="never",
        )
        run_s = time.perf_counter() - t1
        cpu = sum(os.times()[:2]) - cpu0
        async with app.connector.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
            row = await cur.fetchone()
    print(
        json.dumps(
            {
                "jobs": jobs,
                "succeeded": row[0] if row else None,
                "concurrency": concurrency,
                "defer_s": defer_s,
                "run_s": run_s,
                "jobs_per_s": jobs / run_s,
                "cpu_ms_per_job": 1000 * cpu / jobs,
                "version": procrastinate.__version__,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
