"""The two reads behind the metrics' queue gauges: counts of active tasks, the oldest due."""

from __future__ import annotations

import datetime as dt

from tests.store.helpers import NOW


def test_active_counts_are_by_group_and_status_and_skip_finished_tasks(store, tasks):
    tasks.add_many(3, group_name="a")
    b1, b2 = tasks.add_many(2, group_name="b")
    tasks.lease(b1, "w1", start=True)
    tasks.lease(b2, "w1", start=False)
    tasks.add({"status": "COMPLETED"}, group_name="a")  # finished: not counted
    counts = store.transact(lambda tx: tx.active_counts())
    assert counts[("a", "QUEUED")] == 3
    assert counts[("b", "RUNNING")] == 1 and counts[("b", "ASSIGNED")] == 1
    assert all(status in ("QUEUED", "ASSIGNED", "RUNNING") for _, status in counts)


def test_oldest_due_is_the_earliest_enabled_queued_task_due_by_now(store, tasks):
    early = NOW - dt.timedelta(minutes=10)
    tasks.add(group_name="a", next_run_time=early)
    tasks.add(group_name="a", next_run_time=NOW - dt.timedelta(minutes=1))
    tasks.add(group_name="a", next_run_time=early - dt.timedelta(hours=1), enabled=False)
    tasks.add(group_name="b", next_run_time=NOW + dt.timedelta(hours=1))  # not due yet
    oldest = store.transact(lambda tx: tx.oldest_due(NOW))
    assert oldest == {"a": early}
