"""Dependencies, expiry and broadcast parents: what the timers and the release path read."""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import lifecycle
from tests.store.helpers import NOW, lockable

MINUTE = dt.timedelta(minutes=1)


def due_ids(store, worker_name=""):
    return [r["id"] for r in store.transact(
        lambda tx: tx.due_tasks(["main"], ["f"], NOW, 100, worker_name))]


def edge(parent, child, met=False):
    return {"job_name": "job", "task_parent": parent, "task_child": child, "can_visit": met}


# -- insert_deps, unmet_prerequisites, release_dependents -------------------------------------


def test_dependency_release(store, tasks):
    parent, child_a, child_b, done_before, free = tasks.add_many(5)
    store.transact(lambda tx: tx.insert_deps([
        edge(parent, child_b), edge(parent, child_a), edge(parent, done_before, met=True)]))
    store.transact(lambda tx: tx.insert_deps([]))  # nothing to insert
    assert store.transact(lambda tx: tx.unmet_prerequisites(parent)) == sorted(
        [child_a, child_b])
    assert store.transact(lambda tx: tx.unmet_prerequisites(child_a)) == []
    # a task with an unmet prerequisite is not due, nor counted by next_due_time
    assert due_ids(store) == [child_a, child_b, done_before, free]
    others = [child_a, child_b, done_before, free]  # leased: only the parent stays QUEUED
    store.transact(lambda tx: tx.apply([lifecycle.lease(r, "w") for r in tx.tasks_by_ids(
        others).values()]))
    assert store.transact(lambda tx: tx.next_due_time(["main"], ["f"], "")) is None

    assert store.transact(lambda tx: tx.release_dependents([child_a])) == 1
    assert store.transact(lambda tx: tx.unmet_prerequisites(parent)) == [child_b]
    assert due_ids(store) == []  # still waits for child_b
    assert store.transact(lambda tx: tx.release_dependents([child_a])) == 0  # met already
    assert store.transact(lambda tx: tx.release_dependents([])) == 0
    assert store.transact(lambda tx: tx.release_dependents([child_b, free])) == 1
    assert store.transact(lambda tx: tx.unmet_prerequisites(parent)) == []
    assert due_ids(store) == [parent]
    assert store.transact(lambda tx: tx.next_due_time(["main"], ["f"], "")) == NOW


def test_release_dependents_frees_every_parent_of_a_child(store, tasks):
    p1, p2, child = tasks.add_many(3)
    store.transact(lambda tx: tx.insert_deps([edge(p1, child), edge(p2, child)]))
    assert due_ids(store) == [child]
    assert store.transact(lambda tx: tx.release_dependents([child])) == 2
    assert due_ids(store) == [p1, p2, child]


# -- overdue_for_expiry, earliest_stop_time ------------------------------------------------


def test_expiry_queries(store, tasks):
    assert store.transact(lambda tx: tx.earliest_stop_time()) is None
    past = tasks.add(stop_time=NOW - MINUTE)
    assigned_past = tasks.add(stop_time=NOW - 2 * MINUTE)
    tasks.lease(assigned_past, "w", start=False)
    running_past = tasks.add(stop_time=NOW - 3 * MINUTE)
    tasks.lease(running_past, "w")  # RUNNING: its worker ends it, not the expiry timer
    exactly_now = tasks.add(stop_time=NOW)
    tasks.add(stop_time=NOW + MINUTE)
    tasks.add()  # no stop_time
    done = tasks.add(stop_time=NOW - 4 * MINUTE)
    tasks.move(done, lifecycle.expire)

    def overdue(now=NOW, limit=1000):
        return sorted(r["id"] for r in store.transact(lambda tx: tx.overdue_for_expiry(now, limit)))

    assert overdue() == sorted([past, assigned_past])
    assert overdue(NOW + dt.timedelta(microseconds=1)) == sorted([past, assigned_past,
                                                                  exactly_now])
    assert len(overdue(NOW + MINUTE * 10, limit=2)) == 2
    assert overdue(NOW - 10 * MINUTE) == []
    row = store.transact(lambda tx: tx.overdue_for_expiry(NOW))[0]
    assert row["stop_time"].tzinfo is not None
    assert store.transact(lambda tx: tx.earliest_stop_time()) == NOW - 2 * MINUTE
    store.transact(lambda tx: tx.apply([lifecycle.expire(r) for r in tx.overdue_for_expiry(NOW)]))
    assert store.transact(lambda tx: tx.earliest_stop_time()) == NOW
    assert overdue() == []


