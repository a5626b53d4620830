"""``vidbatch-client``: submit a file of prompts, watch it, download the videos.

The API key comes from ``VIDBATCH_API_KEY`` (or ``--api-key``), the server from
``VIDBATCH_BASE_URL`` (or ``--base-url``). Exit status: 0 done, 1 the server refused or could
not be reached, 2 a usage error, 3 ``--wait`` ended with failed items.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vidbatch_client import errors
from vidbatch_client._core import first_pause
from vidbatch_client._version import __version__
from vidbatch_client.client import Client
from vidbatch_client.models import Batch, CreatedBatch

#: Items per batch by default: the published /api/v1 limit (servers may allow more).
DEFAULT_BATCH_SIZE = 1000
#: Columns of a CSV file that are item fields; any other column goes into ``metadata``.
CSV_FIELDS = ("prompt", "model", "aspect_ratio", "duration", "reference_url")


class UsageError(Exception):
    """A mistake in the command line or the input file (exit status 2)."""


# --- reading the input file --------------------------------------------------------------


def _jsonl_items(text: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"line {number}: not JSON ({exc.msg})") from None
        if isinstance(value, str):
            value = {"prompt": value}
        if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
            raise UsageError(f'line {number}: expected an object with a "prompt" string')
        items.append(value)
    return items


def _csv_row(number: int, row: dict[str | None, str | None]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or value == "":
            continue
        if column == "duration":
            try:
                item["duration"] = int(value)
            except ValueError:
                raise UsageError(f"line {number}: duration {value!r} is not a number") from None
        elif column == "metadata":
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise UsageError(f"line {number}: metadata is not a JSON object")
            metadata.update(parsed)
        elif column in CSV_FIELDS:
            item[column] = value
        else:
            metadata[column] = value
    if "prompt" not in item:
        raise UsageError(f"line {number}: no prompt")
    if metadata:
        item["metadata"] = metadata
    return item


def _csv_items(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise UsageError('the CSV file needs a header row with a "prompt" column')
    return [_csv_row(number, row) for number, row in enumerate(reader, start=2)]


def read_items(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """The items of a JSONL file (one object, or one prompt string, a line) or a CSV file
    (a header row with ``prompt`` and optionally ``model``, ``aspect_ratio``, ``duration``,
    ``reference_url``, ``metadata`` as JSON; other columns become metadata)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    items = _csv_items(text) if kind == "csv" else _jsonl_items(text)
    if not items:
        raise UsageError(f"{path} has no items")
    return items


@dataclass(frozen=True)
class Chunk:
    """One batch of the file: items ``start`` to ``end - 1`` and its request id."""

    number: int
    start: int
    end: int
    request_id: str


def plan(items: Sequence[dict[str, Any]], batch_size: int, prefix: str | None) -> list[Chunk]:
    """Split the items into batches with deterministic request ids: the same items split
    the same way get the same ids, so a re-run replays what was created instead of
    creating it again."""
    if prefix is None:
        canonical = json.dumps(list(items), sort_keys=True, separators=(",", ":"))
        prefix = "vbc-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]
    return [
        Chunk(
            number=n + 1,
            start=start,
            end=min(start + batch_size, len(items)),
            request_id=f"{prefix}-{start}-{min(start + batch_size, len(items))}",
        )
        for n, start in enumerate(range(0, len(items), batch_size))
    ]


# --- commands ----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    return Client(api_key=args.api_key, base_url=args.base_url, timeout=args.timeout)


def _emit(args: argparse.Namespace, out: Console, value: Any, text: str) -> None:
    if args.json:
        print(json.dumps(value, default=str))
    else:
        out.print(text, highlight=False)


