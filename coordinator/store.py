"""The only module that runs SQL: engine, migrations, transactions and queries.

Operations (tasks.py, leasing.py, workers.py, reaper.py) decide with
lifecycle.py and persist through a `Tx`, the set of queries available inside
one transaction. `Store.run(fn)` runs `fn(tx)` in one transaction on the
store's executor (groupcommit.py); bodies queued together share one commit.
SQLite (one writer anyway) keeps its one connection open and runs the bodies on
the event loop, or on one store thread with `durable` (an fsync per commit);
PostgreSQL runs them on a small pool of threads, so the loop never waits on a
network round trip. The hot path's statements are SQL text run on the DB-API
cursor (hotsql.py).

Status writes are compare-and-set (`WHERE id = :id AND status = :expected`
and, for worker writes, `AND attempt = :attempt`); zero rows matched raises
TransitionConflictError and the whole transaction rolls back.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime as dt
import fcntl
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from importlib import resources
from types import ModuleType
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from taskgrid.coordinator import hotsql, schema
from taskgrid.coordinator.clock import from_db, to_db
from taskgrid.coordinator.errors import (
    DuplicateUuidError,
    StoreUnavailableError,
    TransitionConflictError,
    WriterLockError,
)
from taskgrid.coordinator.groupcommit import GroupCommit
from taskgrid.coordinator.lifecycle import (
    LEASED_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    TaskStatus,
    Transition,
)
from taskgrid.coordinator.notes import CHANNEL, Notes
from taskgrid.coordinator.runrows import RunRows
from taskgrid.coordinator.txbase import TASK_TIMES, Row, row_of
from taskgrid.coordinator.workerrows import WorkerRows

__all__ = ["FENCE", "Row", "Store", "Tx", "redact_url"]

logger = logging.getLogger(__name__)


@functools.cache
def _pg() -> ModuleType:
    """psycopg, imported on first use.

    A coordinator on SQLite never needs it, and importing it costs every start 0.1 s.
    """
    import psycopg

    return psycopg

T = TypeVar("T")

DEFAULT_PG_POOL_SIZE = 8
#: PostgreSQL: a transaction left idle this long (its coordinator hung or cut off) is ended by
#: the server, so its row locks never keep another coordinator waiting for longer
IDLE_IN_TRANSACTION_MS = 5000
#: (node, epoch) while the maintenance leader runs a pass: every body the pass submits first
#: checks, under a row lock, that this node still holds that epoch (cluster.py)
FENCE: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "taskgrid_fence", default=None)
#: the advisory lock coordinators take in turn to migrate a PostgreSQL database ("tgrm")
MIGRATION_LOCK_KEY = 0x7467726D


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Tx(RunRows, WorkerRows):
    """Queries inside one transaction: tasks here, runs and workers from their modules.

    Rows are dicts with aware UTC datetimes.
    """

    # -- tasks ---------------------------------------------------------------

    def insert_tasks(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert task rows; returns their ids in order.

        Raises:
            DuplicateUuidError: a uuid is taken (a concurrent insert won the race);
                the transaction must end.
        """
        d = self.d
        ids: list[int] = []
        try:
            for keys, params in _shapes(d, rows):
                ids += self._insert_returning_ids(hotsql.insert_task_sql(d, keys), params)
        except (sqlite3.IntegrityError, _pg().IntegrityError) as exc:
            text = str(exc).lower()
            if "unique" not in text or "uuid" not in text:  # NOT NULL...: a bug, not a race
                raise
            raise DuplicateUuidError("a uuid of this request is already in use") from exc
        if self.notes is not None:
            kinds = collections.Counter((r["group_name"], r["function_name"],
                                         r.get("target_worker_name") or "") for r in rows)
            self.notes.queued(kinds.items(),
                              any(r.get("stop_time") or r.get("broadcast") for r in rows))
        return ids

    def existing_uuids(self, uuids: Iterable[str]) -> set[str]:
        """Which of these uuids are taken already."""
        found: set[str] = set()
        for part in hotsql.chunks(list(set(uuids))):
            stmt = sa.select(schema.task.c.uuid).where(schema.task.c.uuid.in_(part))
            found.update(self.conn.execute(stmt).scalars())
        return found

    def due_tasks(
        self, groups: Sequence[str], functions: Sequence[str], now: Any, limit: int,
        worker_name: str = "", deps: bool = True,
    ) -> list[Row]:
        """Due tasks this worker may run, best first, locked for this transaction.

        `deps=False` skips the unmet-prerequisite check: only for a database known to
        hold no unmet dependency edge (it costs a subquery per candidate row).
        """
        d, cur = self.d, self.cur
        fns = sorted(set(functions))
        if not fns or limit <= 0:
            return []
        due_sql = hotsql.due_in_priority_sql(d, len(fns), deps)
        fn_params = d.id_params(fns)
        when = d.time_in(now)
        found: list[Any] = []
        for group in sorted(set(groups)):
            taken = 0
            for priority in self._priorities(group):
                got = cur.execute(due_sql, (QUEUED, group, priority, when, *fn_params,
                                            worker_name, limit - taken)).fetchall()
                found.extend(got)
                taken += len(got)
                if taken >= limit:
                    break
        rows = [d.task_row(r) for r in found]
        if len(groups) > 1:
            rows.sort(key=lambda r: (-r["priority"], r["next_run_time"], r["id"]))
        return rows[:limit]

    def _priorities(self, group: str) -> Any:
        """The group's queued priorities, highest first: one index seek each, lazily."""
        cur, d = self.cur, self.d
        priority = cur.execute(hotsql.top_priority_sql(d, False), (QUEUED, group)).fetchone()[0]
        while priority is not None:
            yield priority
            priority = cur.execute(hotsql.top_priority_sql(d, True),
                                   (QUEUED, group, priority)).fetchone()[0]

    def next_due_time(self, groups: Sequence[str], functions: Sequence[str],
                      worker_name: str = "", deps: bool = True) -> Any:
        """The earliest next_run_time among queued tasks this worker may run, or None."""
        d, cur = self.d, self.cur
        fns = sorted(set(functions))
        if not fns:
            return None
        sql = hotsql.first_in_priority_sql(d, len(fns), deps)
        fn_params = d.id_params(fns)
        best: Any = None
        for group in sorted(set(groups)):
            for priority in self._priorities(group):
                got = cur.execute(sql, (QUEUED, group, priority, *fn_params,
                                        worker_name)).fetchone()
                if got is not None:
                    when = d.time_out(got[0])
                    best = when if best is None or when < best else best
        return best

    def active_counts(self) -> dict[tuple[str, str], int]:
        """(group, status) -> tasks QUEUED, ASSIGNED or RUNNING (an index range each)."""
        t = schema.task.c
        stmt = sa.select(t.group_name, t.status, sa.func.count()).where(
            t.status.in_([QUEUED, *_LEASED_STATUSES])).group_by(t.group_name, t.status)
        return {(g, s): int(n) for g, s, n in self.conn.execute(stmt)}

    def oldest_due(self, now: Any) -> dict[str, Any]:
        """Group -> the earliest next_run_time of its enabled queued tasks due by `now`."""
        t = schema.task.c
        stmt = sa.select(t.group_name, sa.func.min(t.next_run_time)).where(
            t.status == QUEUED, t.enabled.is_(True), t.next_run_time <= to_db(now)
        ).group_by(t.group_name)
        return {g: from_db(when) for g, when in self.conn.execute(stmt)}

    def has_unmet_deps(self) -> bool:
        """True when some dependency edge still waits (so claims must check prerequisites)."""
        stmt = sa.select(schema.deps.c.id).where(schema.deps.c.can_visit.is_(False)).limit(1)
        return self.conn.execute(stmt).first() is not None

    # -- dependencies, expiry, broadcast ---------------------------------------

    def insert_deps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert dependency edges (task_parent waits for task_child)."""
        if rows:
            self.conn.execute(sa.insert(schema.deps), list(rows))

    def unmet_prerequisites(self, task_id: int) -> list[int]:
        """Ids of the tasks this one still waits for."""
        d = schema.deps.c
        stmt = sa.select(d.task_child).where(d.task_parent == task_id,
                                             d.can_visit.is_(False)).order_by(d.task_child)
        return list(self.conn.execute(stmt).scalars())

    def job_of(self, task_id: int) -> str | None:
        """The name of a job this task is an edge of, or None."""
        d = schema.deps.c
        stmt = sa.select(d.job_name).where(
            sa.or_(d.task_parent == task_id, d.task_child == task_id)).limit(1)
        return self.conn.execute(stmt).scalar()

    def job_edges(self, job_name: str, limit: int) -> list[Row]:
        """A job's edges (task_parent waits for task_child; can_visit once met), by id."""
        d = schema.deps.c
        stmt = (sa.select(d.task_parent, d.task_child, d.can_visit)
                .where(d.job_name == job_name).order_by(d.id).limit(limit))
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def release_dependents(self, task_ids: Sequence[int]) -> int:
        """Mark edges waiting on these (now COMPLETED for good) tasks as met."""
        if not task_ids:
            return 0
        result = self.conn.execute(_RELEASE_DEPS, {"ids": list(task_ids)})
        return int(result.rowcount)

    def overdue_for_expiry(self, now: Any, limit: int = 1000) -> list[Row]:
        """QUEUED or ASSIGNED tasks whose stop_time has passed, locked."""
        t = schema.task.c
        stmt = sa.select(schema.task).where(
            t.status.in_([TaskStatus.QUEUED.value, TaskStatus.ASSIGNED.value]),
            t.stop_time.is_not(None), t.stop_time < to_db(now)).limit(limit)
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def earliest_stop_time(self) -> Any:
        """The earliest stop_time among QUEUED or ASSIGNED tasks, or None."""
        t = schema.task.c
        stmt = sa.select(sa.func.min(t.stop_time)).where(
            t.status.in_([TaskStatus.QUEUED.value, TaskStatus.ASSIGNED.value]),
            t.stop_time.is_not(None))
        return from_db(self.conn.execute(stmt).scalar())

    def due_broadcasts(self, now: Any) -> list[Row]:
        """Broadcast parents that are due, locked."""
        t = schema.task.c
        stmt = sa.select(schema.task).where(
            t.status == TaskStatus.QUEUED.value, t.enabled.is_(True), t.broadcast.is_(True),
            t.next_run_time <= to_db(now)).order_by(t.next_run_time)
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def earliest_broadcast(self) -> Any:
        """The earliest next_run_time among queued broadcast parents, or None."""
        t = schema.task.c
        stmt = sa.select(sa.func.min(t.next_run_time)).where(
            t.status == TaskStatus.QUEUED.value, t.enabled.is_(True), t.broadcast.is_(True))
        return from_db(self.conn.execute(stmt).scalar())

    def tasks_by_ids(self, ids: Iterable[int], lock: bool = False) -> dict[int, Row]:
        """Task rows by id (locked FOR UPDATE on PostgreSQL when `lock`)."""
        wanted = sorted(set(ids))
        d, cur = self.d, self.cur
        out: dict[int, Row] = {}
        for part in hotsql.chunks(wanted):
            sql = hotsql.tasks_by_ids_sql(d, len(part), lock)
            for values in cur.execute(sql, d.id_params(part)).fetchall():
                row = d.task_row(values)
                out[row["id"]] = row
        return out

    def task_by_ref(self, task_id: int | None, uuid: str | None, lock: bool = False) -> Row | None:
        """One task by id or uuid."""
        t = schema.task
        stmt = sa.select(t).where(t.c.id == task_id if task_id is not None else t.c.uuid == uuid)
        if lock and self.is_postgres:
            stmt = stmt.with_for_update()
        r = self.conn.execute(stmt).mappings().first()
        return row_of(r, TASK_TIMES) if r else None

    def leased_tasks(self) -> list[Row]:
        """The lease columns of every ASSIGNED or RUNNING task (the reconcile pass reads these).

        Rows have id, attempt, assigned_worker_name, status, stop_requested,
        last_run_time, timeout and `started` (RUNNING).
        """
        rows = []
        for r in self.conn.execute(_LEASED).mappings():
            row = row_of(r, ("last_run_time",))
            row["started"] = row["status"] == TaskStatus.RUNNING
            rows.append(row)
        return rows

    def leased_by(self, worker_name: str) -> list[Row]:
        """Whole rows of the tasks leased to this worker name, locked."""
        stmt = _LEASED_BY_LOCKED if self.is_postgres else _LEASED_BY
        params = {"worker_name": worker_name}
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt, params).mappings()]

    def queued_children_of(self, worker_name: str) -> list[Row]:
        """QUEUED broadcast children meant for this worker, locked."""
        t = schema.task.c
        stmt = sa.select(schema.task).where(t.status == TaskStatus.QUEUED.value,
                                            t.target_worker_name != "",
                                            t.target_worker_name == worker_name)
        if self.is_postgres:
            stmt = stmt.with_for_update()
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def orphaned_children(self, live_names: Sequence[str]) -> list[Row]:
        """QUEUED broadcast children whose target is not among the live workers, locked."""
        t = schema.task.c
        conds = [t.status == TaskStatus.QUEUED.value, t.target_worker_name != ""]
        if live_names:
            conds.append(t.target_worker_name.not_in(list(live_names)))
        stmt = sa.select(schema.task).where(*conds).limit(1000)
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def list_tasks(
        self, statuses: Sequence[str], filters: Mapping[str, str], before_id: int | None,
        limit: int, created: tuple[Any, Any] = (None, None), oldest_first: bool = False,
    ) -> list[Row]:
        """Tasks matching the filters, newest (or oldest) first, keyset-paged by id.

        `before_id` is the page token: ids below it (above it when `oldest_first`).
        `created` is a [from, to) range of created_at, either end open when None.
        """
        t = schema.task.c
        conds: list[Any] = [getattr(t, k) == v for k, v in filters.items() if v]
        if statuses:
            conds.append(t.status.in_(statuses))
        if before_id is not None:
            conds.append(t.id > before_id if oldest_first else t.id < before_id)
        if created[0] is not None:
            conds.append(t.created_at >= to_db(created[0]))
        if created[1] is not None:
            conds.append(t.created_at < to_db(created[1]))
        order = t.id.asc() if oldest_first else t.id.desc()
        stmt = sa.select(schema.task).where(*conds).order_by(order).limit(limit)
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def count_by_status_and_group(self) -> list[tuple[str, str, int]]:
        """(status, group_name, count) of every status and group that has tasks."""
        t = schema.task.c
        stmt = sa.select(t.status, t.group_name, sa.func.count()).group_by(
            t.status, t.group_name)
        return [(str(a), str(b), int(c)) for a, b, c in self.conn.execute(stmt)]

    def ended_per_minute(self, since: Any) -> list[tuple[str, str, int]]:
        """("YYYY-MM-DD HH:MM" in UTC, status, count) of tasks ended at or after `since`.

        Counted in the database (one row per minute and status), on the finished_at index.
        """
        t = schema.task.c
        if self.is_postgres:
            minute: Any = sa.func.to_char(t.finished_at, "YYYY-MM-DD HH24:MI")
        else:  # SQLite stores naive UTC datetimes as ISO text
            minute = sa.func.substr(t.finished_at, 1, 16)
        stmt = (sa.select(minute, t.status, sa.func.count())
                .where(t.finished_at >= to_db(since)).group_by(minute, t.status))
        return [(str(m), str(st), int(n)) for m, st, n in self.conn.execute(stmt)]

    def oldest_due_task(self, now: Any) -> Row | None:
        """The enabled QUEUED task due longest ago, or None."""
        t = schema.task.c
        stmt = (sa.select(schema.task).where(
            t.status == TaskStatus.QUEUED.value, t.enabled.is_(True),
            t.next_run_time <= to_db(now)).order_by(t.next_run_time, t.id).limit(1))
        r = self.conn.execute(stmt).mappings().first()
        return row_of(r, TASK_TIMES) if r else None

    def select_tasks(self, refs: Sequence[int | str], statuses: Sequence[str],
                     filters: Mapping[str, str], finished_before: Any, limit: int,
                     after_id: int = 0) -> list[Row]:
        """Tasks for a housekeeping call, by id order from `after_id`, at most `limit`.

        `refs` (ids or uuids) select those tasks whatever their status; otherwise the
        filters do, among `statuses`. Locked FOR UPDATE on PostgreSQL, so a concurrent
        claim or report waits or loses its compare-and-set.
        """
        t = schema.task.c
        conds: list[Any] = []
        if refs:
            ids = [r for r in refs if isinstance(r, int)]
            uuids = [r for r in refs if isinstance(r, str)]
            conds.append(sa.or_(t.id.in_(ids), t.uuid.in_(uuids)))
        else:
            conds.append(t.status.in_(statuses))
            conds += [getattr(t, k) == v for k, v in filters.items() if v]
            if finished_before is not None:
                conds.append(t.finished_at < to_db(finished_before))
        stmt = (sa.select(schema.task).where(t.id > after_id, *conds).order_by(t.id)
                .limit(limit))
        if self.is_postgres:
            stmt = stmt.with_for_update()
        return [row_of(r, TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def delete_tasks(self, ids: Sequence[int]) -> int:
        """Delete tasks with their runs, output and dependency edges; how many went."""
        if not ids:
            return 0
        t, r, o, dp = schema.task.c, schema.run.c, schema.output.c, schema.deps.c
        gone = 0
        for part in hotsql.chunks(sorted(ids)):
            runs = sa.select(r.id).where(r.task_id.in_(part)).scalar_subquery()
            self.conn.execute(sa.delete(schema.output).where(o.run_id.in_(runs)))
            self.conn.execute(sa.delete(schema.run).where(r.task_id.in_(part)))
            self.conn.execute(sa.delete(schema.deps).where(
                sa.or_(dp.task_parent.in_(part), dp.task_child.in_(part))))
            gone += self.conn.execute(sa.delete(schema.task).where(t.id.in_(part))).rowcount
        return gone

    def task_statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """The statuses of these tasks (absent ones left out)."""
        t = schema.task.c
        out: dict[int, str] = {}
        for part in hotsql.chunks(sorted(set(ids))):
            for task_id, status in self.conn.execute(
                    sa.select(t.id, t.status).where(t.id.in_(part))):
                out[task_id] = status
        return out

    def finished_before(self, cutoff: Any, limit: int) -> list[int]:
        """Ids of tasks that ended before `cutoff`, oldest first (the purge's batch)."""
        t = schema.task.c
        stmt = (sa.select(t.id).where(t.finished_at < to_db(cutoff))
                .order_by(t.finished_at).limit(limit))
        return list(self.conn.execute(stmt).scalars())

    def earliest_finished(self) -> Any:
        """When the longest-finished task ended, or None."""
        t = schema.task.c
        stmt = sa.select(sa.func.min(t.finished_at)).where(t.finished_at.is_not(None))
        return from_db(self.conn.execute(stmt).scalar())

    def apply(self, transitions: Sequence[Transition]) -> None:
        """Apply transitions as compare-and-set updates; any miss rolls everything back.

        Transitions of the same shape go out as one executemany; the matched-row
        count must equal the number of transitions, else nothing is applied.
        """
        d, cur = self.d, self.cur
        value_in = d.value_in
        groups: dict[tuple[tuple[str, ...], bool], list[tuple[Any, ...]]] = {}
        ended_at = None
        for tr in transitions:
            values = {**tr.values, "status": tr.target.value}
            if tr.target in TERMINAL_TASK_STATUSES and "finished_at" not in values:
                ended_at = ended_at or self.clock()  # when it ended: purge by age reads it
                values["finished_at"] = ended_at
            keys = tuple(sorted(values))
            fenced = tr.attempt is not None
            params = [value_in(values[k]) for k in keys]
            params += [tr.task_id, tr.source.value] + ([tr.attempt] if fenced else [])
            groups.setdefault((keys, fenced), []).append(tuple(params))
        for (keys, fenced), rows in groups.items():
            cur.executemany(hotsql.cas_sql(d, keys, fenced), rows)
            if cur.rowcount != len(rows):
                id_at = len(keys)
                ids = ", ".join(str(r[id_at]) for r in rows)
                raise TransitionConflictError(
                    f"tasks {ids}: {len(rows) - cur.rowcount} no longer in the expected "
                    "status or attempt; nothing applied")
        if self.notes is not None and transitions:
            self.notes.changed(tr.task_id for tr in transitions)
            if any(tr.target is TaskStatus.QUEUED for tr in transitions):
                self.notes.requeued()

    def set_stop_requested(self, task_id: int, attempt: int) -> bool:
        """Flag a RUNNING task so its worker is told to stop it."""
        t = schema.task.c
        result = self.conn.execute(
            sa.update(schema.task)
            .where(t.id == task_id, t.attempt == attempt, t.status == TaskStatus.RUNNING.value)
            .values(stop_requested=True))
        if self.notes is not None and result.rowcount == 1:
            self.notes.stops.add((task_id, attempt))
        return bool(result.rowcount == 1)

    def note_changed(self, task_ids: Iterable[int]) -> None:
        """These tasks changed in a way rows of their own do not show (new output)."""
        if self.notes is not None:
            self.notes.changed(task_ids)


_RELEASE_DEPS = sa.update(schema.deps).where(
    schema.deps.c.task_child.in_(sa.bindparam("ids", expanding=True)),
    schema.deps.c.can_visit.is_(False)).values(can_visit=True)
_LEASED_STATUSES = sorted(s.value for s in LEASED_TASK_STATUSES)
_LEASED = sa.select(
    schema.task.c.id, schema.task.c.attempt, schema.task.c.assigned_worker_name,
    schema.task.c.status, schema.task.c.stop_requested, schema.task.c.last_run_time,
    schema.task.c.timeout,
).where(schema.task.c.status.in_(_LEASED_STATUSES))
_LEASED_BY = sa.select(schema.task).where(
    schema.task.c.status.in_(_LEASED_STATUSES),
    schema.task.c.assigned_worker_name == sa.bindparam("worker_name"))
_LEASED_BY_LOCKED = _LEASED_BY.with_for_update()


class Store:
    """The database: engine, migrations and the executor transactions run on."""

    def __init__(self, url: str, durable: bool = False, node: str = "") -> None:
        """Open (not yet migrate) the database at `url`.

        `durable` makes SQLite fsync every commit (synchronous=FULL): safe against a
        power loss, not only a process crash (the default, synchronous=NORMAL in WAL
        mode). PostgreSQL follows its own synchronous_commit setting.
        """
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = sa.create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30},
                poolclass=sa.pool.StaticPool)
            sync = "FULL" if durable else "NORMAL"
            sa.event.listen(self.engine, "connect",
                            lambda conn, record: _sqlite_pragmas(conn, sync))
            # Commits with no fsync run on the event loop (groupcommit.py says why).
            threads = 1 if durable else 0
        else:
            self.engine = sa.create_engine(
                url, pool_size=DEFAULT_PG_POOL_SIZE, max_overflow=4, pool_pre_ping=True,
                connect_args={"options": "-c idle_in_transaction_session_timeout="
                                         f"{IDLE_IN_TRANSACTION_MS}"})
            threads = DEFAULT_PG_POOL_SIZE
        #: transactions run so far (logged at shutdown; read by bench/)
        self.transactions = 0
        #: this coordinator's node name, signed on the notes its transactions send
        self.node = node
        #: other live coordinators on this database (cluster.py): while 0, nothing is noted
        self.peers = 0
        #: this coordinator's parked free slots by (group, function) (events.WorkSignal.spare)
        self.spare: dict[tuple[str, str], int] = {}
        #: False since a transaction failed for want of the database, until one succeeds
        self.healthy = True
        #: the coordinator's clock (app.py sets it): Tx stamps finished_at with it
        self.clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        #: told each committed transaction's seconds (metrics.py), when metrics are on
        self.on_commit: Callable[[float], None] | None = None
        self._writer = GroupCommit(self._run_batch, threads)
        self._lock_file: int | None = None
        #: SQLite: the one connection, held open (a pool checkout and its reset cost more
        #: than the transaction of a small body)
        self._held: sa.Connection | None = None

    def migrate(self) -> None:
        """Apply every Alembic migration not applied yet (idempotent).

        On PostgreSQL, coordinators starting together take turns: the migrating
        transaction holds an advisory lock until it commits.
        """
        cfg = Config()
        location = resources.files("taskgrid.coordinator") / "migrations"
        cfg.set_main_option("script_location", str(location))
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn(tx)` in one transaction on the calling thread.

        Raises:
            StoreUnavailableError: the database cannot be reached (or is locked
                past the busy timeout); nothing was committed.
        """
        return self._transact_many([fn])[0]  # type: ignore[no-any-return]

    def _transact_many(self, fns: Sequence[Callable[[Tx], Any]]) -> list[Any]:
        """Run every body in one transaction; their results in order."""
        self.transactions += 1
        started = time.perf_counter()
        try:
            if not self.is_sqlite:
                notes = Notes(self.node, self.spare) if self.peers else None
                with self.engine.begin() as conn:
                    out = [fn(Tx(conn, notes, self.clock)) for fn in fns]
                    if notes:
                        _send(conn, notes)
            else:
                if self._held is None:
                    self._held = self.engine.connect()
                with self._held.begin():
                    out = [fn(Tx(self._held, None, self.clock)) for fn in fns]
            self.healthy = True
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)
            return out
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError,
                sqlite3.InterfaceError, _pg().OperationalError, _pg().InterfaceError
                ) as exc:
            self.healthy = False
            raise StoreUnavailableError(f"database unavailable: {_first_line(exc)}") from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                self._held = None
                self.healthy = False
                raise StoreUnavailableError(f"database connection lost: {_first_line(exc)}"
                                            ) from exc
            raise

    def _run_batch(self, fns: Sequence[Callable[[Tx], Any]]) -> list[tuple[bool, Any]]:
        """Group commit: all bodies in one transaction, or, if one raises, each alone."""
        if len(fns) > 1:
            try:
                return [(True, r) for r in self._transact_many(fns)]
            except Exception:  # noqa: BLE001 - each body reruns alone and meets its own error
                pass
        out: list[tuple[bool, Any]] = []
        for fn in fns:
            try:
                out.append((True, self._transact_many([fn])[0]))
            except Exception as exc:  # noqa: BLE001 - handed to the body's caller
                out.append((False, exc))
        return out

    async def run(self, fn: Callable[[Tx], T], linger_s: float = 0.0) -> T:
        """Run `fn(tx)` in one transaction, possibly shared with other queued bodies.

        `fn` must only touch the database through `tx` (it may run twice: see
        groupcommit.py); memory is updated by the caller after this returns. `linger_s`:
        how long the body may wait for others to share its commit (see GroupCommit.submit).
        """
        fence = FENCE.get()
        if fence is not None and not self.is_sqlite:
            fn = functools.partial(_fenced, fence, fn)
        return await self._writer.submit(fn, linger_s)  # type: ignore[no-any-return]

    async def notifications(self) -> AsyncIterator[str | None]:
        """PostgreSQL: other coordinators' notes, on a connection of their own.

        Yields None once listening, then each payload as it comes.

        Raises:
            StoreUnavailableError: the connection could not be made, or was lost.
        """
        psycopg = _pg()
        info = sa.make_url(self.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        try:
            conn = await psycopg.AsyncConnection.connect(info, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"cannot listen: {_first_line(exc)}") from exc
        try:
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                # Hello: the others start telling this node at once, not at their next beat.
                await conn.execute("SELECT pg_notify(%s, %s)",
                                   (CHANNEL, json.dumps({"node": self.node, "hello": True})))
                yield None
                async for n in conn.notifies():
                    yield n.payload
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"listening connection lost: {_first_line(exc)}"
                                        ) from exc

    @property
    def bodies(self) -> int:
        """Transaction bodies run so far (each a store call; several may share a commit)."""
        return self._writer.bodies

    def close(self) -> None:
        """Finish queued work, release connections and the writer lock."""
        self._writer.close()
        if self._held is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._held.close()
            self._held = None
        self.engine.dispose()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    # -- one coordinator per SQLite file ----------------------------------------

    def lock_writer(self) -> None:
        """SQLite: become the file's only coordinator, or raise WriterLockError naming the other.

        An exclusive flock on `<file>.lock` beside the database, holding the owner's
        pid. PostgreSQL takes any number of coordinators (cluster.py): nothing to lock.
        """
        if self.is_sqlite:
            self._lock_sqlite()

    def _lock_sqlite(self) -> None:
        path = self.engine.url.database
        if not path or path == ":memory:":
            return
        lock_path = os.path.abspath(path) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WriterLockError(
                f"database {path} is already served by another coordinator (pid {other}; "
                f"lock file {lock_path}); SQLite allows one coordinator per file") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_file = fd


QUEUED = TaskStatus.QUEUED.value


def _shapes(d: hotsql.Dialect, rows: Sequence[Mapping[str, Any]]
            ) -> list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    """Rows as runs of (columns, parameter tuples), consecutive rows of one shape together."""
    out: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    for row in rows:
        keys = tuple(row)
        params = tuple(d.value_in(row[k]) for k in keys)
        if out and out[-1][0] == keys:
            out[-1][1].append(params)
        else:
            out.append((keys, [params]))
    return out


def _fenced(fence: tuple[str, int], fn: Callable[[Tx], T], tx: Tx) -> T:
    tx.check_fence(*fence)
    return fn(tx)


def _send(conn: sa.Connection, notes: Notes) -> None:
    """Queue the notes as notifications; PostgreSQL delivers them when the commit lands."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    for payload in notes.payloads():
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _sqlite_pragmas(dbapi_conn: Any, synchronous: str) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
