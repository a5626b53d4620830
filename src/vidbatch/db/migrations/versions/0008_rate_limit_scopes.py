"""rate-limit counters per scope (read or write), so reads never spend the creates' budget

The counters only live for the current minute, so the table is simply rebuilt.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _create(*scoped: sa.Column[str]) -> None:
    keys = ["key_id", *(c.name for c in scoped), "minute_bucket"]
    op.create_table(
        "rate_limit_counters",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        *scoped,
        sa.Column("minute_bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*keys, name=op.f("pk_rate_limit_counters")),
    )


def upgrade() -> None:
    op.drop_table("rate_limit_counters")
    _create(sa.Column("scope", sa.String(length=8), nullable=False))


def downgrade() -> None:
    op.drop_table("rate_limit_counters")
    _create()
