"""provider calls of every process per minute, for the dashboard's fleet-wide figures

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import vidbatch.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_calls",
        sa.Column("minute", vidbatch.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("call", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "call", "outcome", name=op.f("pk_provider_calls")),
    )


def downgrade() -> None:
    op.drop_table("provider_calls")
