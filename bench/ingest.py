"""How long accepting one batch takes, over real HTTP.

Starts the API with uvicorn on a free port (in a thread), creates an account, and times
``POST /api/enterprise/video-batch`` for batches of each size (1,000 and 10,000 items by
default): wall time from sending the request to the full answer, the batch and all its
tasks committed. Reports the median (and min/max) of several runs per database: a SQLite
file in a temporary directory, and a scratch PostgreSQL database created for the run and
dropped afterwards.

    python -m bench.ingest [--database-url URL] [--runs N] [--items N] [--json FILE]

``--database-url`` (repeatable) benchmarks those databases instead of the defaults; a
``postgresql://`` URL names the server and a scratch database is made on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.engine import make_url

from bench.common import BENCH_SECRET_KEY, make_engine
from vidbatch.api.app import create_app
from vidbatch.db.migrate import upgrade
from vidbatch.services import accounts
from vidbatch.settings import Settings

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PRICE = 10  # sora-2


@dataclass
class Result:
    backend: str
    items: int
    runs: int
    median_s: float
    min_s: float
    max_s: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.median_s else 0.0


# --- databases ---------------------------------------------------------------------------


async def _pg_admin(server_url: str, statements: list[str]) -> None:
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
        timeout=5,
    )
    try:
        for stmt in statements:
            await conn.execute(stmt)
    finally:
        await conn.close()


@contextmanager
def scratch_database(url: str) -> Iterator[tuple[str, str]]:
    """(label, URL) of an empty, migrated database: a temp SQLite file, or a PostgreSQL
    database created on ``url``'s server and dropped afterwards."""
    if url.startswith("sqlite"):
        if url == "sqlite":
            with tempfile.TemporaryDirectory(prefix="vidbatch-bench-") as tmp:
                yield "sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"
            return
        yield "sqlite", url
        return
    name = f"vidbatch_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(url, [f'CREATE DATABASE "{name}"']))
    try:
        yield "postgresql", make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


async def prepare(url: str, credits: int) -> str:
    """Migrate the database and create an account; returns its API key."""
    engine = make_engine(url)
    try:
        await upgrade(engine)
        _, key = await accounts.create_account(
            engine, "bench", credits=credits, rate_limit_per_min=1_000_000
        )
    finally:
        await engine.dispose()
    return key.api_key


# --- the server --------------------------------------------------------------------------


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The app on uvicorn in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="vidbatch-bench", daemon=True
    )
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def batch_body(n: int) -> bytes:
    items = [
        {
            "prompt": f"benchmark video {i}: a city at night, slow pan",
            "model": "sora-2",
            "aspect_ratio": "9:16",
            "duration": 10,
            "metadata": {"row": i},
        }
        for i in range(n)
    ]
    return json.dumps({"items": items}).encode()


def bench_database(url: str, sizes: list[int], runs: int) -> list[Result]:
    results = []
    with scratch_database(url) as (label, db_url):
        credits = PRICE * (sum(sizes) * runs + 10)
        api_key = asyncio.run(prepare(db_url, credits))
        settings = Settings(
            database_url=db_url,
            max_items=max(*sizes, 10_000),
            callback_secret="bench",
            secret_key=BENCH_SECRET_KEY,
        )
        with serve(settings) as base, httpx.Client(base_url=base, timeout=300) as client:
            headers = {"x-api-key": api_key, "content-type": "application/json"}
            warm = client.post(
                "/api/enterprise/video-batch", content=batch_body(10), headers=headers
            )
            warm.raise_for_status()
            for n in sizes:
                body = batch_body(n)
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    r = client.post(
                        "/api/enterprise/video-batch",
                        content=body,
                        headers={**headers, "x-request-id": uuid.uuid4().hex},
                    )
                    elapsed = time.perf_counter() - started
                    if r.status_code != 200:
                        raise RuntimeError(f"{label}: {r.status_code} {r.text[:300]}")
                    times.append(elapsed)
                results.append(
                    Result(label, n, runs, statistics.median(times), min(times), max(times))
                )
                print(
                    f"  {label:<10} {n:>6} items: median {results[-1].median_s:.3f} s",
                    file=sys.stderr,
                )
    return results


def table(results: list[Result]) -> str:
    lines = [
        f"{'database':<11}{'items':>7}{'runs':>6}{'median s':>10}{'min s':>8}"
        f"{'max s':>8}{'items/s':>10}"
    ]
    for r in results:
        lines.append(
            f"{r.backend:<11}{r.items:>7}{r.runs:>6}{r.median_s:>10.3f}"
            f"{r.min_s:>8.3f}{r.max_s:>8.3f}{r.items_per_s:>10.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        action="append",
        dest="urls",
        metavar="URL",
        help="sqlite:///file or postgresql://server (repeatable); default: "
        f"a temp SQLite file and a scratch database on {DEFAULT_POSTGRES}",
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per size (default 5)")
    parser.add_argument(
        "--items",
        type=int,
        action="append",
        metavar="N",
        help="batch size (repeatable; default 1000 and 10000)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    args = parser.parse_args(argv)
    sizes = args.items or [1000, 10_000]
    urls = args.urls or ["sqlite", DEFAULT_POSTGRES]

    results: list[Result] = []
    for url in urls:
        try:
            results += bench_database(url, sizes, max(args.runs, 1))
        except OSError as exc:  # e.g. no PostgreSQL server: report and go on
            print(
                f"skipped {make_url(url).render_as_string() if '://' in url else url}: {exc}",
                file=sys.stderr,
            )
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "results": [
                        {**asdict(r), "items_per_s": round(r.items_per_s)} for r in results
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
