"""The hot path's SQL, run straight on the DB-API connection (part of the store layer).

Queue, claim, start and report run a handful of statements per batch. Run
through SQLAlchemy Core, each costs 100-250 µs of statement processing
(compiled-cache lookup, parameter processing, result processors) before the
database does anything; on the DB-API cursor it costs a few µs. So the
statements of the hot path are SQL text, written once per shape, bound with
the driver's own parameters, and read back as plain tuples turned into the
same rows (dicts with aware UTC datetimes) the rest of the store returns.
SQLAlchemy keeps the schema, the migrations and every cold path.

Only `store.Tx` calls this module; it runs on the transaction's connection,
so what it writes commits or rolls back with everything else in the Tx.

Datetimes: SQLite stores SQLAlchemy's text form, `YYYY-MM-DD HH:MM:SS.ffffff`
(naive UTC), which sorts as time; PostgreSQL gets and returns naive datetimes.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from taskgrid.coordinator import schema
from taskgrid.coordinator.clock import from_db, to_db

Row = dict[str, Any]

TASK_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.task.columns)
RUN_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.run.columns)
_TASK_TIMES = tuple(c.name for c in schema.task.columns if isinstance(c.type, sa.DateTime))
_TASK_BOOLS = tuple(c.name for c in schema.task.columns if isinstance(c.type, sa.Boolean))
_TASK_SELECT = ", ".join(TASK_COLUMNS)
#: ids per statement when a list is expanded into placeholders (SQLite)
ID_CHUNK = 500


class Dialect:
    """SQL text and value conversions for one database kind."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    # -- values ----------------------------------------------------------------

    def time_in(self, value: dt.datetime | None) -> Any:
        """An aware (or naive UTC) datetime as the database stores it."""
        naive = to_db(value)
        if naive is None or self.postgres:
            return naive
        return naive.isoformat(" ", "microseconds")

    def time_out(self, value: Any) -> dt.datetime | None:
        """A stored datetime as an aware UTC datetime."""
        return from_db(dt.datetime.fromisoformat(value) if isinstance(value, str) else value)

    def value_in(self, value: Any) -> Any:
        """Any column value as the driver binds it (enums as their values)."""
        if isinstance(value, dt.datetime):
            return self.time_in(value)
        if isinstance(value, enum.Enum):
            return value.value
        return value

    def task_row(self, values: Sequence[Any]) -> Row:
        """A `SELECT <TASK_COLUMNS>` tuple as a task row."""
        row = dict(zip(TASK_COLUMNS, values, strict=True))
        time_out = self.time_out
        for key in _TASK_TIMES:
            if row[key] is not None:
                row[key] = time_out(row[key])
        if not self.postgres:
            for key in _TASK_BOOLS:
                row[key] = bool(row[key])
        return row

    # -- text ------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """SQL written with `?` placeholders, in this driver's paramstyle."""
        return _to_format(text) if self.postgres else text

    def in_ids(self, column: str, count: int) -> str:
        """`column IN (...)` for `count` values (PostgreSQL: one array parameter)."""
        if self.postgres:
            return f"{column} = ANY(?)"
        return f"{column} IN ({','.join('?' * count)})"

    def id_params(self, ids: Sequence[Any]) -> list[Any]:
        """The parameters `in_ids` expects for these values."""
        return [list(ids)] if self.postgres else list(ids)

    def lock(self) -> str:
        """The row-lock suffix of a claim (PostgreSQL: skip rows another claim holds)."""
        return " FOR UPDATE SKIP LOCKED" if self.postgres else ""


SQLITE = Dialect(postgres=False)
POSTGRES = Dialect(postgres=True)


@functools.cache
def _to_format(text: str) -> str:
    return text.replace("%", "%%").replace("?", "%s")


