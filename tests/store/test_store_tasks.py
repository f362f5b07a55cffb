"""Task rows: insert, look-ups, listing, compare-and-set transitions, stop requests, claims."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.errors import DuplicateUuidError, TransitionConflictError
from taskgrid.coordinator.lifecycle import Event, TaskStatus, Transition
from taskgrid.coordinator.store import Tx
from tests.store.helpers import NOW, lockable, task_row

MINUTE = dt.timedelta(minutes=1)

# -- insert_tasks, existing_uuids ------------------------------------------------------------


def test_insert_tasks_returns_ids_in_row_order(store):
    rows = [task_row(uuid=f"u{i:03}", task_name=f"t{i}") for i in range(40)]
    ids = store.transact(lambda tx: tx.insert_tasks(rows))
    assert len(set(ids)) == 40
    got = store.transact(lambda tx: tx.tasks_by_ids(ids))
    assert [got[i]["uuid"] for i in ids] == [f"u{i:03}" for i in range(40)]
    assert got[ids[7]]["task_name"] == "t7" and got[ids[7]]["status"] == "QUEUED"


def test_insert_tasks_raises_duplicate_uuid_and_the_transaction_ends_cleanly(store, tasks):
    tasks.add(uuid="taken")

    def insert_then_clash(tx):
        tx.insert_tasks([task_row(uuid="fresh-1")])
        tx.insert_tasks([task_row(uuid="fresh-2"), task_row(uuid="taken")])

    with pytest.raises(DuplicateUuidError, match="already in use"):
        store.transact(insert_then_clash)
    # nothing of that transaction stayed, and the store's connection is usable again
    assert store.transact(lambda tx: tx.existing_uuids(["fresh-1", "fresh-2", "taken"])) == {
        "taken"}
    new = tasks.add(uuid="fresh-1")
    assert tasks.get(new)["uuid"] == "fresh-1"


def test_insert_tasks_duplicate_uuid_within_one_batch(store):
    with pytest.raises(DuplicateUuidError):
        store.transact(lambda tx: tx.insert_tasks([task_row(uuid="twice"), task_row(uuid="twice")]))
    assert store.transact(lambda tx: tx.existing_uuids(["twice"])) == set()


def test_insert_tasks_reports_only_a_uuid_clash_as_duplicate_uuid(store):
    bad = task_row(row_over={"task_name": None})  # NOT NULL violated; no uuid is taken
    with pytest.raises((sa.exc.IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError)
                       ) as caught:
        store.transact(lambda tx: tx.insert_tasks([bad]))
    assert not isinstance(caught.value, DuplicateUuidError)


def test_existing_uuids(store, tasks):
    rows = [task_row(uuid=f"e{i}") for i in range(1100)]  # more than one 500-uuid chunk
    store.transact(lambda tx: tx.insert_tasks(rows))
    asked = [f"e{i}" for i in range(0, 1100, 3)] + ["nope", "e0", "also-nope"]
    assert store.transact(lambda tx: tx.existing_uuids(asked)) == {
        f"e{i}" for i in range(0, 1100, 3)}
    assert store.transact(lambda tx: tx.existing_uuids(u for u in ["e5", "x"])) == {"e5"}
    assert store.transact(lambda tx: tx.existing_uuids([])) == set()


# -- tasks_by_ids, task_by_ref -----------------------------------------------------------------


def test_tasks_by_ids(store, tasks):
    ids = tasks.add_many(1200)  # more than two 500-id chunks
    wanted = [*ids[::7], ids[3], ids[3], 10**9]
    got = store.transact(lambda tx: tx.tasks_by_ids(wanted))
    assert set(got) == set(ids[::7]) | {ids[3]}
    row = got[ids[3]]
    assert row["id"] == ids[3] and row["function_name"] == "f"
    assert row["created_at"] == NOW and row["created_at"].tzinfo is not None
    assert row["stop_time"] is None and row["last_run_time"] is None
    assert store.transact(lambda tx: tx.tasks_by_ids([])) == {}
    assert store.transact(lambda tx: tx.tasks_by_ids(ids[:3], lock=True)).keys() == set(ids[:3])


def test_tasks_by_ids_lock_holds_the_rows_on_postgres(store, tasks, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite has no row locks (one writer at a time)")
    ids = tasks.add_many(4)
    other = open_store()

    def read(lock):
        return lambda tx: (tx.tasks_by_ids(ids[:2], lock=lock), lockable(other, ids))[1]

    assert store.transact(read(True)) == set(ids[2:])
    assert store.transact(read(False)) == set(ids)


def test_task_by_ref(store, tasks, open_store):
    tid = tasks.add(uuid="by-uuid")
    other = tasks.add(uuid="other")
    assert store.transact(lambda tx: tx.task_by_ref(tid, None))["uuid"] == "by-uuid"
    assert store.transact(lambda tx: tx.task_by_ref(None, "other"))["id"] == other
    assert store.transact(lambda tx: tx.task_by_ref(tid, "other"))["id"] == tid  # id wins
    assert store.transact(lambda tx: tx.task_by_ref(10**9, None)) is None
    assert store.transact(lambda tx: tx.task_by_ref(None, "missing")) is None
    row = store.transact(lambda tx: tx.task_by_ref(tid, None, lock=True))
    assert row["next_run_time"] == NOW and row["next_run_time"].tzinfo is not None
    if not store.is_sqlite:
        probe = open_store()
        held = store.transact(lambda tx: (tx.task_by_ref(None, "by-uuid", lock=True),
                                          lockable(probe, [tid, other]))[1])
        assert held == {other}


# -- list_tasks ---------------------------------------------------------------------------------


def test_list_tasks_filters_statuses_and_keyset_paging(store, tasks):
    main = [tasks.add(task_name=f"m{i}") for i in range(7)]
    side = tasks.add(group_name="side", task_name="s")
    g = tasks.add(function_name="g", task_name="g1")
    tasks.lease(main[1], "w1")
    tasks.lease(main[4], "w2", start=False)

    def ids(statuses=(), filters=None, before=None, limit=100):
        return [r["id"] for r in store.transact(
            lambda tx: tx.list_tasks(list(statuses), filters or {}, before, limit))]

    everything = sorted([*main, side, g], reverse=True)
    assert ids() == everything  # newest first
    assert ids(filters={"group_name": "side"}) == [side]
    assert ids(filters={"group_name": "main", "function_name": "g"}) == [g]
    assert ids(filters={"group_name": "", "task_name": "m3"}) == [main[3]]  # "" = no filter
    assert ids(filters={"assigned_worker_name": "w1"}) == [main[1]]
    assert ids(statuses=["RUNNING"]) == [main[1]]
    assert ids(statuses=["RUNNING", "ASSIGNED"]) == [main[4], main[1]]
    assert ids(statuses=["QUEUED"], filters={"group_name": "main"}) == sorted(
        [*main[:1], *main[2:4], *main[5:], g], reverse=True)
    pages, before = [], None
    while True:
        page = ids(before=before, limit=3)
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert pages == [everything[0:3], everything[3:6], everything[6:9]]
    assert ids(before=main[0]) == []
    row = store.transact(lambda tx: tx.list_tasks([], {"task_name": "m1"}, None, 1))[0]
    assert row["last_run_time"] == NOW and row["last_run_time"].tzinfo is not None


# -- apply ----------------------------------------------------------------------------------------


def test_apply_writes_values_and_status(store, tasks):
    tid = tasks.add()
    row = tasks.lease(tid, "w1")
    assert row["status"] == "RUNNING" and row["attempt"] == 1
    assert row["assigned_worker_name"] == "w1" and row["last_run_time"] == NOW
    store.transact(lambda tx: tx.apply([]))  # nothing to do


def test_apply_conflict_rolls_back_the_whole_transaction(store, tasks):
    a, b, c = tasks.add_many(3)
    tasks.lease(c, "w0", start=False)  # c is no longer QUEUED
    rows = store.transact(lambda tx: tx.tasks_by_ids([a, b, c]))

    def lease_all(tx):
        tx.insert_runs([{"task_id": a, "attempt": 1, "status": "RUNNING", "start_time": NOW,
                         "stop_time": None, "run_output": "", "run_result": None,
                         "traceback": "", "worker_name": "w"}])
        tx.apply([lifecycle.expire(rows[b])])  # another shape, applied first
        tx.apply([lifecycle.lease({**rows[t], "status": "QUEUED"}, "w1") for t in (a, c)])

    with pytest.raises(TransitionConflictError, match=rf"tasks {a}, {c}: 1 no longer"):
        store.transact(lease_all)
    after = store.transact(lambda tx: tx.tasks_by_ids([a, b, c]))
    assert [after[t]["status"] for t in (a, b, c)] == ["QUEUED", "QUEUED", "ASSIGNED"]
    assert after[a]["attempt"] == 0 and after[c]["assigned_worker_name"] == "w0"
    assert store.transact(lambda tx: tx.runs_of(a, latest_only=False)) == []


def test_apply_same_task_twice_in_one_batch_conflicts(store, tasks):
    tid = tasks.add()
    row = tasks.get(tid)
    tr = lifecycle.lease(row, "w1")
    with pytest.raises(TransitionConflictError):
        store.transact(lambda tx: tx.apply([tr, tr]))
    assert tasks.get(tid)["status"] == "QUEUED"


def test_apply_sends_one_executemany_per_shape(store, tasks, monkeypatch):
    ids = tasks.add_many(8)
    rows = store.transact(lambda tx: tx.tasks_by_ids(ids))
    leases = [lifecycle.lease(rows[t], "w1") for t in ids[:4]]  # 4 of one shape
    expiries = [lifecycle.expire(rows[t]) for t in ids[4:6]]  # another shape
    starts = [lifecycle.lease_and_start(rows[t], "w2", NOW) for t in ids[6:]]  # a third
    seen: list[tuple[bool, int]] = []

    class Spy:
        """The hot path's DB-API cursor, recording the task UPDATEs it is given."""

        def __init__(self, cur):
            self._cur = cur

        def execute(self, sql, params=()):
            if sql.lstrip().upper().startswith("UPDATE SCHEDULER_TASK"):
                seen.append((False, 1))
            return self._cur.execute(sql, params)

        def executemany(self, sql, params):
            params = list(params)
            if sql.lstrip().upper().startswith("UPDATE SCHEDULER_TASK"):
                seen.append((True, len(params)))
            return self._cur.executemany(sql, params)

        def __getattr__(self, name):
            return getattr(self._cur, name)

    real = Tx.cur
    monkeypatch.setattr(Tx, "cur", property(lambda tx: Spy(real.fget(tx))))
    store.transact(lambda tx: tx.apply([leases[0], expiries[0], *leases[1:], starts[0],
                                        expiries[1], starts[1]]))
    monkeypatch.undo()
    assert sorted(seen) == [(True, 2), (True, 2), (True, 4)]
    after = store.transact(lambda tx: tx.tasks_by_ids(ids))
    assert [after[t]["status"] for t in ids] == ["ASSIGNED"] * 4 + ["EXPIRED"] * 2 + [
        "RUNNING"] * 2
    assert {after[t]["attempt"] for t in ids[:4]} == {1}


