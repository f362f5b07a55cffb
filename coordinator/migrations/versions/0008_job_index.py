"""Dashboards: a job's edges are read by its name.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scheduler_task_deps_job", "scheduler_task_deps", ["job_name"])


def downgrade() -> None:
    op.drop_index("ix_scheduler_task_deps_job", "scheduler_task_deps")
