"""video_tasks.retry_of_task_id: the failed task a retried item retries, unique

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("video_tasks", sa.Column("retry_of_task_id", sa.String(36), nullable=True))
    # Earlier retries are matched to their parent's task by batch and index; where two
    # children (the race this column closes) took the same item, the older one keeps it.
    op.execute(
        "UPDATE video_tasks SET retry_of_task_id = ("
        "SELECT p.id FROM video_tasks p JOIN batch_jobs c ON c.parent_batch_id = p.batch_job_id "
        "WHERE c.id = video_tasks.batch_job_id AND p.batch_index = video_tasks.batch_index) "
        "WHERE batch_job_id IN (SELECT id FROM batch_jobs WHERE parent_batch_id IS NOT NULL) "
        "AND id = (SELECT t.id FROM video_tasks t JOIN batch_jobs b ON b.id = t.batch_job_id "
        "WHERE b.parent_batch_id = (SELECT parent_batch_id FROM batch_jobs "
        "WHERE id = video_tasks.batch_job_id) AND t.batch_index = video_tasks.batch_index "
        "ORDER BY t.created_at, t.id LIMIT 1)"
    )
    op.create_index(
        "uq_video_tasks_retry_of_task_id", "video_tasks", ["retry_of_task_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_video_tasks_retry_of_task_id", table_name="video_tasks")
    with op.batch_alter_table("video_tasks") as batch:
        batch.drop_column("retry_of_task_id")
