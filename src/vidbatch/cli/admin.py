"""`vidbatch batches …` and `vidbatch webhooks …`: the operator's view of batches (with
their money reconciled against the ledger) and of customer webhooks, and the actions on
them: cancel, retry failed items, resend a webhook. Same services as the admin API."""

from __future__ import annotations

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.cli.common import (
    call,
    fail,
    positive,
    print_fields,
    print_json,
    print_rows,
    read,
    settings_from,
)
from vidbatch.db.schema import BATCH_STATUSES
from vidbatch.services import batches as batch_svc
from vidbatch.services import reads, resend, retry
from vidbatch.services.views import AdminBatch, BatchDetail, Delivery

#: The most rows one listing prints (a larger --limit is refused, never sent to SQL).
MAX_LIST_LIMIT = 100_000

batches_app = typer.Typer(
    help="List and inspect batches; cancel them; retry failed items.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
webhooks_app = typer.Typer(
    help="Customer webhook deliveries: list their attempts, resend.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@batches_app.command("list")
def batches_list(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", help="Only this account's batches."),
    status: str | None = typer.Option(
        None, "--status", help=f"Only batches in this status ({', '.join(BATCH_STATUSES)})."
    ),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Batches newest first, their credits checked against the ledger."""
    settings = settings_from(ctx)
    if status is not None and status not in BATCH_STATUSES:
        fail(f"--status must be one of {', '.join(BATCH_STATUSES)} (got {status!r})")
    positive(limit, "--limit", most=MAX_LIST_LIMIT)

    async def page(conn: AsyncConnection) -> list[AdminBatch]:
        rows, _ = await reads.list_batches(conn, account_id=account, status=status, limit=limit)
        return rows

    rows = read(settings, page)
    if as_json:
        print_json([b.model_dump() for b in rows])
        return
    print_rows(
        [
            "batch_id",
            "account_id",
            "status",
            "items",
            "ok/failed",
            "reserved",
            "charged",
            "refunded",
            "ledger",
            "created",
        ],
        [
            [
                b.batch_id,
                b.account_id,
                b.status,
                b.total_count,
                f"{b.success_count}/{b.failed_count}",
                b.reserved,
                b.charged,
                b.refunded,
                "ok" if b.reconciled else "MISMATCH",
                b.created_at,
            ]
            for b in rows
        ],
    )


@batches_app.command("show")
def batches_show(
    ctx: typer.Context,
    batch_id: str = typer.Argument(..., help="Batch id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """One batch: status, counts, credits (and the ledger's), webhook state."""
    settings = settings_from(ctx)

    detail: BatchDetail = read(settings, lambda conn: reads.batch_detail(conn, batch_id))
    if as_json:
        print_json(detail.model_dump())
        return
    print_fields(detail.model_dump())


@batches_app.command("cancel")
def batches_cancel(
    ctx: typer.Context, batch_id: str = typer.Argument(..., help="Batch id.")
) -> None:
    """Cancel a batch: items not submitted yet are refunded at once; running ones finish."""
    settings = settings_from(ctx)
    done = call(
        settings,
        lambda e: batch_svc.cancel_batch(
            e, batch_id, account_id=None, webhook_max_attempts=settings.webhook_max_attempts
        ),
    )
    typer.echo(
        f"batch {done.batch_id} {done.status}: {done.cancelled_items} item(s) "
        f"cancelled, {done.credits_refunded} credits refunded in all"
    )


@batches_app.command("retry-failed")
def batches_retry_failed(
    ctx: typer.Context,
    batch_id: str = typer.Argument(..., help="A settled batch's id."),
    include_moderation: bool = typer.Option(
        False, "--include-moderation", help="Also retry items refused by moderation."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Retry a settled batch's failed items as a new batch, reserved and charged anew."""
    settings = settings_from(ctx)
    out = call(
        settings,
        lambda e: retry.retry_failed(
            e,
            batch_id,
            include_moderation=include_moderation,
            catalog=settings.catalog,
            allow_private_webhooks=settings.allow_private_webhooks,
            webhook_max_attempts=settings.webhook_max_attempts,
        ),
    )
    if as_json:
        # the same object as the admin API's answer
        print_json({"ok": True, **out.model_dump()})
        return
    again = " (it existed already)" if out.idempotent_replay else ""
    skipped = (
        f"; {out.excluded_moderation} moderation failure(s) left out"
        if out.excluded_moderation
        else ""
    )
    typer.echo(
        f"batch {out.batch_id} retries item(s) "
        f"{', '.join(map(str, out.retried_indices))} of {batch_id}{again}; "
        f"{out.required_credits} credits reserved{skipped}"
    )


@webhooks_app.command("list")
def webhooks_list(
    ctx: typer.Context,
    batch_id: str | None = typer.Argument(None, help="Only this batch's events."),
    limit: int = typer.Option(
        50, "--limit", help="At most this many (latest first without a batch)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Webhook events with their attempts, last status and error."""
    settings = settings_from(ctx)
    positive(limit, "--limit", most=MAX_LIST_LIMIT)

    rows: list[Delivery] = read(
        settings, lambda conn: reads.list_deliveries(conn, batch_id, limit=limit)
    )
    if as_json:
        # the events' bodies are not asked for here: leave the field out
        print_json([d.model_dump(exclude={"payload"}) for d in rows])
        return
    print_rows(
        ["batch_id", "event", "state", "attempts", "last status", "last error", "next attempt"],
        [
            [
                d.batch_id,
                d.event_type,
                d.state,
                f"{d.attempts}/{d.max_attempts}",
                d.last_status,
                d.last_error,
                d.next_attempt_at,
            ]
            for d in rows
        ],
    )


@webhooks_app.command("resend")
def webhooks_resend(
    ctx: typer.Context,
    batch_id: str = typer.Argument(..., help="Batch id."),
    event: str | None = typer.Option(
        None, "--event", help="This event (e.g. batch.created); default: the final one."
    ),
) -> None:
    """Send a batch's webhook event again: due now, attempts counted from zero."""
    settings = settings_from(ctx)
    out = call(
        settings,
        lambda e: resend.resend_webhook(
            e, batch_id, event_type=event, max_attempts=settings.webhook_max_attempts
        ),
    )
    typer.echo(
        f"{out.event_type} of batch {batch_id} will be sent again "
        f"(event {out.event_id}, up to {out.max_attempts} attempts)"
    )
