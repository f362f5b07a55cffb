"""The housekeeping queries: selecting tasks by ref or filter, deleting, the purge's batch."""

from __future__ import annotations

import datetime as dt

from taskgrid.coordinator import lifecycle
from tests.store.helpers import NOW, is_postgres, lockable, run_row

HOUR = dt.timedelta(hours=1)


def finish(store, tasks, task_id, at):
    """Run the task and end it COMPLETED with the store's clock at `at`."""
    tasks.lease(task_id, "w")
    store.clock = lambda: at
    tasks.move(task_id, lambda r: lifecycle.finish(r, lifecycle.RunStatus.COMPLETED, NOW, at))


def test_a_transition_into_a_terminal_status_stamps_finished_at(store, tasks):
    a, b = tasks.add_many(2)
    finish(store, tasks, a, NOW + HOUR)
    assert tasks.get(a)["finished_at"] == NOW + HOUR
    assert tasks.get(b)["finished_at"] is None
    again = tasks.move(a, lifecycle.requeue, NOW + 2 * HOUR)
    assert again["status"] == "QUEUED" and again["finished_at"] is None


def test_select_tasks_by_ref_or_by_filter_in_id_order_and_pages(store, tasks):
    ids = tasks.add_many(5)
    other = tasks.add(group_name="other")
    uuid = tasks.get(ids[1])["uuid"]
    got = store.transact(lambda tx: tx.select_tasks([ids[0], uuid, other], ["QUEUED"], {}, None,
                                                    10))
    assert [r["id"] for r in got] == [ids[0], ids[1], other]
    finish(store, tasks, ids[2], NOW + HOUR)
    page = store.transact(lambda tx: tx.select_tasks([], ["QUEUED"], {"group_name": "main"},
                                                     None, 2))
    assert [r["id"] for r in page] == [ids[0], ids[1]]
    rest = store.transact(lambda tx: tx.select_tasks([], ["QUEUED"], {"group_name": "main"},
                                                     None, 10, after_id=ids[1]))
    assert [r["id"] for r in rest] == [ids[3], ids[4]]
    old = store.transact(lambda tx: tx.select_tasks([], ["COMPLETED"], {}, NOW + 2 * HOUR, 10))
    assert [r["id"] for r in old] == [ids[2]]
    assert store.transact(lambda tx: tx.select_tasks([], ["COMPLETED"], {}, NOW, 10)) == []


def test_select_tasks_locks_the_rows_on_postgresql(store, tasks, open_store):
    ids = tasks.add_many(2)
    if not is_postgres(store):
        return  # SQLite: one writer at a time, nothing to lock
    other = open_store()
    seen: list[set[int]] = []

    def body(tx):
        tx.select_tasks([ids[0]], [], {}, None, 1)
        seen.append(lockable(other, ids))
    store.transact(body)
    assert seen == [{ids[1]}]


def test_delete_tasks_takes_runs_output_and_edges_with_it(store, tasks):
    a, b, c = tasks.add_many(3)
    tasks.lease(a, "w")
    [run_id] = store.transact(lambda tx: tx.insert_runs([run_row(a, 1)]))
    store.transact(lambda tx: tx.insert_chunks([{"run_id": run_id, "seq": 1, "data": "x",
                                                 "clear": False}]))
    store.transact(lambda tx: tx.insert_deps([{"job_name": "j", "task_parent": b,
                                               "task_child": a, "can_visit": False}]))
    assert store.transact(lambda tx: tx.delete_tasks([a, 10**9])) == 1
    assert store.transact(lambda tx: tx.tasks_by_ids([a, b, c])).keys() == {b, c}
    assert store.transact(lambda tx: tx.runs_of(a, latest_only=False)) == []
    assert store.transact(lambda tx: tx.chunks([run_id])) in ({}, {run_id: []})
    assert store.transact(lambda tx: tx.unmet_prerequisites(b)) == []
    assert store.transact(lambda tx: tx.delete_tasks([])) == 0


def test_the_purge_batch_is_the_oldest_finished_first(store, tasks):
    ids = tasks.add_many(4)
    for i, task_id in enumerate(ids[:3]):
        finish(store, tasks, task_id, NOW + (3 - i) * HOUR)  # the last finished first
    assert store.transact(lambda tx: tx.earliest_finished()) == NOW + HOUR
    batch = store.transact(lambda tx: tx.finished_before(NOW + 3 * HOUR, 10))
    assert batch == [ids[2], ids[1]]
    assert store.transact(lambda tx: tx.finished_before(NOW + 10 * HOUR, 1)) == [ids[2]]
    assert store.transact(lambda tx: tx.task_statuses([ids[0], ids[3], 10**9])) == {
        ids[0]: "COMPLETED", ids[3]: "QUEUED"}
