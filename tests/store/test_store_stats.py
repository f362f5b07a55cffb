"""The dashboards' reads: counts by status and group, ends per minute, the oldest due task,
a job's edges."""

from __future__ import annotations

import datetime as dt

from taskgrid.coordinator import lifecycle
from tests.store.helpers import NOW

MINUTE = dt.timedelta(minutes=1)


def end(store, tasks, task_id, outcome, at):
    tasks.lease(task_id, "w")
    store.clock = lambda: at
    tasks.move(task_id, lambda r: lifecycle.finish(r, outcome, NOW, at))


def test_counts_by_status_and_group(store, tasks):
    a, b, _ = tasks.add_many(3)
    tasks.add(group_name="other")
    end(store, tasks, a, lifecycle.RunStatus.COMPLETED, NOW)
    end(store, tasks, b, lifecycle.RunStatus.FAILED, NOW)
    got = sorted(store.transact(lambda tx: tx.count_by_status_and_group()))
    assert got == [("COMPLETED", "main", 1), ("FAILED", "main", 1), ("QUEUED", "main", 1),
                   ("QUEUED", "other", 1)]


def test_ends_per_minute_in_utc_text_by_status(store, tasks):
    a, b, c = tasks.add_many(3)
    end(store, tasks, a, lifecycle.RunStatus.COMPLETED, NOW + dt.timedelta(seconds=10))
    end(store, tasks, b, lifecycle.RunStatus.COMPLETED, NOW + dt.timedelta(seconds=50))
    end(store, tasks, c, lifecycle.RunStatus.FAILED, NOW + MINUTE + dt.timedelta(seconds=1))
    got = sorted(store.transact(lambda tx: tx.ended_per_minute(NOW)))
    assert got == [("2026-01-01 00:00", "COMPLETED", 2), ("2026-01-01 00:01", "FAILED", 1)]
    assert store.transact(lambda tx: tx.ended_per_minute(NOW + 2 * MINUTE)) == []


def test_the_oldest_due_task_is_enabled_queued_and_due(store, tasks):
    late = tasks.add(start_time=NOW - 2 * MINUTE)
    tasks.add(start_time=NOW - 3 * MINUTE, enabled=False)  # disabled: never due
    tasks.add(start_time=NOW + MINUTE)  # not due yet
    assert store.transact(lambda tx: tx.oldest_due_task(NOW))["id"] == late
    assert store.transact(lambda tx: tx.oldest_due_task(NOW - 5 * MINUTE)) is None


def test_a_job_is_found_by_name_or_by_any_of_its_tasks(store, tasks):
    a, b, c, alone = tasks.add_many(4)
    store.transact(lambda tx: tx.insert_deps([
        {"job_name": "j", "task_parent": b, "task_child": a, "can_visit": True},
        {"job_name": "j", "task_parent": c, "task_child": b, "can_visit": False}]))
    assert store.transact(lambda tx: tx.job_of(a)) == "j"
    assert store.transact(lambda tx: tx.job_of(c)) == "j"
    assert store.transact(lambda tx: tx.job_of(alone)) is None
    assert store.transact(lambda tx: tx.job_edges("j", 10)) == [
        {"task_parent": b, "task_child": a, "can_visit": True},
        {"task_parent": c, "task_child": b, "can_visit": False}]
    assert store.transact(lambda tx: tx.job_edges("j", 1)) == [
        {"task_parent": b, "task_child": a, "can_visit": True}]
    assert store.transact(lambda tx: tx.job_edges("none", 10)) == []