def test_apply_fenced_by_attempt(store, tasks):
    a, b = tasks.add_many(2)
    for t in (a, b):
        tasks.lease(t, "w1")
    rows = store.transact(lambda tx: tx.tasks_by_ids([a, b]))
    good = lifecycle.finish(rows[a], lifecycle.RunStatus.COMPLETED, NOW)
    stale = dataclasses.replace(lifecycle.finish(rows[b], lifecycle.RunStatus.COMPLETED, NOW),
                                attempt=rows[b]["attempt"] - 1)
    with pytest.raises(TransitionConflictError, match=rf"tasks {a}, {b}: 1 no longer"):
        store.transact(lambda tx: tx.apply([good, stale]))
    assert tasks.get(a)["status"] == "RUNNING"  # the fenced miss took the good write with it
    store.transact(lambda tx: tx.apply([good]))
    assert tasks.get(a)["status"] == "COMPLETED"
    # an unfenced transition (attempt None) of the same shape ignores the attempt
    loose = Transition(b, TaskStatus.RUNNING, TaskStatus.COMPLETED, Event.COMPLETE, "test",
                       dict(good.values), None)
    store.transact(lambda tx: tx.apply([loose]))
    assert tasks.get(b)["status"] == "COMPLETED"


# -- set_stop_requested -----------------------------------------------------------------------