def _watch(vb: Client, batch_ids: list[str], interval: float, err: Console) -> list[Batch]:
    """Poll every batch until all have ended, with a progress bar per batch and in total."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        tasks = {
            bid: progress.add_task(f"batch {n}", total=None, status="")
            for n, bid in enumerate(batch_ids, start=1)
        }
        total_task = progress.add_task("total", total=None, status="")
        pause = first_pause(interval)
        while True:
            latest = [vb.get_batch(bid) for bid in batch_ids]
            for batch in latest:
                progress.update(
                    tasks[batch.batch_id],
                    total=batch.total_count,
                    completed=batch.done_count,
                    status=batch.status,
                )
            ended = sum(b.ended for b in latest)
            progress.update(
                total_task,
                total=sum(b.total_count for b in latest),
                completed=sum(b.done_count for b in latest),
                status=f"{ended}/{len(latest)} batches ended",
            )
            if ended == len(latest):
                return latest
            time.sleep(pause)
            pause = min(interval, pause * 2)


def cmd_submit(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    items = read_items(Path(args.file), args.format)
    chunks = plan(items, args.batch_size, args.request_id_prefix)
    created: list[tuple[Chunk, CreatedBatch]] = []
    with _client(args) as vb:
        for chunk in chunks:
            answer = vb.create_batch(
                items[chunk.start : chunk.end],
                request_id=chunk.request_id,
                webhook_url=args.webhook_url,
            )
            created.append((chunk, answer))
            word = "already submitted" if answer.idempotent_replay else "created"
            err.print(
                f"batch {chunk.number}/{len(chunks)} {answer.batch_id}: {word} "
                f"(items {chunk.start + 1}-{chunk.end}, {answer.required_credits} credits)",
                highlight=False,
            )
        ids = [a.batch_id for _, a in created]
        summary: dict[str, Any] = {
            "batches": [
                {
                    "batch_id": a.batch_id,
                    "request_id": a.request_id,
                    "items": c.end - c.start,
                    "idempotent_replay": a.idempotent_replay,
                }
                for c, a in created
            ]
        }
        code = 0
        if args.wait or args.download:
            final = _watch(vb, ids, args.poll_interval, err)
            for entry, batch in zip(summary["batches"], final, strict=True):
                entry.update(status=batch.status, succeeded=batch.succeeded_count)
                entry.update(failed=batch.failed_count)
            if any(b.failed_count for b in final):
                code = 3
        if args.download:
            root = Path(args.download)
            for entry in summary["batches"]:
                report = vb.download(
                    entry["batch_id"],
                    root / entry["batch_id"],
                    thumbnails=not args.no_thumbnails,
                    concurrency=args.concurrency,
                )
                entry.update(downloaded=report.downloaded, skipped=report.skipped)
                err.print(
                    f"{entry['batch_id']}: {report.downloaded} downloaded, "
                    f"{report.skipped} already present, {len(report.missing)} without a video",
                    highlight=False,
                )
    _emit(args, out, summary, " ".join(ids))
    return code


def cmd_status(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as vb:
        batch = vb.get_batch(args.batch_id)
    text = (
        f"{batch.batch_id}  {batch.status}  {batch.succeeded_count} succeeded, "
        f"{batch.failed_count} failed of {batch.total_count}  credits reserved "
        f"{batch.credits_reserved}, settled {batch.credits_settled}, refunded "
        f"{batch.credits_refunded}"
    )
    _emit(args, out, batch.model_dump(mode="json"), text)
    return 0


def cmd_cancel(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as vb:
        result = vb.cancel(args.batch_id)
    text = f"{result.batch_id}  {result.status}  {result.credits_refunded} credits refunded"
    _emit(args, out, result.model_dump(mode="json"), text)
    return 0


def cmd_results(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as vb:
        text = vb.results(args.batch_id, format=args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_balance(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as vb:
        balance = vb.balance()
    text = f"available {balance.available}  reserved {balance.reserved}  total {balance.total}"
    _emit(args, out, balance.model_dump(mode="json"), text)
    return 0


def cmd_download(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as vb:
        report = vb.download(
            args.batch_id,
            args.dest,
            thumbnails=not args.no_thumbnails,
            concurrency=args.concurrency,
        )
    value = {
        "downloaded": report.downloaded,
        "skipped": report.skipped,
        "missing": len(report.missing),
    }
    text = (
        f"{report.downloaded} downloaded, {report.skipped} already present, "
        f"{len(report.missing)} without a video"
    )
    _emit(args, out, value, text)
    return 0


# --- the parser --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-key", help="API key (default: $VIDBATCH_API_KEY)")
    common.add_argument("--base-url", help="server URL (default: $VIDBATCH_BASE_URL)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    common.add_argument("--json", action="store_true", help="print one JSON line")

    parser = argparse.ArgumentParser(
        prog="vidbatch-client",
        description="Submit prompts to vidbatch, watch the batches, download the videos.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    submit = sub.add_parser(
        "submit",
        parents=[common],
        help="submit a JSONL or CSV file of items",
        description="Submit every item of FILE, split into batches of --batch-size. Each "
        "batch has a request id derived from the items, so running the same command again "
        "(e.g. after a crash) answers the batches already created instead of creating and "
        "charging them again.",
    )
    submit.add_argument("file", help="JSONL (one item a line) or CSV (a header row)")
    submit.add_argument("--format", choices=["jsonl", "csv"], help="default: by extension")
    submit.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"items per batch (default {DEFAULT_BATCH_SIZE}, the published limit)",
    )
    submit.add_argument("--request-id-prefix", help="default: derived from the items")
    submit.add_argument("--webhook-url", help="send this batch's events to this URL")
    submit.add_argument("--wait", action="store_true", help="watch until every batch ended")
    submit.add_argument("--download", metavar="DIR", help="then download into DIR/<batch_id>/")
    submit.add_argument("--no-thumbnails", action="store_true", help="videos only")
    submit.add_argument("--concurrency", type=int, default=8, help="downloads at once")
    submit.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="longest pause between polls (seconds; polls start faster)",
    )
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", parents=[common], help="show a batch")
    status.add_argument("batch_id")
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a batch")
    cancel.add_argument("batch_id")
    cancel.set_defaults(func=cmd_cancel)

    results = sub.add_parser("results", parents=[common], help="every item's result")
    results.add_argument("batch_id")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    results.add_argument("-o", "--output", help="write to this file instead of stdout")
    results.set_defaults(func=cmd_results)

    balance = sub.add_parser("balance", parents=[common], help="your credits")
    balance.set_defaults(func=cmd_balance)

    download = sub.add_parser("download", parents=[common], help="download a batch's videos")
    download.add_argument("batch_id")
    download.add_argument("dest", help="folder (created if missing)")
    download.add_argument("--no-thumbnails", action="store_true", help="videos only")
    download.add_argument("--concurrency", type=int, default=8, help="downloads at once")
    download.set_defaults(func=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console()
    err = Console(stderr=True)
    try:
        code: int = args.func(args, out, err)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except errors.InsufficientCredits as exc:
        print(
            f"error: not enough credits: {exc.required} needed, {exc.available} available",
            file=sys.stderr,
        )
        return 1
    except errors.TooManyItems as exc:
        print(f"error: {exc} (pass a smaller --batch-size)", file=sys.stderr)
        return 1
    except errors.VidbatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
