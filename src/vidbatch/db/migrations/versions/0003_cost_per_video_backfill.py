"""a mixed-model batch's cost_per_video is its highest item price (never NULL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE batch_jobs SET cost_per_video = ("
        "SELECT COALESCE(MAX(t.cost_credits), 0) FROM video_tasks t "
        "WHERE t.batch_job_id = batch_jobs.id) WHERE cost_per_video IS NULL"
    )


def downgrade() -> None:
    pass  # the old NULLs cannot be told apart from prices that happened to be equal
