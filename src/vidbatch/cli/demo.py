"""`vidbatch demo`: everything embedded in one process — a SQLite file, the GrsAI simulator,
the API and the worker — driving the seed's example batch (and a few more items, one
failing moderation) plus a second batch cancelled half-way, with live progress, a final
table (every video archived to the local store, shown under its durable link, one of them
fetched back with its thumbnail) and the money audit. Exit 0 only when every batch settled
and the audit is clean."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from vidbatch.cli.common import fail

SEED_ITEMS: list[dict[str, Any]] = [
    {
        "prompt": "A cinematic video of a city",
        "model": "sora-2",
        "aspect_ratio": "9:16",
        "duration": 10,
    },
    {
        "prompt": "An anime style video",
        "model": "veo-flash",
        "aspect_ratio": "16:9",
        "meta": {"firstFrameUrl": "https://example.com/first.jpg"},
    },
]
MORE_ITEMS: list[dict[str, Any]] = [
    {
        "prompt": "Waves rolling onto a beach at sunset",
        "model": "sora-2",
        "duration": 15,
        "metadata": {"sku": "beach-15"},
    },
    {
        "prompt": "A paper plane over a city, pro quality",
        "model": "veo-pro",
        "aspect_ratio": "16:9",
    },
    {"prompt": "A fox running through snow", "model": "sora-2", "aspect_ratio": "16:9"},
    {"prompt": "Something the provider's moderation refuses [sim:moderation]", "model": "sora-2"},
]
CANCELLED_ITEMS: list[dict[str, Any]] = [
    {"prompt": f"A timelapse of clouds, part {i}", "model": "sora-2"} for i in range(8)
]


def demo(
    port: int = typer.Option(0, "--port", help="API port (0 = any free port)."),
    gen_time: float = typer.Option(2.0, "--gen-time", help="Simulated generation time in seconds."),
    keep: bool = typer.Option(False, "--keep", help="Keep the demo's database afterwards."),
    timeout: float = typer.Option(90.0, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Run vidbatch end to end on its embedded defaults (no network, no keys needed)."""
    workdir = Path(tempfile.mkdtemp(prefix="vidbatch-demo-"))
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # whole URLs in logs and CI output
    try:
        ok = asyncio.run(_demo(console, workdir, port, gen_time, timeout))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything the demo started has stopped[/yellow]")
        raise typer.Exit(130) from None
    except OSError as exc:
        fail(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
            "choose another with --port, or --port 0 for any free one",
            1,
        )
    finally:
        if keep:
            console.print(f"database kept at {workdir / 'demo.db'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    raise typer.Exit(0 if ok else 1)


async def _demo(
    console: Console, workdir: Path, port: int, gen_time: float, timeout: float
) -> bool:
    from vidbatch.api.app import create_app
    from vidbatch.embedded import EmbeddedServer, bind
    from vidbatch.providers.simulator import SimulatorConfig
    from vidbatch.providers.simulator import create_app as create_simulator
    from vidbatch.runtime import Runtime
    from vidbatch.services.accounts import create_account
    from vidbatch.services.audit import audit
    from vidbatch.settings import Settings

    # Bind the API port first so a taken port is reported before anything starts.
    api_sock = bind("127.0.0.1", port)
    api_port = api_sock.getsockname()[1]
    api_sock.close()
    sim_config = SimulatorConfig(
        seed=7,
        gen_time=gen_time,
        gen_time_mode="uniform",
        gen_time_min=gen_time * 0.5,
        gen_time_max=gen_time * 1.5,
        callback_interval=0.5,
    )
    async with EmbeddedServer(create_simulator(sim_config)) as sim:
        settings = Settings(
            database_url=f"sqlite:///{workdir / 'demo.db'}",
            grsai_host=sim.url,
            grsai_api_key="sk-demo",
            app_url=f"http://127.0.0.1:{api_port}",
            callback_secret=os.urandom(16).hex(),
            poll_intervals="0.5,1,1",
            callback_grace_seconds=max(3.0, gen_time * 3),
            require_https_video_url=False,
            allow_private_webhooks=True,
            # The simulator's files are on 127.0.0.1: archive them all the same. The result
            # store is the default, a directory beside the demo's database.
            allow_private_urls=True,
            worker_idle_seconds=0.2,
            # A small provider cap, so batch 2 still has unstarted items when it is cancelled.
            provider_max_inflight=3,
            log_level="WARNING",
        )
        rt = await Runtime.open(settings)
        try:
            app = create_app(settings, runtime=rt, run_worker=True)
            async with EmbeddedServer(app, port=api_port) as api:
                console.print(
                    f"[bold]vidbatch demo[/bold]  API {api.url}  "
                    f"simulator {sim.url}  database {workdir / 'demo.db'}"
                )
                _, key = await create_account(
                    rt.engine, "Demo Studio", credits=2_000, rate_limit_per_min=10_000
                )
                console.print(f"account 'Demo Studio' with 2000 credits, API key {key.key_prefix}…")
                batches = await _submit(console, api.url, key.api_key)
                ok = await _follow(console, api.url, key.api_key, batches, timeout)
                async with rt.engine.connect() as conn:
                    violations = await audit(conn)
                await _report(console, api.url, key.api_key, batches, violations)
                return ok and not violations
        finally:
            await rt.close()


def _client(url: str, api_key: str) -> aiohttp.ClientSession:
    """A session on the demo's API, authenticated as the demo's customer."""
    return aiohttp.ClientSession(
        base_url=url, headers={"x-api-key": api_key}, timeout=aiohttp.ClientTimeout(total=30)
    )


async def _json(request: Any) -> Any:
    """Send one request of a `_client` session; its JSON body, or an error for a non-2xx."""
    async with request as response:
        response.raise_for_status()
        return await response.json()


async def _submit(console: Console, url: str, api_key: str) -> list[str]:
    async with _client(url, api_key) as http:
        body = await _json(
            http.post("/api/enterprise/video-batch", json={"items": SEED_ITEMS + MORE_ITEMS})
        )
        console.print(
            f"batch 1: {body['total_count']} items, {body['required_credits']} "
            f"credits frozen, {body['available_credits']} left available"
        )
        body2 = await _json(
            http.post(
                "/api/v1/batches",
                json={"items": CANCELLED_ITEMS, "request_id": "demo-cancelled-batch"},
            )
        )
        console.print(f"batch 2: {body2['total_count']} items (to be cancelled half-way)")
        return [body["batch_id"], body2["batch_id"]]


async def _follow(
    console: Console, url: str, api_key: str, batches: list[str], timeout: float
) -> bool:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"),
        console=console,
    )
    bars = {
        b: progress.add_task(f"batch {n + 1}", total=1, counts="") for n, b in enumerate(batches)
    }
    cancelled = False
    started = time.monotonic()
    async with _client(url, api_key) as http:
        with Live(progress, console=console, refresh_per_second=8, transient=False):
            while time.monotonic() - started < timeout:
                done = 0
                for batch_id in batches:
                    view = await _json(http.get(f"/api/v1/batches/{batch_id}"))
                    # failed_count includes the items cancelled before they started
                    ended = view["succeeded_count"] + view["failed_count"]
                    counts = (
                        f"succeeded {view['succeeded_count']}  failed "
                        f"{view['failed_count'] - view['cancelled_count']}  cancelled "
                        f"{view['cancelled_count']}  status {view['status']}"
                    )
                    progress.update(
                        bars[batch_id], total=view["total_count"], completed=ended, counts=counts
                    )
                    if view["completed_at"]:
                        done += 1
                second = await _json(http.get(f"/api/v1/batches/{batches[1]}"))
                running = second.get("status") == "running"
                if not cancelled and (running or time.monotonic() - started > 4.0):
                    async with http.post(f"/api/v1/batches/{batches[1]}/cancel") as r:
                        if r.status == 200:
                            refunded = (await r.json())["credits_refunded"]
                            console.print(f"batch 2 cancelled: {refunded} credits refunded at once")
                    cancelled = True
                if done == len(batches):
                    return True
                await asyncio.sleep(0.25)
    console.print("[red]timed out before every batch settled[/red]")
    return False


