"""``insert_many`` (the task rows of a new batch) stores what ``table.insert()`` with one dict
per row stores, and fails the same way, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.helpers import new_account, new_batch
from vidbatch.clock import utcnow
from vidbatch.db.portable import insert_many
from vidbatch.db.schema import batch_jobs, video_tasks

BODY = {
    "items": [
        {
            "prompt": "ünïcode ☃ and 'quotes'",
            "model": "sora-2",
            "aspect_ratio": "9:16",
            "duration": 15,
            "metadata": {"a": [1, 2.5, None, True], "b": "x"},
        },
        {
            "prompt": "frames",
            "model": "veo-flash",
            "meta": {
                "firstFrameUrl": "https://example.com/a.jpg",
                "urls": ["https://example.com/b"],
            },
        },
        {"prompt": "reference", "model": "veo-pro", "reference_url": "https://example.com/r.png"},
        {"prompt": "rounded up", "duration": 5, "metadata": {}},
        {"prompt": "empty meta", "meta": {}, "metadata": {"nested": {"k": "v"}}},
    ]
}


async def _stored(conn: AsyncConnection, batch_id: str) -> list[dict[str, Any]]:
    """Every column of the batch's tasks as the database holds it (JSON as its text, and on
    SQLite each value's storage class), ids left out."""
    if conn.dialect.name == "sqlite":
        columns = [f"typeof({c.name}), quote({c.name})" for c in video_tasks.c]
    else:
        columns = [f"{c.name}::text" for c in video_tasks.c]
    rows = await conn.execute(
        text(
            f"SELECT {', '.join(columns)} FROM video_tasks WHERE batch_job_id = :b "
            "ORDER BY batch_index"
        ),
        {"b": batch_id},
    )
    names = [c.name for c in video_tasks.c]
    step = 2 if conn.dialect.name == "sqlite" else 1
    return [
        {
            name: tuple(row[n * step : (n + 1) * step])
            for n, name in enumerate(names)
            if name not in ("id", "batch_job_id")
        }
        for row in rows
    ]


async def test_a_batch_stores_what_one_insert_per_row_stores(engine: AsyncEngine) -> None:
    caller = await new_account(engine)
    created = await new_batch(engine, caller, BODY)
    async with engine.connect() as conn:
        fast = await _stored(conn, created.batch_id)
        row = (
            await conn.execute(
                video_tasks.select()
                .where(video_tasks.c.batch_job_id == created.batch_id)
                .order_by(video_tasks.c.batch_index)
            )
        ).first()
    assert row is not None

    # The same rows the plain way: one dict per row through table.insert().
    other = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            batch_jobs.insert().values(
                id=other,
                user_id=caller.account_id,
                status="queued",
                total_count=len(fast),
                frozen_credits=0,
                request_id=other,
                source="test",
                created_at=row.created_at,
                updated_at=row.created_at,
            )
        )
        async with engine.connect() as read:
            tasks = (
                await read.execute(
                    video_tasks.select()
                    .where(video_tasks.c.batch_job_id == created.batch_id)
                    .order_by(video_tasks.c.batch_index)
                )
            ).mappings()
            given = [
                "account_id",
                "batch_index",
                "model",
                "provider",
                "prompt",
                "reference_url",
                "aspect_ratio",
                "duration",
                "size",
                "meta",
                "metadata",
                "cost_credits",
                "status",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ]
            dicts = [
                {"id": str(uuid.uuid4()), "batch_job_id": other, **{k: t[k] for k in given}}
                for t in tasks
            ]
        await conn.execute(video_tasks.insert(), dicts)
    async with engine.connect() as conn:
        plain = await _stored(conn, other)

    assert len(fast) == len(BODY["items"])
    assert fast == plain
    # A missing meta is JSON null, not SQL NULL, on both paths.
    assert fast[0]["meta"][-1] in ("'null'", "null")


def _rows(n: int, **columns: list[Any]) -> dict[str, list[Any]]:
    return {
        "id": [str(uuid.uuid4()) for _ in range(n)],
        "batch_index": list(range(n)),
        "prompt": ["p"] * n,
        "cost_credits": [1] * n,
        **columns,
    }


@pytest.mark.parametrize(
    "case",
    ["provider too long", "unknown status", "index taken", "no such batch", "negative cost"],
)
async def test_it_fails_as_one_insert_per_row_fails(engine: AsyncEngine, case: str) -> None:
    caller = await new_account(engine)
    created = await new_batch(engine, caller, BODY)
    now = utcnow()
    same: dict[str, Any] = {
        "batch_job_id": created.batch_id,
        "account_id": caller.account_id,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
    }
    each = _rows(2, batch_index=[100, 101])
    if case == "provider too long":
        each["provider"] = ["x" * 40, "grsai"]  # varchar(32): refused by PostgreSQL only
    elif case == "unknown status":
        same["status"] = "bogus"
    elif case == "index taken":
        each["batch_index"] = [1, 102]
    elif case == "no such batch":
        same["batch_job_id"] = "no-such-batch"
    else:
        each["cost_credits"] = [1, -1]

    async def plain(
        conn: AsyncConnection, same: Mapping[str, Any], each: Mapping[str, Sequence[Any]]
    ) -> None:
        n = len(each["id"])
        await conn.execute(
            video_tasks.insert(), [{**same, **{k: v[i] for k, v in each.items()}} for i in range(n)]
        )

    outcomes: list[tuple[str, str | None]] = []
    for way in (plain, insert_many):
        try:
            async with engine.begin() as conn:
                if way is plain:
                    await plain(conn, same, each)
                else:
                    await insert_many(conn, video_tasks, same=same, each=each)
                outcomes.append(("stored", None))
                await conn.rollback()
        except DBAPIError as exc:
            outcomes.append((type(exc).__name__, str(exc.orig).splitlines()[0]))
    assert outcomes[0] == outcomes[1]
    if case != "provider too long" or engine.dialect.name == "postgresql":
        assert outcomes[0][0] != "stored"
