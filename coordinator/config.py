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

    def dead_after_s(self, heartbeat_s: float) -> float:
        """Silence after which a worker with this heartbeat is dead."""
        return self.dead_after_beats * heartbeat_s
