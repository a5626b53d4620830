"""The result archive: how fast videos move from the provider into the store, next to a
plain copy of the same bytes with the same library, and what archiving costs end to end.

    python -m bench.archive [--files N] [--mb M] [--tasks T] [--runs R] [--quick]
                            [--no-s3] [--json FILE]

1. **MB/s.** The simulator (its own process) serves ``--files`` result files of ``--mb`` MB
   (its sample MP4 padded with a ``free`` box). Each file is copied, one at a time, into
   a local directory and into an S3 bucket on moto's standalone server (``moto_server``, a
   dev dependency, its own process):

   * **plain copy** — obstore alone: ``get`` from an ``HTTPStore`` on the simulator streamed
     into ``put`` on the store; no checks. The ceiling.
   * **archive** — what the worker's archive lane does for one item
     (``vidbatch.worker.archive.copy_to_store``): the pinned, checked download into a
     temporary file (size limit, MP4 check, SHA-256), the PyAV probe and thumbnail, then the
     thumbnail's and the video's puts.

2. **End to end.** ``bench.worker_throughput``'s SQLite x1 polling run (``--tasks`` tasks,
   zero-latency simulator, its 1.7 KB sample) with ``VIDBATCH_RESULT_STORE=none`` and with
   the default local store: tasks/s from creation to settled.

Defaults: 8 files of 32 MB, 400 tasks, 1 run (about 2 minutes on a loaded 2-core machine);
``--quick``: 4 files of 16 MB, 200 tasks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import obstore
from obstore.store import HTTPStore, LocalStore

from bench import common as c
from bench import worker_throughput as wt
from vidbatch.settings import Settings
from vidbatch.storage import ResultStore, open_store
from vidbatch.worker.archive import copy_to_store

MB = 1_000_000


def start_moto() -> tuple[subprocess.Popen[bytes], str] | None:
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        return None
    port = c.free_port()
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/moto-api/", timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    return None


def make_files(sim: c.Sim, n: int) -> list[str]:
    """``n`` succeeded tasks at the simulator; their result file paths."""
    paths = []
    with httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer sk-bench"}) as http:
        for i in range(n):
            body = {"model": "sora-2", "prompt": f"bench {i}", "webHook": "-1"}
            made = http.post("/v1/video/sora-video", json=body).json()
            task_id = made["data"]["id"]
            result = http.post("/v1/draw/result", json={"id": task_id}).json()
            url = result["data"]["results"][0]["url"]
            paths.append(url.split("/", 3)[3])  # files/<id>.mp4
    return paths


async def plain_copy(sim_url: str, target: Any, paths: list[str]) -> float:
    source = HTTPStore.from_url(sim_url, client_options={"allow_http": True})
    started = time.perf_counter()
    for path in paths:
        got = await obstore.get_async(source, path)
        await obstore.put_async(target, f"plain/{uuid.uuid4().hex}.mp4", got)
    return time.perf_counter() - started


async def archive_copy(
    sim_url: str, store: ResultStore, paths: list[str], settings: Settings
) -> float:
    async with aiohttp.ClientSession() as http:
        rt: Any = SimpleNamespace(settings=settings, http=http)
        started = time.perf_counter()
        for path in paths:
            row = SimpleNamespace(
                video_url=f"{sim_url}/{path}", batch_job_id="bench", id=uuid.uuid4().hex
            )
            with tempfile.TemporaryDirectory() as tmp:
                await copy_to_store(rt, store, row, Path(tmp))
        return time.perf_counter() - started


async def throughput(
    sim: c.Sim, paths: list[str], mb: int, s3_url: str | None
) -> list[dict[str, Any]]:
    rows = []
    settings_kw: dict[str, Any] = {
        "database_url": "sqlite:///bench-unused.db",
        "allow_private_urls": True,
        "archive_max_bytes": (mb + 10) * MB,
    }
    targets: list[tuple[str, Settings]] = []
    local_dir = Path(tempfile.mkdtemp(prefix="vidbatch-bench-store-"))
    targets.append(("local", Settings(result_store=str(local_dir), **settings_kw)))
    if s3_url:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        httpx.put(f"{s3_url}/{bucket}").raise_for_status()
        targets.append(
            (
                "s3 (moto_server)",
                Settings(
                    result_store=f"s3://{bucket}/bench",
                    aws_endpoint_url=s3_url,
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                    aws_region="us-east-1",
                    **settings_kw,
                ),
            )
        )
    total_mb = len(paths) * (mb * MB + 1765) / MB
    try:
        for name, settings in targets:
            store = open_store(settings)
            assert store is not None
            plain_target = (
                LocalStore(local_dir, automatic_cleanup=True)
                if store.spec.kind == "local"
                else store.store
            )
            for method in ("plain copy (obstore get → put)", "archive (vidbatch)"):
                if method.startswith("plain"):
                    seconds = await plain_copy(sim.url, plain_target, paths)
                else:
                    seconds = await archive_copy(sim.url, store, paths, settings)
                rows.append(
                    {
                        "store": name,
                        "method": method,
                        "files": len(paths),
                        "mb": total_mb,
                        "seconds": seconds,
                        "mb_per_s": total_mb / seconds,
                    }
                )
                print(f"  {name:18} {method:32} {total_mb / seconds:8.1f} MB/s", flush=True)
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    return rows


async def end_to_end(n_tasks: int, runs: int, work: c.Workdir) -> list[dict[str, Any]]:
    rows = []
    for label, store in (
        ("no archive (VIDBATCH_RESULT_STORE=none)", c.STORE_NONE),
        ("archive to the local store (the SQLite default)", c.STORE_DEFAULT),
    ):
        got = []
        for _ in range(runs):
            one = await wt.run_one("sqlite", 1, "polling", n_tasks, 4, work, result_store=store)
            got.append(one)
        rows.append(
            {
                "setup": label,
                "tasks": n_tasks,
                "runs": runs,
                "tasks_per_s": c.median(r["tasks_per_s"] for r in got),
                "cpu_ms_per_task": c.median(r["cpu_ms_per_task"] for r in got),
                "archived": min(r["archived"] for r in got),
            }
        )
        print(f"  {label:48} {rows[-1]['tasks_per_s']:8.1f} tasks/s", flush=True)
    return rows


async def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--mb", type=int, default=32)
    p.add_argument("--tasks", type=int, default=400)
    p.add_argument("--no-s3", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.files, args.mb, args.tasks = 4, 16, 200
    info = c.print_machine()
    work = c.Workdir(keep=args.keep_logs)
    moto = None if args.no_s3 else start_moto()
    sim = c.Sim(work, file_padding_bytes=args.mb * MB)
    try:
        print(f"archive throughput: {args.files} files of {args.mb} MB", flush=True)
        paths = make_files(sim, args.files)
        speed = await throughput(sim, paths, args.mb, moto[1] if moto else None)
    finally:
        sim.stop()
        if moto:
            moto[0].terminate()
            moto[0].wait(timeout=10)
    columns = [("store", "store"), ("method", "method"), ("files", "files"), ("mb", "MB")]
    print(c.table(speed, [*columns, ("seconds", "s"), ("mb_per_s", "MB/s")]))
    print(f"end to end: {args.tasks} tasks, SQLite x1, polling", flush=True)
    e2e = await end_to_end(args.tasks, args.runs or 1, work)
    columns = [("setup", "setup"), ("tasks", "tasks"), ("runs", "runs")]
    columns += [("tasks_per_s", "tasks/s"), ("cpu_ms_per_task", "CPU ms/task")]
    print(c.table(e2e, [*columns, ("archived", "archived")]))
    work.close()
    c.write_json(args.json, {"machine": info, "throughput": speed, "end_to_end": e2e})


if __name__ == "__main__":
    c.run_async(main())
