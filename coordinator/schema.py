"""The database tables (SQLAlchemy Core). Migrations in migrations/ create them.

Table and column names are web2py's (scheduler_task, scheduler_run,
scheduler_worker) where one exists. Datetimes are stored as naive UTC.
Live output gets its own append-only table so the hot task table stays small;
it is folded into scheduler_run.run_output when the run ends.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid primary key.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

task = sa.Table(
    "scheduler_task",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(255), nullable=False, unique=True),
    sa.Column("task_name", sa.String(512), nullable=False),
    sa.Column("group_name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("function_name", sa.String(512), nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("vars", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=False),
    sa.Column("next_run_time", sa.DateTime, nullable=False),
    sa.Column("stop_time", sa.DateTime, nullable=True),
    sa.Column("repeats", sa.BigInteger, nullable=False),
    sa.Column("retry_failed", sa.BigInteger, nullable=False),
    sa.Column("period", sa.BigInteger, nullable=False),
    sa.Column("prevent_drift", sa.Boolean, nullable=False),
    sa.Column("cronline", sa.String(255), nullable=True),
    sa.Column("timeout", sa.BigInteger, nullable=False),
    sa.Column("sync_output", sa.BigInteger, nullable=False),
    sa.Column("times_run", sa.BigInteger, nullable=False),
    sa.Column("times_failed", sa.BigInteger, nullable=False),
    sa.Column("last_run_time", sa.DateTime, nullable=True),
    sa.Column("assigned_worker_name", sa.String(255), nullable=False),
    sa.Column("broadcast", sa.Boolean, nullable=False),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.Column("discard_results", sa.Boolean, nullable=False),
    sa.Column("attempt", sa.BigInteger, nullable=False),
    sa.Column("lost_count", sa.BigInteger, nullable=False),
    sa.Column("stop_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # 0002: retry delay options, broadcast children
    sa.Column("retry_delay", sa.Float, nullable=False, server_default="0"),
    sa.Column("retry_backoff", sa.Float, nullable=False, server_default="1"),
    sa.Column("retry_delay_max", sa.Float, nullable=False, server_default="0"),
    sa.Column("retry_jitter", sa.Float, nullable=False, server_default="0"),
    sa.Column("broadcast_parent", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("target_worker_name", sa.String(255), nullable=False, server_default=""),
    # 0003: command tasks (JSON: executable, args, env, cwd)
    sa.Column("command", sa.Text, nullable=True),
    # 0006: the W3C trace context of the call that queued it, when traced
    sa.Column("trace_context", sa.String(255), nullable=True),
    # 0007: when it entered a terminal status (stamped by Tx.apply; purge by age reads it)
    sa.Column("finished_at", sa.DateTime, nullable=True),
)
#: A claim seeks a group's top priority, then reads that priority's due range in the
#: claim's order (next_run_time, id): no sort, and future-dated tasks are never read.
sa.Index("ix_scheduler_task_claim", task.c.status, task.c.group_name, task.c.priority.desc(),
         task.c.next_run_time, task.c.id)
#: Partial indexes: the few rows expiry, broadcast fan-out and broadcast children look for.
sa.Index("ix_scheduler_task_stop_time", task.c.status, task.c.stop_time,
         sqlite_where=task.c.stop_time.is_not(None),
         postgresql_where=task.c.stop_time.is_not(None))
sa.Index("ix_scheduler_task_broadcast", task.c.status, task.c.next_run_time,
         sqlite_where=task.c.broadcast, postgresql_where=task.c.broadcast)
sa.Index("ix_scheduler_task_finished", task.c.finished_at,
         sqlite_where=task.c.finished_at.is_not(None),
         postgresql_where=task.c.finished_at.is_not(None))
sa.Index("ix_scheduler_task_target", task.c.status, task.c.target_worker_name,
         sqlite_where=task.c.target_worker_name != "",
         postgresql_where=task.c.target_worker_name != "")

run = sa.Table(
    "scheduler_run",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("task_id", Id, sa.ForeignKey("scheduler_task.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempt", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=False),
    sa.Column("stop_time", sa.DateTime, nullable=True),
    sa.Column("run_output", sa.Text, nullable=False),
    sa.Column("run_result", sa.Text, nullable=True),
    sa.Column("traceback", sa.Text, nullable=False),
    sa.Column("worker_name", sa.String(255), nullable=False),
    sa.Index("ix_scheduler_run_task", "task_id", "attempt"),
)

output = sa.Table(
    "scheduler_output",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("run_id", Id, sa.ForeignKey("scheduler_run.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("clear", sa.Boolean, nullable=False),
    sa.UniqueConstraint("run_id", "seq", name="uq_scheduler_output_run_seq"),
)

#: Dependencies, web2py's names: task_parent waits until task_child is COMPLETED for good,
#: which sets can_visit.
deps = sa.Table(
    "scheduler_task_deps",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_name", sa.String(512), nullable=False),
    sa.Column("task_parent", Id, sa.ForeignKey("scheduler_task.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("task_child", Id, sa.ForeignKey("scheduler_task.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("can_visit", sa.Boolean, nullable=False),
    sa.Index("ix_scheduler_task_deps_parent", "task_parent", "can_visit"),
    sa.Index("ix_scheduler_task_deps_child", "task_child"),
    # 0008: a job's edges by its name (GetJob)
    sa.Index("ix_scheduler_task_deps_job", "job_name"),
)

worker = sa.Table(
    "scheduler_worker",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("worker_name", sa.String(255), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_heartbeat", sa.DateTime, nullable=False),
    sa.Column("last_heartbeat", sa.DateTime, nullable=False),
    sa.Column("group_names", sa.Text, nullable=False),
    sa.Column("functions", sa.Text, nullable=False),
    sa.Column("capabilities", sa.Text, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("language", sa.String(64), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False),
    sa.Column("alive", sa.Boolean, nullable=False),
    sa.Column("lost_at", sa.DateTime, nullable=True),
    sa.Column("rss_bytes", sa.BigInteger, nullable=False),
    # 0005: the coordinator holding the worker's session ("" before any)
    sa.Column("node_name", sa.String(255), nullable=False, server_default=""),
)

#: 0005: one row per coordinator (PostgreSQL), refreshed every node beat
node = sa.Table(
    "scheduler_node",
    metadata,
    sa.Column("node_name", sa.String(255), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("listen", sa.String(255), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
)

#: 0005: the one row naming the maintenance leader, its fencing epoch and its lease's end
leader = sa.Table(
    "scheduler_leader",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("node_name", sa.String(255), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)
