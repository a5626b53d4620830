"""The money audit: checks every invariant of the ledger and returns what is violated.

- per account: ``balance == Σ delta`` and ``frozen == Σ frozen_delta`` of its ledger;
  ``frozen == Σ (reserved − refunded)`` of its unsettled batches; available ≥ 0;
- per settled batch: ``charged + refunded == reserved``; ``charged == Σ cost of its
  succeeded tasks``; its ledger entries net to ``−charged``; no task still live;
- per unsettled batch: it has a reserve entry equal to its reservation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidbatch.db.schema import accounts, batch_jobs, credit_ledger, video_tasks
from vidbatch.domain.states import TASK_LIVE, LedgerType, TaskStatus


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


async def audit(conn: AsyncConnection) -> list[Violation]:
    """Every violated money invariant; an empty list means the books are right."""
    out: list[Violation] = []

    ledger_sums = (
        select(
            credit_ledger.c.account_id,
            func.coalesce(func.sum(credit_ledger.c.delta), 0).label("delta"),
            func.coalesce(func.sum(credit_ledger.c.frozen_delta), 0).label("frozen"),
        )
        .group_by(credit_ledger.c.account_id)
        .subquery()
    )
    open_batches = (
        select(
            batch_jobs.c.user_id,
            func.coalesce(
                func.sum(batch_jobs.c.frozen_credits - batch_jobs.c.credits_refunded), 0
            ).label("held"),
        )
        .where(batch_jobs.c.settled_at.is_(None))
        .group_by(batch_jobs.c.user_id)
        .subquery()
    )
    rows = (
        await conn.execute(
            select(
                accounts.c.id,
                accounts.c.balance_credits,
                accounts.c.frozen_credits,
                func.coalesce(ledger_sums.c.delta, 0),
                func.coalesce(ledger_sums.c.frozen, 0),
                func.coalesce(open_batches.c.held, 0),
            )
            .outerjoin(ledger_sums, ledger_sums.c.account_id == accounts.c.id)
            .outerjoin(open_batches, open_batches.c.user_id == accounts.c.id)
        )
    ).all()
    for account in rows:
        out.extend(_account_violations(account))

    task_sums = (
        select(
            video_tasks.c.batch_job_id,
            func.sum(
                case(
                    (video_tasks.c.status == TaskStatus.SUCCEEDED, video_tasks.c.cost_credits),
                    else_=0,
                )
            ).label("succeeded_cost"),
            func.sum(case((video_tasks.c.status.in_(TASK_LIVE), 1), else_=0)).label("live"),
            func.sum(video_tasks.c.cost_credits).label("total_cost"),
        )
        .group_by(video_tasks.c.batch_job_id)
        .subquery()
    )
    batch_ledger = (
        select(
            credit_ledger.c.batch_id,
            func.sum(credit_ledger.c.delta).label("delta"),
            func.sum(
                case(
                    (credit_ledger.c.type == LedgerType.RESERVE, credit_ledger.c.frozen_delta),
                    else_=0,
                )
            ).label("reserved"),
            func.sum(
                case(
                    (credit_ledger.c.type == LedgerType.REFUND, -credit_ledger.c.frozen_delta),
                    else_=0,
                )
            ).label("refunded"),
        )
        .where(credit_ledger.c.batch_id.is_not(None))
        .group_by(credit_ledger.c.batch_id)
        .subquery()
    )
    batch_rows = (
        await conn.execute(
            select(
                batch_jobs.c.id,
                batch_jobs.c.settled_at,
                batch_jobs.c.frozen_credits,
                batch_jobs.c.credits_spent,
                batch_jobs.c.credits_refunded,
                func.coalesce(task_sums.c.succeeded_cost, 0),
                func.coalesce(task_sums.c.live, 0),
                func.coalesce(task_sums.c.total_cost, 0),
                func.coalesce(batch_ledger.c.delta, 0),
                func.coalesce(batch_ledger.c.reserved, 0),
                func.coalesce(batch_ledger.c.refunded, 0),
            )
            .outerjoin(task_sums, task_sums.c.batch_job_id == batch_jobs.c.id)
            .outerjoin(batch_ledger, batch_ledger.c.batch_id == batch_jobs.c.id)
        )
    ).all()
    for batch in batch_rows:
        out.extend(_batch_violations(batch))
    return out


def _account_violations(row: Sequence[Any]) -> Iterator[Violation]:
    """An account's balance and frozen credits against its ledger and its open batches."""
    acc_id, balance, frozen, ledger_delta, ledger_frozen, held = row
    subject = f"account {acc_id}"
    if balance != ledger_delta:
        yield Violation(
            "balance == Σ ledger", subject, f"balance {balance}, ledger says {ledger_delta}"
        )
    if frozen != ledger_frozen:
        yield Violation(
            "frozen == Σ ledger frozen", subject, f"frozen {frozen}, ledger says {ledger_frozen}"
        )
    if frozen != held:
        yield Violation(
            "frozen == Σ unsettled reservations",
            subject,
            f"frozen {frozen}, unsettled batches hold {held}",
        )
    if balance - frozen < 0 or frozen < 0:
        yield Violation("available >= 0", subject, f"balance {balance}, frozen {frozen}")


def _batch_violations(row: Sequence[Any]) -> Iterator[Violation]:
    """A batch's reservation and refunds against its items and ledger; once settled, its
    charge too."""
    (
        bid,
        settled_at,
        reserved,
        spent,
        refunded,
        succ_cost,
        live,
        total_cost,
        l_delta,
        l_reserved,
        l_refunded,
    ) = row
    subject = f"batch {bid}"
    if l_reserved != reserved:
        yield Violation(
            "reserve entry == reservation",
            subject,
            f"reserved {reserved}, ledger reserved {l_reserved}",
        )
    if total_cost != reserved:
        yield Violation(
            "reservation == Σ item prices", subject, f"reserved {reserved}, items cost {total_cost}"
        )
    if l_refunded != refunded:
        yield Violation(
            "refunded == Σ refund entries",
            subject,
            f"refunded {refunded}, ledger refunded {l_refunded}",
        )
    if settled_at is None:
        if spent:
            yield Violation("unsettled batch charged nothing", subject, f"credits_spent {spent}")
        return
    if spent + refunded != reserved:
        yield Violation(
            "charged + refunded == reserved", subject, f"{spent} + {refunded} != {reserved}"
        )
    if spent != succ_cost:
        yield Violation(
            "charged == Σ price of succeeded",
            subject,
            f"charged {spent}, succeeded items cost {succ_cost}",
        )
    if -l_delta != spent:
        yield Violation(
            "ledger charge == charged", subject, f"ledger charged {-l_delta}, batch says {spent}"
        )
    if live:
        yield Violation("settled batch has no live task", subject, f"{live} task(s) still live")
