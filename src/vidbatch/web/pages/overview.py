"""The overview: tasks by status, throughput, provider errors, the latest batches."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from vidbatch.api.app import runtime_of
from vidbatch.clock import utcnow
from vidbatch.domain.states import TASK_RUNNING, TASK_WAITING
from vidbatch.services import stats
from vidbatch.web.render import TASK_STATUSES, age, progress, render
from vidbatch.web.routing import page_router
from vidbatch.web.session import Signed

router = page_router()


@router.get("")
async def overview(request: Request, operator: Signed) -> Response:
    rt = runtime_of(request)
    now = utcnow()
    figures = await stats.overview(rt.engine, now=now)
    counts = figures.task_counts
    peak = max([b.succeeded + b.failed for b in figures.buckets] + [1])
    recent = figures.recent
    return render(
        request,
        "overview.html",
        {
            "counts": {s: counts.get(s, 0) for s in TASK_STATUSES},
            "total_tasks": sum(counts.values()),
            "in_flight": sum(counts.get(s, 0) for s in TASK_RUNNING),
            "waiting": sum(counts.get(s, 0) for s in TASK_WAITING),
            "buckets": [
                {
                    "start": b.start,
                    "end": b.end,
                    "succeeded": b.succeeded,
                    "failed": b.failed,
                    "width": round(100 * (b.succeeded + b.failed) / peak, 2),
                }
                for b in figures.buckets
            ],
            "completed_last_hour": sum(b.succeeded + b.failed for b in figures.buckets),
            "oldest_waiting": figures.oldest_waiting,
            "oldest_age": age(figures.oldest_waiting, now),
            "provider": figures.provider,
            "recent": [
                {
                    **b.model_dump(),
                    "progress": progress(recent.task_counts.get(b.batch_id, {}), b.total_count),
                    "account_name": recent.account_name(b.account_id),
                }
                for b in recent.batches
            ],
            "now": now,
        },
        operator=operator,
    )
