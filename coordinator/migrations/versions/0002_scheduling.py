"""Scheduling: retry delay options, broadcast children, dependencies.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("scheduler_task") as batch:
        batch.add_column(sa.Column("retry_delay", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_backoff", sa.Float(), nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("retry_delay_max", sa.Float(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("retry_jitter", sa.Float(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("broadcast_parent", sa.BigInteger(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("target_worker_name", sa.String(255), nullable=False,
                                   server_default=""))
    op.create_table(
        "scheduler_task_deps",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("job_name", sa.String(length=512), nullable=False),
        sa.Column("task_parent", Id, nullable=False),
        sa.Column("task_child", Id, nullable=False),
        sa.Column("can_visit", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["task_child"], ["scheduler_task.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_parent"], ["scheduler_task.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scheduler_task_deps_parent", "scheduler_task_deps",
                    ["task_parent", "can_visit"])
    op.create_index("ix_scheduler_task_deps_child", "scheduler_task_deps", ["task_child"])


def downgrade() -> None:
    op.drop_table("scheduler_task_deps")
    with op.batch_alter_table("scheduler_task") as batch:
        for column in ("target_worker_name", "broadcast_parent", "retry_jitter",
                       "retry_delay_max", "retry_backoff", "retry_delay"):
            batch.drop_column(column)