def chunks(items: Sequence[Any], size: int = ID_CHUNK) -> Iterable[Sequence[Any]]:
    """`items` in slices of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- tasks ---------------------------------------------------------------------

@functools.cache
def insert_task_sql(d: Dialect, keys: tuple[str, ...]) -> str:
    """INSERT of one task row with these columns (the rest take their defaults)."""
    return d.sql(f"INSERT INTO scheduler_task ({', '.join(keys)}) "
                 f"VALUES ({', '.join('?' * len(keys))})"
                 + (" RETURNING id" if d.postgres else ""))


def tasks_by_ids_sql(d: Dialect, count: int, lock: bool) -> str:
    """SELECT whole task rows by id."""
    suffix = " FOR UPDATE" if lock and d.postgres else ""
    return d.sql(f"SELECT {_TASK_SELECT} FROM scheduler_task "
                 f"WHERE {d.in_ids('id', count)}{suffix}")


#: What a worker may claim besides status, group, priority and time: enabled, its
#: functions, not a broadcast parent, not a child meant for another worker.
def _claimable(d: Dialect, functions: int, deps: bool) -> str:
    where = (f"enabled = {_true(d)} AND {d.in_ids('function_name', functions)} "
             f"AND broadcast = {_false(d)} AND target_worker_name IN ('', ?)")
    if deps:
        where += (" AND NOT EXISTS (SELECT 1 FROM scheduler_task_deps d WHERE "
                  f"d.task_parent = scheduler_task.id AND d.can_visit = {_false(d)})")
    return where


def _true(d: Dialect) -> str:
    return "true" if d.postgres else "1"


def _false(d: Dialect) -> str:
    return "false" if d.postgres else "0"


@functools.cache
def top_priority_sql(d: Dialect, below: bool) -> str:
    """The highest priority among a group's queued tasks (below a bound): one index seek.

    The claim index is (status, group_name, priority DESC, next_run_time, id), so
    the claim walks a group's priorities from the top, and within each reads
    exactly its due range: future-dated tasks cost nothing, however many.
    """
    bound = " AND priority < ?" if below else ""
    return d.sql("SELECT MAX(priority) FROM scheduler_task "
                 f"WHERE status = ? AND group_name = ?{bound}")


@functools.cache
def due_in_priority_sql(d: Dialect, functions: int, deps: bool) -> str:
    """Due, claimable tasks of one group at one priority, oldest due first."""
    return d.sql(f"SELECT {_TASK_SELECT} FROM scheduler_task "
                 "WHERE status = ? AND group_name = ? AND priority = ? AND next_run_time <= ? "
                 f"AND {_claimable(d, functions, deps)} "
                 f"ORDER BY next_run_time, id LIMIT ?{d.lock()}")


@functools.cache
def first_in_priority_sql(d: Dialect, functions: int, deps: bool) -> str:
    """The earliest next_run_time of a group's claimable tasks at one priority."""
    return d.sql("SELECT next_run_time FROM scheduler_task "
                 "WHERE status = ? AND group_name = ? AND priority = ? "
                 f"AND {_claimable(d, functions, deps)} ORDER BY next_run_time LIMIT 1")


@functools.cache
def cas_sql(d: Dialect, keys: tuple[str, ...], fenced: bool) -> str:
    """UPDATE task SET keys WHERE id AND status [AND attempt]: the lifecycle's write."""
    sets = ", ".join(f"{k} = ?" for k in keys)
    fence = " AND attempt = ?" if fenced else ""
    return d.sql(f"UPDATE scheduler_task SET {sets} WHERE id = ? AND status = ?{fence}")


# -- runs ----------------------------------------------------------------------

_INSERT_RUN_COLUMNS = tuple(c for c in RUN_COLUMNS if c != "id")


@functools.cache
def insert_run_sql(d: Dialect) -> str:
    """INSERT of one run row."""
    return d.sql(f"INSERT INTO scheduler_run ({', '.join(_INSERT_RUN_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_INSERT_RUN_COLUMNS))})"
                 + (" RETURNING id" if d.postgres else ""))


def run_params(d: Dialect, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parameters of `insert_run_sql` for one run row."""
    return tuple(d.value_in(row.get(k)) for k in _INSERT_RUN_COLUMNS)


def runs_of_tasks_sql(d: Dialect, count: int) -> str:
    """(run id, task id, attempt, has live chunks) of these tasks' runs."""
    return d.sql("SELECT r.id, r.task_id, r.attempt, EXISTS (SELECT 1 FROM scheduler_output o "
                 "WHERE o.run_id = r.id) FROM scheduler_run r "
                 f"WHERE {d.in_ids('r.task_id', count)}")


@functools.cache
def run_update_sql(d: Dialect, keys: tuple[str, ...]) -> str:
    """UPDATE run SET keys WHERE id."""
    sets = ", ".join(f"{k} = ?" for k in keys)
    return d.sql(f"UPDATE scheduler_run SET {sets} WHERE id = ?")


def delete_runs_sql(d: Dialect, count: int) -> tuple[str, str]:
    """DELETEs of these runs' live chunks, then of the runs."""
    return (d.sql(f"DELETE FROM scheduler_output WHERE {d.in_ids('run_id', count)}"),
            d.sql(f"DELETE FROM scheduler_run WHERE {d.in_ids('id', count)}"))


@functools.cache
def touch_worker_sql(d: Dialect) -> str:
    """A live worker's heartbeat time and memory.

    The time never moves back: a coordinator that heard the worker before another
    did may write after it.
    """
    return d.sql("UPDATE scheduler_worker SET last_heartbeat = ?, rss_bytes = ? WHERE id = ? "
                 "AND last_heartbeat < ?")
