"""The claim reads exactly the due range of a group; rare lookups get partial indexes.

The claim index becomes (status, group_name, priority DESC, next_run_time, id):
a claim seeks a group's top priority, then reads the due range of that
priority in order, so tasks queued for the future cost it nothing. Expiry,
broadcast parents and broadcast children are found through partial indexes
that hold only their few rows, not by reading every queued task.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_scheduler_task_due", table_name="scheduler_task")
    op.create_index("ix_scheduler_task_claim", "scheduler_task",
                    ["status", "group_name", sa.text("priority DESC"), "next_run_time", "id"])
    op.create_index("ix_scheduler_task_stop_time", "scheduler_task", ["status", "stop_time"],
                    sqlite_where=sa.text("stop_time IS NOT NULL"),
                    postgresql_where=sa.text("stop_time IS NOT NULL"))
    op.create_index("ix_scheduler_task_broadcast", "scheduler_task",
                    ["status", "next_run_time"],
                    sqlite_where=sa.text("broadcast"), postgresql_where=sa.text("broadcast"))
    op.create_index("ix_scheduler_task_target", "scheduler_task",
                    ["status", "target_worker_name"],
                    sqlite_where=sa.text("target_worker_name != ''"),
                    postgresql_where=sa.text("target_worker_name != ''"))


def downgrade() -> None:
    for name in ("ix_scheduler_task_target", "ix_scheduler_task_broadcast",
                 "ix_scheduler_task_stop_time", "ix_scheduler_task_claim"):
        op.drop_index(name, table_name="scheduler_task")
    op.create_index("ix_scheduler_task_due", "scheduler_task",
                    ["status", sa.text("priority DESC"), "next_run_time", "id"])
