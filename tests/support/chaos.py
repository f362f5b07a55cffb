"""Fault injection helpers: crash a coordinator and restart it, restart PostgreSQL, read rows.

Generic pieces the chaos suite (tests/chaos) builds on; they use only the public attributes of
tests/support/processes.py and tests/support/postgres.py.

- `crash_coordinator`: SIGKILL a coordinator's whole session (no shutdown code runs, as when
  the machine loses power) and start it again on the same port and database.
- `restart_postgres`: `pg_ctl restart -m fast` of a test cluster, as the cluster's OS user.
- `read_rows`: run one SELECT straight on a test database (SQLite file or PostgreSQL URL),
  on a fresh connection each time, so a server restart never leaves a stale pooled one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tests.support.postgres import PostgresCluster
from tests.support.processes import CoordinatorProcess

#: Starts after a crash retry this often: the old listener's port may be busy for a moment.
CRASH_RESTART_ATTEMPTS = 5
PG_RESTART_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Crash:
    """One coordinator crash: monotonic times of the SIGKILL, its death and the new start."""

    killed_at: float
    dead_at: float
    serving_at: float
    old_pid: int
    new_pid: int

    @property
    def downtime_s(self) -> float:
        return self.serving_at - self.killed_at


def crash_coordinator(coordinator: CoordinatorProcess, reap_timeout_s: float = 10.0) -> Crash:
    """SIGKILL the coordinator's session, then start it again on the same address and database.

    Returns once the new process has printed its address and answers ListWorkers.
    """
    assert coordinator.address, "the coordinator never served"
    old_pid = coordinator.pid
    killed_at = time.monotonic()
    coordinator.signal_session(signal.SIGKILL)
    coordinator.wait(reap_timeout_s)
    dead_at = time.monotonic()
    coordinator.listen = coordinator.address
    for attempt in range(1, CRASH_RESTART_ATTEMPTS + 1):
        try:
            coordinator.start()
            break
        except AssertionError:
            # a start that exited at once (port still held by the dying listener) is retried
            if attempt == CRASH_RESTART_ATTEMPTS or coordinator.is_alive():
                raise
    return Crash(killed_at, dead_at, time.monotonic(), old_pid, coordinator.pid)


def _server_env(home: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PG", "LC_")) and key not in {"HOME", "LANG", "LANGUAGE"}}
    env.update(HOME=home, LC_ALL="C", LANG="C")
    return env


def restart_postgres(cluster: PostgresCluster, mode: str = "fast",
                     timeout_s: int = PG_RESTART_TIMEOUT_S) -> float:
    """`pg_ctl restart -m MODE -w` the cluster (as its OS user); returns the seconds it took.

    `fast` rolls back open transactions and closes every session, so each client must
    reconnect by itself. The cluster's own admin connection is one of them: it is poked once
    afterwards (a harmless DROP DATABASE IF EXISTS that fails on the dead session), so that
    the fixtures' next create/drop_database reconnects instead of failing.
    """
    assert cluster.dir is not None, "cluster not started"
    drop: dict[str, Any] = {}
    if os.geteuid() == 0:
        entry = pwd.getpwnam(cluster.os_user)
        drop = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    argv = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-l",
            str(cluster.log_path), "-m", mode, "-w", "-t", str(timeout_s), "restart"]
    started = time.monotonic()
    out = subprocess.run(argv, cwd=cluster.dir, env=_server_env(str(cluster.dir)),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout_s + 30, check=False, **drop)
    took = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"pg_ctl restart exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    with contextlib.suppress(Exception):
        cluster.drop_database("taskgrid_chaos_no_such_database")
    return took


def read_rows(db_url: str, sql: str, params: Mapping[str, Any] | None = None
              ) -> list[dict[str, Any]]:
    """Rows of one SELECT on the database at `db_url`, as dicts (a fresh connection)."""
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(sql), dict(params or {}))]
    finally:
        engine.dispose()