def test_overdue_for_expiry_locks_and_skips_on_postgres(store, tasks, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite has no row locks (one writer at a time)")
    a, b = (tasks.add(stop_time=NOW - MINUTE) for _ in range(2))
    other = open_store()

    def both(tx):
        mine = [r["id"] for r in tx.overdue_for_expiry(NOW, limit=1)]
        theirs = other.transact(lambda tx2: [r["id"] for r in tx2.overdue_for_expiry(NOW)])
        return mine, theirs, lockable(other, [a, b])

    mine, theirs, free = store.transact(both)
    assert len(mine) == 1 and theirs == [t for t in (a, b) if t not in mine]
    assert free == set(theirs)


# -- due_broadcasts, earliest_broadcast ------------------------------------------------------


def test_broadcast_queries(store, tasks):
    assert store.transact(lambda tx: tx.earliest_broadcast()) is None
    late = tasks.add(broadcast=True, start_time=NOW - MINUTE)
    early = tasks.add(broadcast=True, start_time=NOW - 2 * MINUTE)
    now = tasks.add(broadcast=True)
    future = tasks.add(broadcast=True, start_time=NOW + MINUTE)
    tasks.add(broadcast=True, enabled=False, start_time=NOW - 5 * MINUTE)
    tasks.add(start_time=NOW - 5 * MINUTE)  # not a broadcast
    stopped = tasks.add(broadcast=True, start_time=NOW - 6 * MINUTE)
    tasks.move(stopped, lifecycle.stop_waiting, NOW)

    rows = store.transact(lambda tx: tx.due_broadcasts(NOW))
    assert [r["id"] for r in rows] == [early, late, now]  # by next_run_time
    assert rows[0]["next_run_time"] == NOW - 2 * MINUTE and rows[0]["broadcast"] is True
    assert store.transact(lambda tx: tx.earliest_broadcast()) == NOW - 2 * MINUTE
    store.transact(lambda tx: tx.apply([lifecycle.fan_out(r, NOW) for r in rows]))
    assert store.transact(lambda tx: tx.due_broadcasts(NOW)) == []
    assert store.transact(lambda tx: tx.earliest_broadcast()) == NOW + MINUTE
    again = store.transact(lambda tx: tx.due_broadcasts(NOW + MINUTE))
    assert sorted(r["id"] for r in again) == sorted([future, early, late, now])


def test_due_broadcasts_locks_and_skips_on_postgres(store, tasks, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite has no row locks (one writer at a time)")
    parent = tasks.add(broadcast=True)
    other = open_store()

    def both(tx):
        mine = [r["id"] for r in tx.due_broadcasts(NOW)]
        theirs = other.transact(lambda tx2: tx2.due_broadcasts(NOW))
        return mine, theirs, lockable(other, [parent])

    assert store.transact(both) == ([parent], [], set())


def test_has_unmet_deps_and_claims_that_skip_the_prerequisite_check(store, tasks):
    parent, child = tasks.add_many(2)
    assert store.transact(lambda tx: tx.has_unmet_deps()) is False
    store.transact(lambda tx: tx.insert_deps([edge(parent, child)]))
    assert store.transact(lambda tx: tx.has_unmet_deps()) is True
    # With the check, the waiting parent is not due; without it (only ever used when no edge
    # is unmet), the claim does not look at edges at all.
    assert due_ids(store) == [child]
    unchecked = store.transact(lambda tx: tx.due_tasks(["main"], ["f"], NOW, 100, "", False))
    assert [r["id"] for r in unchecked] == [parent, child]
    assert store.transact(lambda tx: tx.next_due_time(["main"], ["f"], "", False)) is not None
    store.transact(lambda tx: tx.release_dependents([child]))
    assert store.transact(lambda tx: tx.has_unmet_deps()) is False
