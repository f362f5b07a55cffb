"""What every group of store queries stands on: one transaction's connection and cursor.

`store.Tx` is assembled from query groups by table (tasks in store.py, runs
and output in runrows.py, workers and coordinators in workerrows.py); each
derives from `TxBase`, which holds the transaction's connection, its DB-API
cursor (hotsql.py's statements run on it), the dialect and the notes the
transaction sends to other coordinators. Rows come back as dicts with aware
UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from taskgrid.coordinator import hotsql
from taskgrid.coordinator.clock import from_db, to_db
from taskgrid.coordinator.notes import Notes

Row = dict[str, Any]

TASK_TIMES = ("start_time", "next_run_time", "stop_time", "last_run_time", "created_at",
              "finished_at")
RUN_TIMES = ("start_time", "stop_time")
WORKER_TIMES = ("first_heartbeat", "last_heartbeat", "lost_at")


def row_of(mapping: Mapping[Any, Any], times: Iterable[str]) -> Row:
    """A result row as a dict, its `times` columns as aware UTC datetimes."""
    row = dict(mapping)
    for key in times:
        if key in row:
            row[key] = from_db(row[key])
    return row


def db_values(values: Mapping[str, Any]) -> Row:
    """Column values as the database takes them (datetimes naive UTC)."""
    return {k: (to_db(v) if hasattr(v, "tzinfo") else v) for k, v in values.items()}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TxBase:
    """One transaction: its connection, cursor, dialect and outgoing notes."""

    def __init__(self, conn: sa.Connection, notes: Notes | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.conn = conn
        #: the coordinator's clock: stamps when a task ended (finished_at)
        self.clock = clock or _utcnow
        self.is_postgres = conn.dialect.name == "postgresql"
        self.d = hotsql.POSTGRES if self.is_postgres else hotsql.SQLITE
        self._cursor: Any = None
        #: what this transaction tells the other coordinators (None: nobody to tell)
        self.notes = notes

    @property
    def cur(self) -> Any:
        """A DB-API cursor on this transaction's connection (hotsql's statements run on it)."""
        if self._cursor is None:
            self._cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        return self._cursor

    def _insert_returning_ids(self, sql: str, params: Sequence[Sequence[Any]]) -> list[int]:
        """Run one INSERT per parameter row; the new ids in order.

        PostgreSQL: one pipelined executemany with RETURNING. SQLite cannot return
        rows from executemany, and a plain execute per row costs a few µs there.
        """
        cur = self.cur
        ids: list[int] = []
        if self.d.postgres:
            cur.executemany(sql, params, returning=True)
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
        else:
            for p in params:
                cur.execute(sql, p)
                ids.append(cur.lastrowid)
        return ids