def _archive(item: dict[str, Any]) -> str:
    status = item.get("archive_status")
    if status != "stored":
        return status or ""
    size = item.get("video_size_bytes") or 0
    seconds = item.get("video_duration_seconds") or 0
    digest = str(item.get("video_sha256"))[:12]
    return (
        f"stored {size} B {item.get('video_width')}x{item.get('video_height')} "
        f"{seconds:.1f}s sha256 {digest}…"
    )


async def _check_durable(
    console: Console, http: aiohttp.ClientSession, item: dict[str, Any]
) -> None:
    """Fetch one item's durable link and thumbnail, as a customer would."""
    async with http.get(item["video_url"]) as got:
        body = await got.read()
        kind = got.headers.get("Content-Type", "")
    digest = hashlib.sha256(body).hexdigest()
    same = "matches" if digest == item["video_sha256"] else "DOES NOT MATCH"
    console.print(
        f"durable link of item {item['index']}: HTTP {got.status} {kind}, {len(body)} bytes, "
        f"SHA-256 {same}: {item['video_url']}",
        soft_wrap=True,  # whole URLs, to copy
    )
    async with http.get(item["thumbnail_url"]) as thumb:
        jpeg = await thumb.read()
    console.print(
        f"its thumbnail: HTTP {thumb.status} {thumb.headers.get('Content-Type', '')}, "
        f"{len(jpeg)} bytes: {item['thumbnail_url']}",
        soft_wrap=True,
    )
    console.print(
        f"provider's URL (expires about 2 hours after the video): {item['source_url']}",
        soft_wrap=True,
    )


async def _report(
    console: Console, url: str, api_key: str, batches: list[str], violations: list[Any]
) -> None:
    console.print()  # below the live progress bars
    stored: dict[str, Any] | None = None
    async with _client(url, api_key) as http:
        for n, batch_id in enumerate(batches, 1):
            view = await _json(http.get(f"/api/v1/batches/{batch_id}"))
            items = (await _json(http.get(f"/api/v1/batches/{batch_id}/items?limit=100")))["items"]
            table = Table(title=f"batch {n} — {view['status']}", title_justify="left")
            for col in ("item", "model", "status", "archive", "video URL", "thumbnail", "failure"):
                table.add_column(col, overflow="fold")
            for item in items:
                reason, error = item.get("failure_reason") or "", item.get("error") or ""
                failure = error if error.startswith(reason) else f"{reason}: {error}".strip(": ")
                table.add_row(
                    str(item["index"]),
                    item["model"] or "",
                    item["status"],
                    _archive(item),
                    item["video_url"] or "",
                    "yes" if item.get("thumbnail_url") else "",
                    failure,
                )
                if item.get("archive_status") == "stored" and stored is None:
                    stored = item
            console.print(table)
            console.print(
                f"credits: reserved {view['credits_reserved']}  charged "
                f"{view['credits_settled']}  refunded {view['credits_refunded']}"
            )
        if stored is not None:
            await _check_durable(console, http, stored)
    if violations:
        console.print(f"[red]audit: {len(violations)} violation(s)[/red]")
        for v in violations:
            console.print(f"  {v}")
    else:
        console.print(
            "[green]audit: clean[/green] (ledger, balances and every settled batch reconcile)"
        )
