"""Coordinator settings: one dataclass, every default a named constant."""

from __future__ import annotations

import dataclasses

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB_URL = "sqlite:///taskgrid.sqlite"
DEFAULT_HEARTBEAT_S = 3.0
#: a worker silent for this many heartbeat intervals is declared dead
DEFAULT_DEAD_AFTER_BEATS = 3.0
DEFAULT_MAX_LOST_REQUEUES = 3
#: the longest a Lease call may wait for work
DEFAULT_MAX_LEASE_WAIT_S = 30.0
#: leases per Lease call at most
MAX_LEASE_BATCH = 1000
#: a RUNNING task with no report this long past its timeout is closed TIMEOUT by the coordinator
DEFAULT_TIMEOUT_GRACE_S = 15.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: args plus vars of one task (JSON text)
DEFAULT_MAX_ARGS_BYTES = 1024 * 1024
#: the JSON result of one run
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024
#: captured output kept per run; the rest is cut with a visible marker
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
#: rows of workers dead for longer than this are removed
DEFAULT_WORKER_RETENTION_S = 24 * 3600.0
#: finished tasks (with their runs and output) are purged this long after they ended; 0 = never
DEFAULT_TASK_RETENTION_S = 30 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class CoordinatorConfig:
    """Everything `create_server` needs besides the clock."""

    db_url: str = DEFAULT_DB_URL
    listen: str = DEFAULT_LISTEN
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    dead_after_beats: float = DEFAULT_DEAD_AFTER_BEATS
    max_lost_requeues: int = DEFAULT_MAX_LOST_REQUEUES
    max_lease_wait_s: float = DEFAULT_MAX_LEASE_WAIT_S
    timeout_grace_s: float = DEFAULT_TIMEOUT_GRACE_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    worker_retention_s: float = DEFAULT_WORKER_RETENTION_S
    task_retention_s: float = DEFAULT_TASK_RETENTION_S
    #: SQLite: fsync every commit (survives a power loss), at a cost per transaction
    durable: bool = False
    tokens_file: str | None = None
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    #: HOST:PORT of the Prometheus /metrics endpoint (None: no metrics)
    metrics_listen: str | None = None
    #: OpenTelemetry spans for queueing, leasing and reporting (the `tracing` extra)
    tracing: bool = False

    def dead_after_s(self, heartbeat_s: float) -> float:
        """Silence after which a worker with this heartbeat is dead."""
        return self.dead_after_beats * heartbeat_s
