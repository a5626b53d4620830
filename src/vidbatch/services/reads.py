"""The operator's reads: batches with their money reconciled against the ledger, tasks,
billing, webhook deliveries, accounts and keys, as the typed views of
``vidbatch.services.views``.

Every figure comes from the database as it is now; the ledger figures are computed from
``credit_ledger`` itself, so a batch whose own columns disagree with the ledger shows
``reconciled: false``. Each function takes a connection and never commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks, webhook_deliveries
from vidbatch.domain.states import FailureType, LedgerType, TaskStatus
from vidbatch.services import accounts, batches, views
from vidbatch.services.views import (
    Account,
    AccountKeys,
    AdminBatch,
    AdminTask,
    BatchBilling,
    BatchDetail,
    BatchFigures,
    BatchListing,
    BatchReport,
    BatchWebhooks,
    BillingTotals,
    Cursor,
    Delivery,
    Figures,
    Key,
)

#: The order events happen in, to tell the last one when two share a timestamp.
if TYPE_CHECKING:
    from vidbatch.storage import Links

EVENT_ORDER = {
    "batch.created": 0,
    "batch.running": 1,
    "batch.completed": 2,
    "batch.failed": 2,
    "batch.refunded": 3,
}


# --- money ---------------------------------------------------------------------------------


async def ledger_figures(conn: AsyncConnection, batch_ids: list[str]) -> dict[str, Figures]:
    """Per batch: Σ reserve entries, Σ charges, Σ refunds, from ``credit_ledger``."""
    if not batch_ids:
        return {}
    led = credit_ledger
    rows = (
        await conn.execute(
            select(
                led.c.batch_id,
                func.sum(case((led.c.type == LedgerType.RESERVE, led.c.frozen_delta), else_=0)),
                func.sum(case((led.c.type == LedgerType.SETTLE, -led.c.delta), else_=0)),
                func.sum(case((led.c.type == LedgerType.REFUND, -led.c.frozen_delta), else_=0)),
            )
            .where(led.c.batch_id.in_(batch_ids))
            .group_by(led.c.batch_id)
        )
    ).all()
    return {r[0]: Figures.of(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows}


async def _figures_of(conn: AsyncConnection, batch_id: str) -> Figures:
    return (await ledger_figures(conn, [batch_id])).get(batch_id, Figures.of())


async def billing(conn: AsyncConnection, batch_id: str) -> BatchBilling:
    """A batch's ledger entries with their totals, next to the batch's own figures."""
    row = await batches.get_batch_row(conn, batch_id)
    entries = (
        await conn.execute(
            select(credit_ledger)
            .where(credit_ledger.c.batch_id == batch_id)
            .order_by(credit_ledger.c.id)
        )
    ).all()
    figures = await _figures_of(conn, batch_id)
    summary = views.batch_view(row, figures)
    return BatchBilling(
        batch_id=batch_id,
        account_id=row.user_id,
        status=row.status,
        settlement_status=row.settlement_status,
        entries=[views.ledger_entry(e) for e in entries],
        totals=BillingTotals(
            **figures.model_dump(),
            entries=len(entries),
            balance_delta=sum(int(e.delta) for e in entries),
            frozen_delta=sum(int(e.frozen_delta) for e in entries),
        ),
        batch=BatchFigures(
            reserved=summary.reserved,
            charged=summary.charged,
            refunded=summary.refunded,
            net=summary.net,
            held=summary.held,
        ),
        reconciled=summary.reconciled,
    )


# --- batches and tasks -----------------------------------------------------------------------


async def list_batches(
    conn: AsyncConnection,
    *,
    account_id: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    cursor: Cursor | None = None,
) -> tuple[list[AdminBatch], Cursor | None]:
    """A page of every account's batches, newest first, and the cursor of the next page."""
    rows = await batches.list_batches(
        conn,
        account_id=account_id,
        status=status,
        limit=limit + 1,
        cursor=cursor,
        created_from=created_from,
        created_to=created_to,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    figures = await ledger_figures(conn, [r.id for r in rows])
    page = [views.batch_view(r, figures.get(r.id, Figures.of())) for r in rows]
    next_cursor = (rows[-1].created_at, rows[-1].id) if more and rows else None
    return page, next_cursor


async def task_counts_by_batch(
    conn: AsyncConnection, batch_ids: list[str]
) -> dict[str, dict[str, int]]:
    """Per batch, its tasks by status (a batch's own counts are only written at settlement)."""
    if not batch_ids:
        return {}
    rows = (
        await conn.execute(
            select(video_tasks.c.batch_job_id, video_tasks.c.status, func.count())
            .where(video_tasks.c.batch_job_id.in_(batch_ids))
            .group_by(video_tasks.c.batch_job_id, video_tasks.c.status)
        )
    ).all()
    out: dict[str, dict[str, int]] = {}
    for batch_id, status, n in rows:
        out.setdefault(str(batch_id), {})[str(status)] = int(n)
    return out


async def batch_listing(
    conn: AsyncConnection,
    *,
    account_id: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    cursor: Cursor | None = None,
) -> BatchListing:
    """A page of batches as the dashboard lists them: with live task counts."""
    page, next_cursor = await list_batches(
        conn,
        account_id=account_id,
        status=status,
        created_from=created_from,
        created_to=created_to,
        limit=limit,
        cursor=cursor,
    )
    return BatchListing(
        batches=page,
        next_cursor=next_cursor,
        task_counts=await task_counts_by_batch(conn, [b.batch_id for b in page]),
        accounts=await list_accounts(conn),
    )


async def batch_detail(conn: AsyncConnection, batch_id: str) -> BatchDetail:
    """Everything about one batch except its task list."""
    row = await batches.get_batch_row(conn, batch_id)
    figures = await _figures_of(conn, batch_id)
    counts: dict[str, int] = dict(
        (
            await conn.execute(
                select(video_tasks.c.status, func.count())
                .where(video_tasks.c.batch_job_id == batch_id)
                .group_by(video_tasks.c.status)
            )
        ).all()
    )
    failures: dict[str | None, int] = dict(
        (
            await conn.execute(
                select(video_tasks.c.failure_type, func.count())
                .where(
                    video_tasks.c.batch_job_id == batch_id,
                    video_tasks.c.status == TaskStatus.FAILED,
                )
                .group_by(video_tasks.c.failure_type)
            )
        ).all()
    )
    children = list(
        (
            await conn.execute(
                select(batch_jobs.c.id)
                .where(batch_jobs.c.parent_batch_id == batch_id)
                .order_by(batch_jobs.c.created_at)
            )
        ).scalars()
    )
    return views.batch_detail(
        row,
        figures,
        task_counts={status: int(n) for status, n in sorted(counts.items())},
        failure_types={
            str(k or FailureType.UNKNOWN): int(n)
            for k, n in sorted(failures.items(), key=lambda kv: str(kv[0]))
        },
        child_batch_ids=children,
    )


async def list_tasks(
    conn: AsyncConnection,
    batch_id: str,
    *,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    links: Links | None = None,
    base_url: str | None = None,
) -> tuple[list[AdminTask], int]:
    """A page of a batch's tasks in index order (NotFound for an unknown batch); ``links``
    signs the archived files' URLs."""
    await batches.get_batch_row(conn, batch_id)
    rows, total = await batches.list_items(
        conn, batch_id, statuses=(status,) if status else None, limit=limit, offset=offset
    )
    return [views.task_view(r, links, base_url) for r in rows], total


async def batch_report(
    conn: AsyncConnection,
    batch_id: str,
    *,
    task_status: str | None = None,
    limit: int = 25,
    offset: int = 0,
    links: Links | None = None,
    base_url: str | None = None,
) -> BatchReport:
    """One batch: its detail, a page of its tasks, its billing, its webhook events."""
    detail = await batch_detail(conn, batch_id)
    tasks, total = await list_tasks(
        conn,
        batch_id,
        status=task_status,
        limit=limit,
        offset=offset,
        links=links,
        base_url=base_url,
    )
    return BatchReport(
        detail=detail,
        tasks=tasks,
        total_tasks=total,
        billing=await billing(conn, batch_id),
        deliveries=await list_deliveries(conn, batch_id, limit=100),
        account_name=(await accounts.get_account(conn, detail.account_id))["name"],
    )


# --- webhooks --------------------------------------------------------------------------------


async def list_deliveries(
    conn: AsyncConnection,
    batch_id: str | None = None,
    *,
    limit: int = 50,
    include_payload: bool = False,
) -> list[Delivery]:
    """A batch's webhook events in the order they happened, or the latest of all batches."""
    wd = webhook_deliveries
    if batch_id is not None:
        await batches.get_batch_row(conn, batch_id)
        query = select(wd).where(wd.c.batch_id == batch_id).order_by(wd.c.created_at)
    else:
        query = select(wd).order_by(wd.c.created_at.desc(), wd.c.id.desc())
    rows = list((await conn.execute(query.limit(limit))).all())
    if batch_id is not None:
        rows.sort(key=lambda r: (r.created_at, EVENT_ORDER.get(r.event_type, 9)))
    return [views.delivery_view(r, include_payload=include_payload) for r in rows]


async def batch_webhooks(
    conn: AsyncConnection, batch_id: str, *, include_payload: bool = False
) -> BatchWebhooks:
    """A batch's webhook state and (up to 100 of) its events."""
    deliveries = await list_deliveries(conn, batch_id, limit=100, include_payload=include_payload)
    row = await batches.get_batch_row(conn, batch_id)
    return BatchWebhooks(
        batch_id=batch_id,
        webhook_status=row.webhook_status,
        webhook_attempts=row.webhook_attempts,
        webhook_last_error=row.webhook_last_error,
        deliveries=deliveries,
    )


# --- accounts and keys -----------------------------------------------------------------------


async def list_accounts(conn: AsyncConnection) -> list[Account]:
    return [views.account_view(a) for a in await accounts.list_accounts(conn)]


async def get_account(conn: AsyncConnection, account_id: str) -> Account:
    return views.account_view(await accounts.get_account(conn, account_id))


async def list_keys(conn: AsyncConnection, account_id: str) -> list[Key]:
    return [views.key_view(k) for k in await accounts.list_keys(conn, account_id)]


async def get_key(conn: AsyncConnection, key_id: str) -> Key:
    return views.key_view(await accounts.get_key(conn, key_id))


async def accounts_with_keys(conn: AsyncConnection) -> list[AccountKeys]:
    """Every account with its keys, oldest account first."""
    return [
        AccountKeys(account=a, keys=await list_keys(conn, a.account_id))
        for a in await list_accounts(conn)
    ]
