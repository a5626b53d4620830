"""What the benchmarks share: the simulator and vidbatch processes, scratch databases, the
load, CPU and statement counting, medians and tables.

Every process listens on 127.0.0.1 only. Scratch PostgreSQL databases are named
``vidbatch_bench_*`` and dropped afterwards; SQLite files live in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.engine import make_engine as plain_engine
from vidbatch.db.migrate import upgrade
from vidbatch.db.secrets import attach_keyring
from vidbatch.domain.archive import DEFAULT_LOCAL_DIR, parse_store_spec
from vidbatch.domain.catalog import default_catalog
from vidbatch.domain.sealing import Keyring
from vidbatch.domain.validation import validate_batch
from vidbatch.services import accounts
from vidbatch.services.batches import Caller, create_batch

PG_ADMIN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PRICE = 10  # sora-2, 10 s
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASE_URL_VARS = ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL", "APP_URL")


# --- figures ---------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table: ``columns`` are (key, header)."""
    cells = [[header for _, header in columns]]
    cells += [[fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [
        "  ".join(
            c.rjust(w) if n else c.ljust(w) for n, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def print_machine() -> dict[str, Any]:
    info = machine()
    print(
        f"machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, "
        f"Python {info['python']}; load average (1 min) at start {info['loadavg_1m']} "
        "(the machine may be shared: figures move with it)"
    )
    return info


def parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=None, help="runs per configuration (median)")
    p.add_argument("--quick", action="store_true", help="smaller and fewer runs")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep process logs (path printed)")
    return p


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
        print(f"figures written to {path}")


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# --- CPU -------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    ru = os.times()
    return ru.user + ru.system


# --- databases -------------------------------------------------------------------------


@dataclass
class Scratch:
    kind: str  # "postgres" | "sqlite"
    url: str
    engine: AsyncEngine
    name: str
    #: The run's temporary directory (the SQLite file's, on PostgreSQL one of its own):
    #: removed with the database.
    tmp: Path
    statements: int = 0
    commits: int = 0

    def count_statements(self) -> None:
        """Count this process's statements on ``engine`` (the benchmark's own queries)."""

        @event.listens_for(self.engine.sync_engine, "before_cursor_execute")
        def _stmt(*_a: Any) -> None:
            self.statements += 1

        @event.listens_for(self.engine.sync_engine, "commit")
        def _commit(*_a: Any) -> None:
            self.commits += 1


async def pg_admin() -> asyncpg.Connection:
    url = make_url(PG_ADMIN)
    return await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )


#: The VIDBATCH_SECRET_KEY of every benchmark process (the stored secrets are encrypted).
BENCH_SECRET_KEY = "bench-secret-key-of-at-least-32-characters"


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An engine with the benchmarks' keyring (as every vidbatch process would have)."""
    engine = plain_engine(url, pool_size=pool_size)
    return attach_keyring(engine, Keyring.from_secrets(BENCH_SECRET_KEY))


def pg_url(name: str) -> str:
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_db(kind: str, tag: str, *, migrate: bool = True) -> AsyncIterator[Scratch]:
    """A fresh database, migrated to head, and a temporary directory; both removed
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="vidbatch_bench_") as tmp:
        if kind == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
            engine = make_engine(url)
            try:
                if migrate:
                    await upgrade(engine)
                yield Scratch(kind, url, engine, f"{tmp}/bench.db", Path(tmp))
            finally:
                await engine.dispose()
            return
        async with _scratch_pg(tag, Path(tmp), migrate=migrate) as db:
            yield db


@asynccontextmanager
async def _scratch_pg(tag: str, tmp: Path, *, migrate: bool) -> AsyncIterator[Scratch]:
    name = f"vidbatch_bench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = await pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = pg_url(name)
    engine = make_engine(url, pool_size=5)
    try:
        if migrate:
            await upgrade(engine)
        yield Scratch("postgres", url, engine, name, tmp)
    finally:
        await engine.dispose()
        admin = await pg_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def pg_xacts(name: str) -> int:
    """Transactions committed + rolled back in database ``name`` (from pg_stat_database;
    a backend reports its counts at exit or at most once a second)."""
    admin = await pg_admin()
    try:
        row = await admin.fetchrow(
            "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await admin.close()
    return int(row["n"]) if row else 0


async def pg_backend_cpu(name: str) -> dict[int, float]:
    """CPU seconds of each live server process connected to database ``name``."""
    admin = await pg_admin()
    try:
        rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()
    out = {}
    for r in rows:
        cpu = proc_cpu(int(r["pid"]))
        if cpu is not None:
            out[int(r["pid"])] = cpu
    return out


def backend_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def server_version() -> str:
    admin = await pg_admin()
    try:
        return str(await admin.fetchval("SHOW server_version"))
    finally:
        await admin.close()


# --- load ------------------------------------------------------------------------------


def batch_sizes(n_tasks: int, n_batches: int) -> list[int]:
    base, extra = divmod(n_tasks, n_batches)
    return [base + (1 if i < extra else 0) for i in range(n_batches)]


async def new_account(engine: AsyncEngine, credits: int) -> Caller:
    account_id, key = await accounts.create_account(engine, "bench", credits=credits)
    return Caller(account_id=account_id, key_id=key.key_id)


async def create_batches(
    engine: AsyncEngine,
    caller: Caller,
    sizes: Sequence[int],
    *,
    webhook_url: str | None = None,
    tag: str = "b",
    model: str = "sora-2",
) -> list[str]:
    """Create batches through the real service (validation, pricing, freeze, insert)."""
    ids = []
    catalog = default_catalog()
    for b, size in enumerate(sizes):
        body: dict[str, Any] = {
            "items": [{"prompt": f"{tag}{b} item {i}", "model": model} for i in range(size)]
        }
        if webhook_url:
            body["webhook_url"] = webhook_url
        spec = validate_batch(body, catalog=catalog, max_items=10_000, allow_private_webhooks=True)
        created = await create_batch(
            engine,
            caller,
            spec,
            request_id=f"bench-{tag}{b}",
            idempotency_key=None,
            fingerprint=None,
        )
        ids.append(created.batch_id)
    return ids


async def unsettled(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM batch_jobs WHERE settled_at IS NULL"))
            ).scalar_one()
        )


async def wait_settled(
    engine: AsyncEngine, *, timeout: float, every: float = 0.2, procs: Sequence[Proc] = ()
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await unsettled(engine) == 0:
            return True
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}; log: {p.log}")
        await asyncio.sleep(every)
    return False


async def completion_span(engine: AsyncEngine) -> tuple[float, int, int]:
    """Latest batch completion (epoch), tasks succeeded, tasks in all."""
    async with engine.connect() as conn:
        last = (await conn.execute(text("SELECT max(completed_at) FROM batch_jobs"))).scalar_one()
        ok, total = (
            await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM video_tasks"
                    if conn.dialect.name == "postgresql"
                    else "SELECT sum(status = 'succeeded'), count(*) FROM video_tasks"
                )
            )
        ).one()
    if isinstance(last, str):  # SQLite returns text for a raw max()
        from vidbatch.db.types import UTCDateTime

        last = UTCDateTime().process_result_value(last, engine.dialect)
    return (epoch(last) or 0.0), int(ok or 0), int(total)


# --- processes -------------------------------------------------------------------------


class Workdir:
    """Where process logs and count files go; removed at exit unless kept."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vidbatch_bench_logs_"))
        self.keep = keep
        self._n = 0

    def file(self, stem: str, suffix: str) -> Path:
        self._n += 1
        return self.path / f"{self._n:03d}-{stem}{suffix}"

    def close(self) -> None:
        if self.keep:
            print(f"logs kept in {self.path}")
            return
        for f in self.path.iterdir():
            f.unlink()
        self.path.rmdir()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    count_file: Path | None = None
    cpu_at_start: float = 0.0
    cpu_at_end: float | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return proc_cpu(self.pid) or 0.0

    def mark_start(self) -> None:
        self.cpu_at_start = self.cpu()

    def mark_end(self) -> float:
        self.cpu_at_end = self.cpu()
        return self.cpu_at_end - self.cpu_at_start

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            code = None
        if self.count_file is not None and self.count_file.exists():
            self.counts = json.loads(self.count_file.read_text())
        return code

    def log_has(self, needle: str) -> bool:
        try:
            return needle in self.log.read_text(errors="replace")
        except OSError:
            return False


