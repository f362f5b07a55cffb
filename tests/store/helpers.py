"""Helpers of the store conformance suite: valid rows, task moves, PostgreSQL lock probes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.lifecycle import Transition
from taskgrid.coordinator.store import Row, Store, Tx
from taskgrid.coordinator.validation import validate_task

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def task_row(row_over: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A valid task row (validate_task), with scheduler-owned columns overridden by row_over."""
    row, errors = validate_task({"function_name": "f", **fields}, {}, NOW)
    assert not errors, errors
    assert row is not None
    return {**row, **(row_over or {})}


def worker_row(name: str, **over: Any) -> dict[str, Any]:
    """The columns of a scheduler_worker row."""
    return {
        "worker_name": name, "status": "ACTIVE", "first_heartbeat": NOW, "last_heartbeat": NOW,
        "group_names": '["main"]', "functions": '["f"]', "capabilities": "[]", "capacity": 1,
        "language": "python", "hostname": "h", "pid": 1, "heartbeat": 0.5, "token_hash": "x",
        "alive": True, "lost_at": None, "rss_bytes": 0, **over,
    }


def run_row(task_id: int, attempt: int, **over: Any) -> dict[str, Any]:
    """The columns of a RUNNING scheduler_run row."""
    return {"task_id": task_id, "attempt": attempt, "status": "RUNNING", "start_time": NOW,
            "stop_time": None, "run_output": "", "run_result": None, "traceback": "",
            "worker_name": "w", **over}


class Tasks:
    """Task helpers on one store, each call its own transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, row_over: dict[str, Any] | None = None, **fields: Any) -> int:
        return self.store.transact(lambda tx: tx.insert_tasks([task_row(row_over, **fields)]))[0]

    def add_many(self, n: int, **fields: Any) -> list[int]:
        rows = [task_row(**fields) for _ in range(n)]
        return self.store.transact(lambda tx: tx.insert_tasks(rows))

    def get(self, task_id: int) -> Row:
        return self.store.transact(lambda tx: tx.tasks_by_ids([task_id]))[task_id]

    def move(self, task_id: int, decide: Callable[..., Transition], *args: Any) -> Row:
        """Apply decide(current row, *args) and return the row after."""
        def apply(tx: Tx) -> Row:
            tx.apply([decide(tx.tasks_by_ids([task_id])[task_id], *args)])
            return tx.tasks_by_ids([task_id])[task_id]
        return self.store.transact(apply)

    def lease(self, task_id: int, worker: str, start: bool = True) -> Row:
        """QUEUED -> RUNNING (or ASSIGNED with start=False) for `worker`."""
        if start:
            return self.move(task_id, lifecycle.lease_and_start, worker, NOW)
        return self.move(task_id, lifecycle.lease, worker)


def lockable(other: Store, ids: Sequence[int]) -> set[int]:
    """PostgreSQL: which of these task ids another transaction can lock now (SKIP LOCKED)."""
    query = sa.text("SELECT id FROM scheduler_task WHERE id = ANY(:ids) FOR UPDATE SKIP LOCKED")
    return other.transact(lambda tx: set(tx.conn.execute(query, {"ids": list(ids)}).scalars()))


def is_postgres(store: Store) -> bool:
    return not store.is_sqlite
