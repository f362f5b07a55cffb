"""Initial schema: tasks, runs, live output, workers.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_task",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("uuid", sa.String(length=255), nullable=False),
        sa.Column("task_name", sa.String(length=512), nullable=False),
        sa.Column("group_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("function_name", sa.String(length=512), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("vars", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("next_run_time", sa.DateTime(), nullable=False),
        sa.Column("stop_time", sa.DateTime(), nullable=True),
        sa.Column("repeats", sa.BigInteger(), nullable=False),
        sa.Column("retry_failed", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("prevent_drift", sa.Boolean(), nullable=False),
        sa.Column("cronline", sa.String(length=255), nullable=True),
        sa.Column("timeout", sa.BigInteger(), nullable=False),
        sa.Column("sync_output", sa.BigInteger(), nullable=False),
        sa.Column("times_run", sa.BigInteger(), nullable=False),
        sa.Column("times_failed", sa.BigInteger(), nullable=False),
        sa.Column("last_run_time", sa.DateTime(), nullable=True),
        sa.Column("assigned_worker_name", sa.String(length=255), nullable=False),
        sa.Column("broadcast", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.BigInteger(), nullable=False),
        sa.Column("discard_results", sa.Boolean(), nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False),
        sa.Column("lost_count", sa.BigInteger(), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_index(
        "ix_scheduler_task_due",
        "scheduler_task",
        ["status", sa.text("priority DESC"), "next_run_time", "id"],
        unique=False,
    )
    op.create_table(
        "scheduler_worker",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("worker_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_heartbeat", sa.DateTime(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(), nullable=False),
        sa.Column("group_names", sa.Text(), nullable=False),
        sa.Column("functions", sa.Text(), nullable=False),
        sa.Column("capabilities", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("heartbeat", sa.Float(), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("alive", sa.Boolean(), nullable=False),
        sa.Column("lost_at", sa.DateTime(), nullable=True),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("worker_name"),
    )
    op.create_table(
        "scheduler_run",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("stop_time", sa.DateTime(), nullable=True),
        sa.Column("run_output", sa.Text(), nullable=False),
        sa.Column("run_result", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("worker_name", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["scheduler_task.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scheduler_run_task", "scheduler_run", ["task_id", "attempt"], unique=False)
    op.create_table(
        "scheduler_output",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("clear", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["scheduler_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "seq", name="uq_scheduler_output_run_seq"),
    )


def downgrade() -> None:
    for table in ("scheduler_output", "scheduler_run", "scheduler_worker", "scheduler_task"):
        op.drop_table(table)