def test_set_stop_requested_only_on_the_running_attempt(store, tasks):
    running, assigned, queued = tasks.add_many(3)
    tasks.lease(running, "w1")
    tasks.lease(assigned, "w1", start=False)
    assert not store.transact(lambda tx: tx.set_stop_requested(running, 2))  # wrong attempt
    assert not store.transact(lambda tx: tx.set_stop_requested(assigned, 1))
    assert not store.transact(lambda tx: tx.set_stop_requested(queued, 0))
    assert not store.transact(lambda tx: tx.set_stop_requested(10**9, 1))
    assert not any(tasks.get(t)["stop_requested"] for t in (running, assigned, queued))
    assert store.transact(lambda tx: tx.set_stop_requested(running, 1))
    assert tasks.get(running)["stop_requested"] is True
    assert store.transact(lambda tx: tx.set_stop_requested(running, 1))  # again: still True


# -- due_tasks, next_due_time ------------------------------------------------------------------


def test_due_tasks_only_what_this_worker_may_claim(store, tasks):
    due = tasks.add(task_name="due")
    tasks.add(enabled=False)
    other_group = tasks.add(group_name="other")
    other_function = tasks.add(function_name="g")
    tasks.add(start_time=NOW + MINUTE)
    tasks.add(broadcast=True)  # a parent: the coordinator fans it out
    leased = tasks.add()
    tasks.lease(leased, "w0")
    mine = tasks.add(row_over={"target_worker_name": "w1", "broadcast_parent": 1})
    theirs = tasks.add(row_over={"target_worker_name": "w2", "broadcast_parent": 1})

    def due_ids(worker_name="w1", groups=("main",), functions=("f",), limit=10, now=NOW):
        return [r["id"] for r in store.transact(
            lambda tx: tx.due_tasks(list(groups), list(functions), now, limit, worker_name))]

    assert due_ids() == [due, mine]
    assert due_ids("w2") == [due, theirs]
    assert due_ids("") == [due]
    assert due_ids(limit=1) == [due]
    assert due_ids(groups=("main", "other"), functions=("f", "g"), worker_name="") == [
        due, other_group, other_function]
    assert due_ids(groups=()) == []
    assert due_ids(now=NOW - dt.timedelta(seconds=1)) == []
    row = store.transact(lambda tx: tx.due_tasks(["main"], ["f"], NOW, 1))[0]
    assert row["next_run_time"] == NOW and row["next_run_time"].tzinfo is not None

    def next_due(worker_name="w1", functions=("f",)):
        return store.transact(lambda tx: tx.next_due_time(["main"], list(functions), worker_name))

    assert next_due() == NOW
    assert next_due(functions=("h",)) is None
    store.transact(lambda tx: tx.apply([lifecycle.lease(r, "w1") for r in tx.due_tasks(
        ["main"], ["f"], NOW, 10, "w1")]))
    assert next_due() == NOW + MINUTE  # the future task is what remains for w1
    assert next_due("w2") == NOW  # w2's own child is still due


