"""Two transactions at once on one database, each with its own Store (its own connections).

PostgreSQL runs them side by side: due_tasks reads FOR UPDATE SKIP LOCKED, so two claimers
take disjoint rows without waiting. SQLite has one writer: the second write waits for the
first to commit (busy_timeout), and the compare-and-set finds the rows taken.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.errors import DuplicateUuidError, TransitionConflictError
from tests.store.helpers import NOW, task_row

JOIN_TIMEOUT_S = 30


def run_threads(*targets: Callable[[], Any]) -> list[Any]:
    """Run each target on its own thread; return their results, re-raising any error."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def wrap(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True)
               for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
        assert not t.is_alive(), "a store thread is stuck"
    if errors:
        raise errors[0]
    return results


def test_two_concurrent_claimers_never_claim_a_task_twice(store, tasks, open_store):
    ids = tasks.add_many(30)
    both_read = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)

    def claimer(name: str) -> tuple[list[int], list[int]]:
        own = open_store()
        claimed: list[int] = []
        conflicts: list[int] = []  # the round of each conflict
        for round_no in range(100):
            def claim(tx, first=round_no == 0):
                rows = tx.due_tasks(["main"], ["f"], NOW, 4, name)
                if first:
                    both_read.wait()  # both have read (on PostgreSQL: locked) before any write
                tx.apply([lifecycle.lease(r, name) for r in rows])
                return [r["id"] for r in rows]
            try:
                got = own.transact(claim)
            except TransitionConflictError:
                conflicts.append(round_no)
                continue
            if not got:
                return claimed, conflicts
            claimed += got
        raise AssertionError(f"{name} never ran out of due tasks")

    (a, a_conflicts), (b, b_conflicts) = run_threads(lambda: claimer("a"), lambda: claimer("b"))
    assert not set(a) & set(b), "a task was claimed twice"
    assert sorted(a + b) == ids
    rows = store.transact(lambda tx: tx.tasks_by_ids(ids))
    for name, claimed in (("a", a), ("b", b)):
        assert all(rows[t]["assigned_worker_name"] == name and rows[t]["attempt"] == 1
                   and rows[t]["status"] == "ASSIGNED" for t in claimed)
    if store.is_sqlite:
        # both read the same four rows; the second writer waited for the first, then its
        # compare-and-set matched nothing and the whole claim rolled back
        assert sorted(a_conflicts + b_conflicts)[:1] == [0]
    else:
        # SKIP LOCKED: the second claimer passed over the first one's rows, never conflicting
        assert a_conflicts == b_conflicts == []
        assert len(a) >= 4 and len(b) >= 4  # each took its own four in the first round


def test_concurrent_inserts_of_one_uuid_one_wins(store, tasks, open_store):
    first, second = open_store(), open_store()
    a_inserted, b_checked = threading.Event(), threading.Event()

    def a() -> list[int]:
        def insert(tx):
            ids = tx.insert_tasks([task_row(uuid="race")])
            a_inserted.set()
            assert b_checked.wait(JOIN_TIMEOUT_S)  # b found the uuid free; now commit
            return ids
        return first.transact(insert)

    def b() -> str:
        def insert(tx):
            assert a_inserted.wait(JOIN_TIMEOUT_S)
            assert tx.existing_uuids(["race"]) == set()  # a has not committed yet
            b_checked.set()
            tx.insert_tasks([task_row(uuid="b-only"), task_row(uuid="race")])  # waits for a
        try:
            second.transact(insert)
        except DuplicateUuidError as exc:
            return str(exc)
        return "no error"

    (a_ids, b_error) = run_threads(a, b)
    assert "already in use" in b_error
    assert store.transact(lambda tx: tx.existing_uuids(["race", "b-only"])) == {"race"}
    assert store.transact(lambda tx: tx.task_by_ref(None, "race"))["id"] == a_ids[0]
    assert tasks.add(uuid="b-only")  # both stores' connections ended cleanly


def test_set_stop_requested_races_the_report(store, tasks, open_store):
    """A stop and a finish on the same attempt: both commit, in one order or the other."""
    tid = tasks.add()
    row = tasks.lease(tid, "w1")
    stopper, reporter = open_store(), open_store()
    go = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)

    def stop() -> bool:
        go.wait()
        return stopper.transact(lambda tx: tx.set_stop_requested(tid, row["attempt"]))

    def report() -> str:
        go.wait()
        try:
            reporter.transact(lambda tx: tx.apply([lifecycle.finish(
                row, lifecycle.RunStatus.COMPLETED, NOW)]))
        except TransitionConflictError:
            return "conflict"
        return "applied"

    flagged, reported = run_threads(stop, report)
    assert reported == "applied"  # the stop flag is not the status: the CAS still matches
    final = tasks.get(tid)
    assert final["status"] == "COMPLETED"
    # a stop flagged before the report was overwritten by finish's stop_requested=False;
    # one that came after found the task no longer RUNNING
    assert final["stop_requested"] is False
    assert flagged in (True, False)  # True only when it landed first


def test_release_dependents_concurrently_counts_each_edge_once(store, tasks, open_store):
    n_threads = 2
    parent, child = tasks.add_many(2)
    store.transact(lambda tx: tx.insert_deps([
        {"job_name": "j", "task_parent": parent, "task_child": child, "can_visit": False}]))
    stores = [open_store() for _ in range(n_threads)]
    go = threading.Barrier(n_threads, timeout=JOIN_TIMEOUT_S)

    def release(s):
        return lambda: (go.wait(), s.transact(lambda tx: tx.release_dependents([child])))[1]

    counts = run_threads(*(release(s) for s in stores))
    assert sorted(counts) == [0] * (n_threads - 1) + [1]
    assert store.transact(lambda tx: tx.unmet_prerequisites(parent)) == []
