"""Dashboard sessions kept server-side: a signed cookie lets an operator in only while its
row exists, so signing out (or deleting the rows) ends a session before it expires."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.schema import admin_sessions


async def open_session(
    engine: AsyncEngine, session_id: str, *, expires_at: datetime, now: datetime
) -> None:
    """Record a new session (and forget the expired ones)."""
    async with engine.begin() as conn:
        await conn.execute(delete(admin_sessions).where(admin_sessions.c.expires_at <= now))
        await conn.execute(
            admin_sessions.insert().values(id=session_id, created_at=now, expires_at=expires_at)
        )


async def is_open(engine: AsyncEngine, session_id: str, *, now: datetime) -> bool:
    """True while the session exists and has not expired."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                select(admin_sessions.c.id).where(
                    admin_sessions.c.id == session_id, admin_sessions.c.expires_at > now
                )
            )
        ).first()
    return found is not None


async def close_session(engine: AsyncEngine, session_id: str) -> None:
    """End a session: its cookie no longer lets anyone in."""
    async with engine.begin() as conn:
        await conn.execute(delete(admin_sessions).where(admin_sessions.c.id == session_id))
