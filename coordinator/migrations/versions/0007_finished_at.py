"""Housekeeping: when a task ended, so finished tasks can be purged by age.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED")


def upgrade() -> None:
    with op.batch_alter_table("scheduler_task") as batch:
        batch.add_column(sa.Column("finished_at", sa.DateTime, nullable=True))
    # Tasks that ended before this version: their last run's start, else their creation.
    task = sa.table("scheduler_task", sa.column("status", sa.String),
                    sa.column("finished_at", sa.DateTime), sa.column("last_run_time", sa.DateTime),
                    sa.column("created_at", sa.DateTime))
    op.execute(task.update().where(task.c.status.in_(TERMINAL)).values(
        finished_at=sa.func.coalesce(task.c.last_run_time, task.c.created_at)))
    op.create_index("ix_scheduler_task_finished", "scheduler_task", ["finished_at"],
                    sqlite_where=sa.text("finished_at IS NOT NULL"),
                    postgresql_where=sa.text("finished_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_scheduler_task_finished", "scheduler_task")
    with op.batch_alter_table("scheduler_task") as batch:
        batch.drop_column("finished_at")
