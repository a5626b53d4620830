"""video_tasks: the result archive (status, queue, object keys, size, SHA-256, duration,
resolution)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vidbatch.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    ("archive_status", sa.String(16)),
    ("archive_due_at", UTCDateTime(timezone=True)),
    ("archive_error", sa.Text()),
    ("archived_at", UTCDateTime(timezone=True)),
    ("archive_key", sa.Text()),
    ("thumbnail_key", sa.Text()),
    ("video_size_bytes", sa.BigInteger()),
    ("video_sha256", sa.String(64)),
    ("video_duration_seconds", sa.Float()),
    ("video_width", sa.Integer()),
    ("video_height", sa.Integer()),
)
STATUSES = "archive_status IS NULL OR archive_status IN ('pending', 'stored', 'failed', 'expired')"


def upgrade() -> None:
    with op.batch_alter_table("video_tasks") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
        batch.add_column(
            sa.Column("archive_attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.create_check_constraint(op.f("ck_video_tasks_archive_status"), STATUSES)
    op.create_index(
        "ix_video_tasks_archive_due",
        "video_tasks",
        ["archive_due_at"],
        sqlite_where=sa.text("archive_status = 'pending'"),
        postgresql_where=sa.text("archive_status = 'pending'"),
    )
    op.create_index(
        "ix_video_tasks_archived_at",
        "video_tasks",
        ["archived_at"],
        sqlite_where=sa.text("archive_status = 'stored'"),
        postgresql_where=sa.text("archive_status = 'stored'"),
    )


def downgrade() -> None:
    op.drop_index("ix_video_tasks_archived_at", table_name="video_tasks")
    op.drop_index("ix_video_tasks_archive_due", table_name="video_tasks")
    with op.batch_alter_table("video_tasks") as batch:
        batch.drop_constraint(op.f("ck_video_tasks_archive_status"), type_="check")
        batch.drop_column("archive_attempts")
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
