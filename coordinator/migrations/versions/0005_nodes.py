"""Several coordinators on one database: their node rows, the maintenance leader, and
which coordinator holds each worker's session.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_node",
        sa.Column("node_name", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("listen", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
    )
    op.create_table(
        "scheduler_leader",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node_name", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.execute("INSERT INTO scheduler_leader (id, node_name, epoch, expires_at) "
               "VALUES (1, '', 0, '2000-01-01 00:00:00')")
    with op.batch_alter_table("scheduler_worker") as batch:
        batch.add_column(sa.Column("node_name", sa.String(255), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_worker") as batch:
        batch.drop_column("node_name")
    op.drop_table("scheduler_leader")
    op.drop_table("scheduler_node")
