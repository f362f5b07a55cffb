"""The store on both backends: migrations, compare-and-set, claim order, fencing."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from taskgrid.coordinator import lifecycle, schema
from taskgrid.coordinator.errors import TransitionConflictError
from tests.store.helpers import NOW, task_row


def insert(store, **fields):
    return store.transact(lambda tx: tx.insert_tasks([task_row(**fields)]))[0]


def test_migrations_build_exactly_the_declared_schema(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []
    store.migrate()  # idempotent


def test_claim_order_is_priority_then_next_run_time_then_id(store):
    low = insert(store, priority=0)
    high = insert(store, priority=5)
    early = insert(store, priority=0, start_time=NOW - dt.timedelta(minutes=1))
    insert(store, priority=9, start_time=NOW + dt.timedelta(hours=1))  # not due
    rows = store.transact(lambda tx: tx.due_tasks(["main"], ["f"], NOW, 10))
    assert [r["id"] for r in rows] == [high, early, low]
    assert store.transact(lambda tx: tx.due_tasks(["main"], ["g"], NOW, 10)) == []
    assert store.transact(lambda tx: tx.next_due_time(["main"], ["f"])) == NOW - \
        dt.timedelta(minutes=1)


def test_compare_and_set_conflict_changes_nothing(store):
    tid = insert(store)

    def lease_twice(tx):
        task = tx.tasks_by_ids([tid])[tid]
        first = lifecycle.lease(task, "w1")
        tx.apply([first])
        tx.apply([first])  # the task is no longer QUEUED: conflict, whole transaction undone

    with pytest.raises(TransitionConflictError):
        store.transact(lease_twice)
    task = store.transact(lambda tx: tx.tasks_by_ids([tid]))[tid]
    assert task["status"] == "QUEUED" and task["attempt"] == 0


def test_fenced_write_with_old_attempt_is_refused(store):
    tid = insert(store)
    task = store.transact(lambda tx: tx.tasks_by_ids([tid]))[tid]
    started = lifecycle.lease_and_start(task, "w1", NOW)
    store.transact(lambda tx: tx.apply([started]))
    task = store.transact(lambda tx: tx.tasks_by_ids([tid]))[tid]
    stale = dataclass_replace(lifecycle.finish(task, lifecycle.RunStatus.COMPLETED, NOW),
                              attempt=task["attempt"] - 1)
    with pytest.raises(TransitionConflictError):
        store.transact(lambda tx: tx.apply([stale]))
    assert store.transact(lambda tx: tx.tasks_by_ids([tid]))[tid]["status"] == "RUNNING"


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_duplicate_output_chunks_are_kept_once(store):
    tid = insert(store)
    run_id = store.transact(lambda tx: tx.insert_runs([{
        "task_id": tid, "attempt": 1, "status": "RUNNING", "start_time": NOW, "stop_time": None,
        "run_output": "", "run_result": None, "traceback": "", "worker_name": "w"}]))[0]
    chunk = {"run_id": run_id, "seq": 1, "data": "a", "clear": False}
    store.transact(lambda tx: tx.insert_chunks([chunk]))
    store.transact(lambda tx: tx.insert_chunks([chunk, {**chunk, "seq": 2, "data": "b"}]))
    chunks = store.transact(lambda tx: tx.chunks([run_id]))[run_id]
    assert [(c["seq"], c["data"]) for c in chunks] == [(1, "a"), (2, "b")]
    assert store.transact(lambda tx: tx.runs_by_ref([(tid, 1)])) == {(tid, 1): (run_id, True)}


def test_times_round_trip_as_aware_utc(store):
    tid = insert(store, start_time=NOW + dt.timedelta(seconds=1.5))
    task = store.transact(lambda tx: tx.tasks_by_ids([tid]))[tid]
    assert task["start_time"] == NOW + dt.timedelta(seconds=1.5)
    assert task["start_time"].tzinfo is not None