def start(
    name: str, args: list[str], env: dict[str, str], work: Workdir, *, counted: bool = True
) -> Proc:
    log = work.file(name, ".log")
    count_file = work.file(name, ".counts.json") if counted else None
    env = dict(env)
    if count_file is not None:
        env["BENCH_COUNT_FILE"] = str(count_file)
    cmd = [PY, "-m", "bench.counted", *args] if counted else [PY, *args]
    with open(log, "wb") as fh:
        popen = subprocess.Popen(
            cmd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    return Proc(name, popen, log, count_file)


def stop_all(procs: Iterable[Proc]) -> None:
    procs = list(procs)
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    for p in procs:
        p.stop()


def vidbatch_env(
    db_url: str, sim_url: str, *, result_store: str | None = "none", **extra: str
) -> dict[str, str]:
    """The environment of every vidbatch process of a run. ``result_store`` is its
    ``VIDBATCH_RESULT_STORE``; None leaves it unset (vidbatch's default). Benchmarks without
    a ``--result-store`` option measure the worker alone: ``none``."""
    env = {
        k: v for k, v in os.environ.items() if k not in (*BASE_URL_VARS, "VIDBATCH_RESULT_STORE")
    }
    env.update(
        {
            "DATABASE_URL": db_url,
            "GRSAI_HOST": sim_url,
            "GRSAI_API_KEY": "sk-bench",
            "VIDBATCH_CALLBACK_SECRET": "bench-secret",
            "VIDBATCH_SECRET_KEY": BENCH_SECRET_KEY,
            # The simulator serves its videos over plain http from 127.0.0.1 (what
            # `vidbatch serve --simulator` allows too); the archive downloads them from there.
            "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": "false",
            "VIDBATCH_ALLOW_PRIVATE_URLS": "true",
            "VIDBATCH_ALLOW_PRIVATE_WEBHOOKS": "true",
            "VIDBATCH_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if result_store is not None:
        env["VIDBATCH_RESULT_STORE"] = result_store
    env.update(extra)
    return env


# --- result store ----------------------------------------------------------------------

#: ``--result-store`` values besides a store URL.
STORE_DEFAULT = "default"
STORE_NONE = "none"


def add_result_store_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--result-store",
        default=default,
        metavar="LIST",
        help="comma list of VIDBATCH_RESULT_STORE settings, each measured apart: "
        "'default' (unset: vidbatch-results/ beside the SQLite file; PostgreSQL has no "
        "default store, so a directory in the run's temporary directory), 'none', or a "
        f"store URL used as given (default: {default})",
    )


def parse_result_stores(text: str) -> list[str]:
    stores = [part.strip() for part in text.split(",") if part.strip()]
    if not stores:
        raise SystemExit("--result-store: name at least one store")
    for store in stores:
        if store not in (STORE_DEFAULT, STORE_NONE):
            try:
                parse_store_spec(store, database_url="sqlite:///bench.db")
            except ValueError as exc:
                raise SystemExit(f"--result-store {store}: {exc}") from None
    return stores


def result_store_setting(store: str, db: Scratch) -> str | None:
    """The ``VIDBATCH_RESULT_STORE`` of a run's processes for ``--result-store`` value
    ``store`` (None: unset). ``default`` on PostgreSQL, where vidbatch archives nothing
    unless told, is a directory in the run's temporary directory, so archiving is on."""
    if store != STORE_DEFAULT:
        return store
    if db.kind == "sqlite":
        return None  # vidbatch-results/ beside the database file, in db.tmp
    return (db.tmp / "vidbatch-results").as_uri()


def describe_result_store(store: str, kinds: Iterable[str]) -> str:
    if store == STORE_NONE:
        return "none: VIDBATCH_RESULT_STORE=none (no archive)"
    if store != STORE_DEFAULT:
        return f"{store}: VIDBATCH_RESULT_STORE={store} (used as given, not removed)"
    parts = []
    if "sqlite" in kinds:
        parts.append(
            f"SQLite: VIDBATCH_RESULT_STORE unset, {DEFAULT_LOCAL_DIR}/ beside the database "
            "file (vidbatch's default)"
        )
    if "postgres" in kinds:
        parts.append(
            "PostgreSQL: vidbatch's default is no store, so VIDBATCH_RESULT_STORE="
            f"file://<the run's temporary directory>/{DEFAULT_LOCAL_DIR} to keep archiving on"
        )
    return "default: " + "; ".join(parts) + "; removed after each run"


def print_result_stores(stores: Sequence[str], kinds: Iterable[str]) -> list[str]:
    """Print what each store setting means (the same for every process of a run)."""
    kinds = set(kinds)
    lines = [describe_result_store(s, kinds) for s in stores]
    print("result store (every vidbatch process of a run alike):")
    for line in lines:
        print(f"  {line}")
    return lines


async def archive_counts(engine: AsyncEngine) -> dict[str, int]:
    """Tasks per ``archive_status`` (``null``: not archived: no store, or not succeeded)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT archive_status, count(*) FROM video_tasks GROUP BY archive_status")
            )
        ).all()
    return {str(status) if status is not None else "null": int(n) for status, n in rows}


def vidbatch_audit(env: dict[str, str], work: Workdir) -> list[dict[str, Any]]:
    """``vidbatch audit --json`` with a run's environment: the money invariants it finds
    violated (an empty list: the books are right)."""
    log = work.file("audit", ".log")
    with open(log, "wb") as err:
        done = subprocess.run(
            [PY, "-m", "vidbatch", "audit", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=120,
            check=False,
        )
    out = done.stdout.decode(errors="replace")
    try:
        violations = json.loads(out[out.index("[") :])
    except ValueError:
        raise RuntimeError(
            f"vidbatch audit exited with {done.returncode}: {out[-2000:]} "
            f"{log.read_text(errors='replace')[-2000:]}"
        ) from None
    return list(violations)


async def wait_for(pred: Any, *, timeout: float, what: str, procs: Sequence[Proc] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError(
                    f"{p.name} exited with {p.popen.returncode}; "
                    f"log: {p.log.read_text(errors='replace')[-2000:]}"
                )
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def start_workers(n: int, env: dict[str, str], work: Workdir) -> list[Proc]:
    procs = [start(f"worker{i}", ["worker"], env, work) for i in range(n)]
    await wait_for(
        lambda: all(p.log_has("worker started") for p in procs),
        timeout=60,
        what="workers to start",
        procs=procs,
    )
    return procs


async def start_api(
    env: dict[str, str], work: Workdir, *, with_worker: bool = False, port: int | None = None
) -> tuple[Proc, str]:
    port = port or free_port()
    args = ["serve", "--port", str(port)] + ([] if with_worker else ["--no-worker"])
    proc = start("api", args, env, work)
    url = f"http://127.0.0.1:{port}"
    await wait_for(lambda: http_ok(f"{url}/healthz"), timeout=60, what="the API", procs=[proc])
    if with_worker:
        await wait_for(
            lambda: proc.log_has("worker started"),
            timeout=30,
            what="the API's worker",
            procs=[proc],
        )
    return proc, url


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sim:
    """The simulator in a subprocess (``bench.simserver``) and its control API."""

    def __init__(self, work: Workdir, **knobs: Any) -> None:
        config = {"seed": 1234, "gen_time": 0.0, "max_recorded_requests": 0, **knobs}
        self.log = work.file("simulator", ".log")
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [PY, "-m", "bench.simserver", "--config", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=self._log_fh,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the simulator did not start: {self.log.read_text()[-2000:]}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 20
        while not http_ok(f"{self.url}/_sim/health"):
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not answer")
            time.sleep(0.05)
        self.cpu_at_start = 0.0

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def configure(self, **knobs: Any) -> None:
        self.http.post("/_sim/config", json=knobs).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_sim/stats"))

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.get("/_bench/tasks"))

    def final_callbacks(self) -> list[dict[str, Any]]:
        return list(self.get("/_bench/callbacks"))

    def cpu(self) -> float:
        return proc_cpu(self.popen.pid) or 0.0

    def stop(self) -> None:
        with suppress(Exception):
            self.http.close()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log_fh.close()


def provider_calls(stats: dict[str, Any]) -> int:
    return sum(int(v) for v in stats.get("calls_per_endpoint", {}).values())


def sum_counts(procs: Iterable[Proc], key: str) -> int:
    return sum(int(p.counts.get(key, 0)) for p in procs)


def merge_top(procs: Iterable[Proc], limit: int = 12) -> list[dict[str, Any]]:
    merged: dict[str, int] = {}
    for p in procs:
        for row in p.counts.get("top", []):
            merged[row["sql"]] = merged.get(row["sql"], 0) + int(row["n"])
    return [{"n": n, "sql": sql} for sql, n in sorted(merged.items(), key=lambda kv: -kv[1])][
        :limit
    ]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
