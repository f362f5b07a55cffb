"""The leased-task queries: the reconcile pass, a lost worker's leases, broadcast children."""

from __future__ import annotations

import pytest

from taskgrid.coordinator import lifecycle
from tests.store.helpers import NOW, lockable

LEASE_COLUMNS = {"id", "attempt", "assigned_worker_name", "status", "stop_requested",
                 "last_run_time", "timeout", "started"}


def child(tasks, target, **fields):
    """A QUEUED broadcast child meant for worker `target`."""
    return tasks.add(row_over={"target_worker_name": target, "broadcast_parent": 1}, **fields)


def test_leased_tasks_lists_assigned_and_running_with_started(store, tasks):
    assert store.transact(lambda tx: tx.leased_tasks()) == []
    running = tasks.add(timeout=30)
    assigned = tasks.add(timeout=40)
    queued = tasks.add()
    finished = tasks.add()
    tasks.lease(running, "w1")
    tasks.lease(assigned, "w2", start=False)
    tasks.lease(finished, "w1")
    tasks.move(finished, lifecycle.finish, lifecycle.RunStatus.COMPLETED, NOW)
    store.transact(lambda tx: tx.set_stop_requested(running, 1))

    rows = {r["id"]: r for r in store.transact(lambda tx: tx.leased_tasks())}
    assert set(rows) == {running, assigned} and queued not in rows
    assert all(set(r) == LEASE_COLUMNS for r in rows.values())
    assert rows[running] == {"id": running, "attempt": 1, "assigned_worker_name": "w1",
                             "status": "RUNNING", "stop_requested": True,
                             "last_run_time": NOW, "timeout": 30, "started": True}
    assert rows[running]["last_run_time"].tzinfo is not None
    assert rows[assigned] == {"id": assigned, "attempt": 1, "assigned_worker_name": "w2",
                              "status": "ASSIGNED", "stop_requested": False,
                              "last_run_time": None, "timeout": 40, "started": False}


def test_leased_by_returns_whole_rows_of_one_worker(store, tasks, open_store):
    a, b, c, queued = tasks.add_many(4)
    tasks.lease(a, "w1")
    tasks.lease(b, "w1", start=False)
    tasks.lease(c, "w2")
    rows = store.transact(lambda tx: tx.leased_by("w1"))
    assert sorted(r["id"] for r in rows) == [a, b]
    assert {r["status"] for r in rows} == {"RUNNING", "ASSIGNED"}
    assert all("function_name" in r and r["created_at"] == NOW for r in rows)  # whole rows
    assert store.transact(lambda tx: tx.leased_by("nobody")) == []
    assert store.transact(lambda tx: tx.leased_by("")) == []  # QUEUED rows have name ""
    if not store.is_sqlite:  # locked for the transaction
        other = open_store()
        free = store.transact(lambda tx: (tx.leased_by("w1"), lockable(other, [a, b, c]))[1])
        assert free == {c}


def test_queued_children_of(store, tasks, open_store):
    mine = child(tasks, "w1")
    mine_too = child(tasks, "w1")
    child(tasks, "w2")
    started = child(tasks, "w1")
    tasks.lease(started, "w1")
    tasks.add()  # a plain task
    rows = store.transact(lambda tx: tx.queued_children_of("w1"))
    assert sorted(r["id"] for r in rows) == [mine, mine_too]
    assert rows[0]["target_worker_name"] == "w1" and rows[0]["created_at"].tzinfo is not None
    assert store.transact(lambda tx: tx.queued_children_of("w3")) == []
    if not store.is_sqlite:
        other = open_store()
        free = store.transact(lambda tx: (tx.queued_children_of("w1"),
                                          lockable(other, [mine, mine_too, started]))[1])
        assert free == {started}


def test_orphaned_children(store, tasks):
    w1 = child(tasks, "w1")
    w2 = child(tasks, "w2")
    gone = child(tasks, "gone")
    started = child(tasks, "gone")
    tasks.lease(started, "gone")
    expired = child(tasks, "gone")
    tasks.move(expired, lifecycle.orphan_child)
    tasks.add()  # no target: never an orphan

    def orphans(live):
        return sorted(r["id"] for r in store.transact(lambda tx: tx.orphaned_children(live)))

    assert orphans(["w1", "w2"]) == [gone]
    assert orphans(["w1"]) == [w2, gone]
    assert orphans([]) == [w1, w2, gone]  # no live worker: every queued child
    assert orphans(["w1", "w2", "gone"]) == []
    row = store.transact(lambda tx: tx.orphaned_children(["w1", "w2"]))[0]
    assert row["target_worker_name"] == "gone" and row["status"] == "QUEUED"


def test_orphaned_children_locks_and_skips_on_postgres(store, tasks, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite has no row locks (one writer at a time)")
    a = child(tasks, "gone")
    b = child(tasks, "gone")
    other = open_store()

    def both(tx):
        mine = [r["id"] for r in tx.orphaned_children(["w1"])]
        theirs = other.transact(lambda tx2: tx2.orphaned_children(["w1"]))
        return mine, theirs, lockable(other, [a, b])

    assert store.transact(both) == ([a, b], [], set())