def test_due_tasks_locks_and_skips_locked_rows_on_postgres(store, tasks, open_store):
    if store.is_sqlite:
        pytest.skip("SQLite has no row locks (one writer at a time)")
    ids = tasks.add_many(6)
    other = open_store()

    def both(tx):
        mine = [r["id"] for r in tx.due_tasks(["main"], ["f"], NOW, 2)]
        theirs = other.transact(
            lambda tx2: [r["id"] for r in tx2.due_tasks(["main"], ["f"], NOW, 10)])
        return mine, theirs, lockable(other, ids)

    mine, theirs, free = store.transact(both)
    assert mine == ids[:2] and theirs == ids[2:]  # SKIP LOCKED: no wait, no overlap
    assert free == set(ids[2:])


def test_due_tasks_walk_each_groups_priorities_and_merge_groups(store, tasks):
    a_low = tasks.add(priority=1)
    b_top = tasks.add(group_name="b", priority=7)
    a_mid = tasks.add(priority=4)
    a_mid_later = tasks.add(priority=4, start_time=NOW - MINUTE)  # due earlier: first of its 4s
    tasks.add(priority=9, start_time=NOW + MINUTE)  # the top priority holds only future work
    b_low = tasks.add(group_name="b", priority=-3)

    def due_ids(groups, limit=10):
        return [r["id"] for r in store.transact(
            lambda tx: tx.due_tasks(list(groups), ["f"], NOW, limit, "w1"))]

    assert due_ids(["main"]) == [a_mid_later, a_mid, a_low]
    assert due_ids(["main", "b"]) == [b_top, a_mid_later, a_mid, a_low, b_low]
    assert due_ids(["b", "main", "b"], limit=2) == [b_top, a_mid_later]
    assert due_ids(["main"], limit=1) == [a_mid_later]
    # the earliest next_run_time over every priority and group, due or not
    assert store.transact(lambda tx: tx.next_due_time(["b"], ["f"], "w1")) == NOW
    later = NOW + dt.timedelta(hours=2)
    only_future = tasks.add(group_name="c", priority=2, start_time=later)
    tasks.add(group_name="c", priority=5, start_time=later + MINUTE)
    assert due_ids(["c"]) == []
    assert store.transact(lambda tx: tx.next_due_time(["c"], ["f"], "w1")) == later
    assert [r["id"] for r in store.transact(lambda tx: tx.due_tasks(
        ["c"], ["f"], later, 10, "w1"))] == [only_future]


def test_claim_reads_only_the_due_range(store, tasks):
    """Future-dated tasks are not read by a claim: SQLite's own step counter says so."""
    if store.is_sqlite is False:
        pytest.skip("counts steps with SQLite's VM progress handler")
    tasks.add_many(5)
    for i in range(2000):
        tasks.add(start_time=NOW + dt.timedelta(days=1, seconds=i), priority=i % 3)

    def steps(fn):
        def body(tx):
            raw = tx.conn.connection.driver_connection
            count = [0]

            def progress():
                count[0] += 1
                return 0
            raw.set_progress_handler(progress, 1)
            try:
                fn(tx)
            finally:
                raw.set_progress_handler(None, 1)
            return count[0]
        return store.transact(body)

    claim = steps(lambda tx: tx.due_tasks(["main"], ["f"], NOW, 10, "w1", False))
    empty = steps(lambda tx: tx.due_tasks(["main"], ["f"], NOW - MINUTE, 10, "w1", False))
    assert claim < 2000 and empty < 500, (claim, empty)  # a scan would take 2,000+ rows
