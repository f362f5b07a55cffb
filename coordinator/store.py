"""The only module that runs SQL: engine, migrations, transactions and queries.

Operations (tasks.py, leasing.py, workers.py, reaper.py) decide with
lifecycle.py and persist through a `Tx`, the set of queries available inside
one transaction. `Store.run(fn)` runs `fn(tx)` in one transaction on the
store's executor: a single thread holding the one connection for SQLite (it
has one writer anyway, and a held connection is several times faster than
a pool), a small pool of threads for PostgreSQL. The gRPC event loop never
blocks on the database.

Status writes are compare-and-set (`WHERE id = :id AND status = :expected`
and, for worker writes, `AND attempt = :attempt`); zero rows matched raises
TransitionConflictError and the whole transaction rolls back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from taskgrid.coordinator import schema
from taskgrid.coordinator.clock import from_db, to_db
from taskgrid.coordinator.errors import TransitionConflictError
from taskgrid.coordinator.lifecycle import LEASED_TASK_STATUSES, TaskStatus, Transition

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]

DEFAULT_PG_POOL_SIZE = 8
_TASK_TIMES = ("start_time", "next_run_time", "stop_time", "last_run_time", "created_at")
_RUN_TIMES = ("start_time", "stop_time")
_WORKER_TIMES = ("first_heartbeat", "last_heartbeat", "lost_at")


def _row(mapping: Mapping[str, Any], times: Iterable[str]) -> Row:
    row = dict(mapping)
    for key in times:
        if key in row:
            row[key] = from_db(row[key])
    return row


def _db_values(values: Mapping[str, Any]) -> Row:
    return {k: (to_db(v) if hasattr(v, "tzinfo") else v) for k, v in values.items()}


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Tx:
    """Queries inside one transaction. Rows are dicts with aware UTC datetimes."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"

    # -- tasks ---------------------------------------------------------------

    def insert_tasks(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert task rows; returns their ids in order."""
        stmt = sa.insert(schema.task).returning(schema.task.c.id, sort_by_parameter_order=True)
        result = self.conn.execute(stmt, [_db_values(r) for r in rows])
        return [r[0] for r in result]

    def existing_uuids(self, uuids: Iterable[str]) -> set[str]:
        """Which of these uuids are taken already."""
        wanted = list(set(uuids))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            stmt = sa.select(schema.task.c.uuid).where(schema.task.c.uuid.in_(wanted[i:i + 500]))
            found.update(self.conn.execute(stmt).scalars())
        return found

    def _due_filter(self, groups: Sequence[str], functions: Sequence[str]) -> list[Any]:
        t = schema.task.c
        return [t.status == TaskStatus.QUEUED.value, t.enabled.is_(True),
                t.group_name.in_(groups), t.function_name.in_(functions)]

    def due_tasks(
        self, groups: Sequence[str], functions: Sequence[str], now: Any, limit: int
    ) -> list[Row]:
        """Due tasks this worker may run, best first, locked for this transaction."""
        t = schema.task.c
        stmt = (
            sa.select(schema.task)
            .where(*self._due_filter(groups, functions), t.next_run_time <= to_db(now))
            .order_by(t.priority.desc(), t.next_run_time, t.id)
            .limit(limit)
        )
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return [_row(r, _TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def next_due_time(self, groups: Sequence[str], functions: Sequence[str]) -> Any:
        """The earliest next_run_time among queued tasks this worker may run, or None."""
        stmt = sa.select(sa.func.min(schema.task.c.next_run_time)).where(
            *self._due_filter(groups, functions))
        return from_db(self.conn.execute(stmt).scalar())

    def tasks_by_ids(self, ids: Iterable[int], lock: bool = False) -> dict[int, Row]:
        """Task rows by id (locked FOR UPDATE on PostgreSQL when `lock`)."""
        wanted = sorted(set(ids))
        out: dict[int, Row] = {}
        for i in range(0, len(wanted), 500):
            stmt = sa.select(schema.task).where(schema.task.c.id.in_(wanted[i:i + 500]))
            if lock and self.is_postgres:
                stmt = stmt.with_for_update()
            for r in self.conn.execute(stmt).mappings():
                out[r["id"]] = _row(r, _TASK_TIMES)
        return out

    def task_by_ref(self, task_id: int | None, uuid: str | None, lock: bool = False) -> Row | None:
        """One task by id or uuid."""
        t = schema.task
        stmt = sa.select(t).where(t.c.id == task_id if task_id is not None else t.c.uuid == uuid)
        if lock and self.is_postgres:
            stmt = stmt.with_for_update()
        r = self.conn.execute(stmt).mappings().first()
        return _row(r, _TASK_TIMES) if r else None

    def leased_tasks(self) -> list[Row]:
        """Every task some worker holds a lease on (to rebuild memory at start)."""
        stmt = sa.select(schema.task).where(
            schema.task.c.status.in_([s.value for s in LEASED_TASK_STATUSES]))
        return [_row(r, _TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def list_tasks(
        self, statuses: Sequence[str], filters: Mapping[str, str], before_id: int | None,
        limit: int,
    ) -> list[Row]:
        """Tasks matching the filters, newest first, keyset-paged by id."""
        t = schema.task.c
        conds: list[Any] = [getattr(t, k) == v for k, v in filters.items() if v]
        if statuses:
            conds.append(t.status.in_(statuses))
        if before_id is not None:
            conds.append(t.id < before_id)
        stmt = sa.select(schema.task).where(*conds).order_by(t.id.desc()).limit(limit)
        return [_row(r, _TASK_TIMES) for r in self.conn.execute(stmt).mappings()]

    def apply(self, transitions: Sequence[Transition]) -> None:
        """Apply transitions as compare-and-set updates; any miss rolls everything back."""
        t = schema.task.c
        for tr in transitions:
            conds = [t.id == tr.task_id, t.status == tr.source.value]
            if tr.attempt is not None:
                conds.append(t.attempt == tr.attempt)
            values = _db_values({**tr.values, "status": tr.target.value})
            result = self.conn.execute(sa.update(schema.task).where(*conds).values(values))
            if result.rowcount != 1:
                raise TransitionConflictError(
                    f"task {tr.task_id} is no longer {tr.source} (attempt {tr.attempt}); "
                    f"{tr.event} not applied")

    def set_stop_requested(self, task_id: int, attempt: int) -> bool:
        """Flag a RUNNING task so its worker is told to stop it."""
        t = schema.task.c
        result = self.conn.execute(
            sa.update(schema.task)
            .where(t.id == task_id, t.attempt == attempt, t.status == TaskStatus.RUNNING.value)
            .values(stop_requested=True))
        return bool(result.rowcount == 1)

    # -- runs ----------------------------------------------------------------

    def insert_runs(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert run rows; returns their ids in order."""
        if not rows:
            return []
        stmt = sa.insert(schema.run).returning(schema.run.c.id, sort_by_parameter_order=True)
        return [r[0] for r in self.conn.execute(stmt, [_db_values(r) for r in rows])]

    def run_ids(self, refs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Run ids by (task_id, attempt)."""
        refs = list(refs)
        if not refs:
            return {}
        r = schema.run.c
        stmt = sa.select(r.task_id, r.attempt, r.id).where(
            sa.tuple_(r.task_id, r.attempt).in_(refs))
        return {(row.task_id, row.attempt): row.id for row in self.conn.execute(stmt)}

    def runs_of(self, task_id: int, latest_only: bool) -> list[Row]:
        """A task's runs oldest first, or just its latest."""
        r = schema.run.c
        stmt = sa.select(schema.run).where(r.task_id == task_id)
        stmt = stmt.order_by(r.id.desc()).limit(1) if latest_only else stmt.order_by(r.id)
        return [_row(x, _RUN_TIMES) for x in self.conn.execute(stmt).mappings()]

    def update_run(self, run_id: int, values: Mapping[str, Any]) -> None:
        """Write a run's final values."""
        stmt = sa.update(schema.run).where(schema.run.c.id == run_id).values(_db_values(values))
        self.conn.execute(stmt)

    def delete_run(self, run_id: int) -> None:
        """Remove a run record (a success with nothing to keep)."""
        self.conn.execute(sa.delete(schema.output).where(schema.output.c.run_id == run_id))
        self.conn.execute(sa.delete(schema.run).where(schema.run.c.id == run_id))

    # -- live output ---------------------------------------------------------

    def insert_chunks(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append output chunks; a chunk sent twice (same run and seq) is kept once."""
        if not rows:
            return
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        stmt = dialect_insert(schema.output).on_conflict_do_nothing(
            index_elements=["run_id", "seq"])
        self.conn.execute(stmt, list(rows))

    def chunks(self, run_ids: Iterable[int]) -> dict[int, list[Row]]:
        """Live output chunks by run id, in sequence order."""
        ids = list(run_ids)
        out: dict[int, list[Row]] = {i: [] for i in ids}
        if not ids:
            return out
        o = schema.output.c
        stmt = sa.select(o.run_id, o.seq, o.data, o.clear).where(o.run_id.in_(ids)).order_by(
            o.run_id, o.seq)
        for r in self.conn.execute(stmt).mappings():
            out[r["run_id"]].append(dict(r))
        return out

    def delete_chunks(self, run_ids: Iterable[int]) -> None:
        """Drop live chunks once they are folded into run_output."""
        ids = list(run_ids)
        if ids:
            self.conn.execute(sa.delete(schema.output).where(schema.output.c.run_id.in_(ids)))

    # -- workers -------------------------------------------------------------

    def worker_by_name(self, name: str) -> Row | None:
        """One worker row by name."""
        stmt = sa.select(schema.worker).where(schema.worker.c.worker_name == name)
        r = self.conn.execute(stmt).mappings().first()
        return _row(r, _WORKER_TIMES) if r else None

    def save_worker(self, worker_id: int | None, values: Mapping[str, Any]) -> int:
        """Insert a worker row, or overwrite the row `worker_id`; returns the id."""
        w = schema.worker
        if worker_id is None:
            return int(self.conn.execute(
                sa.insert(w).returning(w.c.id), [_db_values(values)]).scalar_one())
        self.conn.execute(sa.update(w).where(w.c.id == worker_id).values(_db_values(values)))
        return worker_id

    def workers(self, alive_only: bool = False) -> list[Row]:
        """Worker rows by id."""
        stmt = sa.select(schema.worker).order_by(schema.worker.c.id)
        if alive_only:
            stmt = stmt.where(schema.worker.c.alive.is_(True))
        return [_row(r, _WORKER_TIMES) for r in self.conn.execute(stmt).mappings()]

    def update_workers(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Write several workers' columns (status, heartbeat, liveness)."""
        w = schema.worker
        for worker_id, values in updates:
            self.conn.execute(sa.update(w).where(w.c.id == worker_id).values(_db_values(values)))


class Store:
    """The database: engine, migrations and the executor transactions run on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = sa.create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30},
                poolclass=sa.pool.StaticPool)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            threads = 1
        else:
            self.engine = sa.create_engine(url, pool_size=DEFAULT_PG_POOL_SIZE, max_overflow=4,
                                           pool_pre_ping=True)
            threads = DEFAULT_PG_POOL_SIZE
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="taskgrid-store")
        #: transactions run so far (logged at shutdown; read by bench/)
        self.transactions = 0

    def migrate(self) -> None:
        """Apply every Alembic migration not applied yet (idempotent)."""
        cfg = Config()
        location = resources.files("taskgrid.coordinator") / "migrations"
        cfg.set_main_option("script_location", str(location))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn(tx)` in one transaction on the calling thread."""
        self.transactions += 1
        with self.engine.begin() as conn:
            return fn(Tx(conn))

    async def run(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn(tx)` in one transaction on the store's executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transact, fn)

    def close(self) -> None:
        """Finish queued work and release connections."""
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
