"""Tracing: a task keeps the trace context of the call that queued it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduler_task") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_task") as batch:
        batch.drop_column("trace_context")
