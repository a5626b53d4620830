"""`vidbatch results …`: the archived videos and thumbnails of a batch — list them with
their durable URLs, or delete them now (``purge``)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vidbatch.cli.common import fail, print_json, run, settings_from
from vidbatch.clock import utcnow
from vidbatch.services import archive, reads
from vidbatch.services.views import AdminTask

results_app = typer.Typer(
    help="Archived result files: list a batch's durable URLs, purge a batch's files.",
    no_args_is_help=True,
)
console = Console()


@results_app.command("list")
def results_list(
    ctx: typer.Context,
    batch: str = typer.Option(..., "--batch", help="Batch id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """A batch's items with their archive: status, durable video and thumbnail URLs, size,
    SHA-256, duration and resolution (links signed now, valid for
    VIDBATCH_RESULT_URL_TTL_SECONDS)."""
    settings = settings_from(ctx)

    async def go() -> list[AdminTask]:
        from vidbatch.runtime import Runtime

        rt = await Runtime.open(settings)
        try:
            async with rt.engine.connect() as conn:
                tasks, _ = await reads.list_tasks(conn, batch, limit=100_000, links=rt.links)
            return tasks
        finally:
            await rt.close()

    tasks = run(go)
    if as_json:
        print_json([t.model_dump() for t in tasks])
        return
    table = Table("#", "status", "archive", "size", "video", "thumbnail", "video_url")
    table.columns[-1].overflow = "fold"
    for t in tasks:
        table.add_row(
            str(t.index),
            t.status,
            t.archive_status or "-",
            _size(t.video_size_bytes),
            _video(t),
            "yes" if t.thumbnail_url else "-",
            t.video_url or "-",
        )
    console.print(table)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1_000_000:.2f} MB" if n >= 100_000 else f"{n} B"


def _video(t: AdminTask) -> str:
    if not t.video_width:
        return "-"
    seconds = f" {t.video_duration_seconds:.1f}s" if t.video_duration_seconds else ""
    return f"{t.video_width}x{t.video_height}{seconds}"


@results_app.command("purge")
def results_purge(
    ctx: typer.Context,
    batch: str = typer.Option(..., "--batch", help="Batch id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Delete a batch's archived videos and thumbnails now; its items become `expired`
    (their URL is the provider's again, which has long expired)."""
    settings = settings_from(ctx)

    async def go() -> Any:
        from vidbatch.runtime import open_engine
        from vidbatch.storage import StoreError, open_store

        engine = await open_engine(settings)
        try:
            return await archive.purge_batch(engine, open_store(settings), batch, now=utcnow())
        except StoreError as exc:  # nothing marked: the purge can be run again
            fail(str(exc), 1)
        finally:
            await engine.dispose()

    done = run(go)
    if as_json:
        print_json(
            {
                "batch_id": done.batch_id,
                "files_deleted": done.files_deleted,
                "items_expired": done.items_expired,
            }
        )
        return
    typer.echo(
        f"batch {done.batch_id}: {done.files_deleted} file(s) deleted, "
        f"{done.items_expired} item(s) marked expired"
    )
