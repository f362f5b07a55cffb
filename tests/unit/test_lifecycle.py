"""The decision functions of coordinator/lifecycle.py: web2py's counters and edges."""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.lifecycle import Event, RunStatus, TaskStatus, WorkerStatus

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def task(**over):
    base = {"id": 7, "status": "RUNNING", "attempt": 1, "times_run": 0, "times_failed": 0,
            "repeats": 1, "retry_failed": 0, "period": 60, "prevent_drift": False,
            "cronline": None, "start_time": T0, "next_run_time": T0, "stop_time": None,
            "last_run_time": T0, "lost_count": 0, "stop_requested": False}
    return {**base, **over}


def test_success_completes_and_counts_run():
    tr = lifecycle.finish(task(), RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.COMPLETED
    assert tr.values["times_run"] == 1 and tr.values["times_failed"] == 0
    assert tr.attempt == 1 and tr.source is TaskStatus.RUNNING


def test_success_with_repeats_left_requeues_one_period_after_start():
    tr = lifecycle.finish(task(repeats=2), RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.QUEUED
    assert tr.values["next_run_time"] == T0 + dt.timedelta(seconds=60)


def test_repeats_zero_repeats_forever():
    tr = lifecycle.finish(task(repeats=0, times_run=99), RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.QUEUED and tr.values["times_run"] == 100


def test_next_run_after_stop_time_expires():
    tr = lifecycle.finish(task(repeats=3, stop_time=T0 + dt.timedelta(seconds=30)),
                          RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.EXPIRED and tr.values["times_run"] == 1


def test_failure_without_retry_fails_and_counts():
    tr = lifecycle.finish(task(), RunStatus.FAILED, T0)
    assert tr.target is TaskStatus.FAILED and tr.values["times_failed"] == 1
    assert "times_run" not in tr.values


@pytest.mark.parametrize(("retry_failed", "times_failed", "expected"), [
    (1, 0, TaskStatus.QUEUED), (1, 1, TaskStatus.FAILED), (2, 1, TaskStatus.QUEUED),
    (-1, 50, TaskStatus.QUEUED), (0, 0, TaskStatus.FAILED),
])
def test_retry_failed_counts_like_web2py(retry_failed, times_failed, expected):
    tr = lifecycle.finish(task(retry_failed=retry_failed, times_failed=times_failed),
                          RunStatus.FAILED, T0)
    assert tr.target is expected
    assert tr.values["times_failed"] == times_failed + 1


def test_timeout_without_retry_ends_timeout():
    assert lifecycle.finish(task(), RunStatus.TIMEOUT, T0).target is TaskStatus.TIMEOUT
    assert lifecycle.finish(task(retry_failed=1), RunStatus.TIMEOUT, T0).target \
        is TaskStatus.QUEUED


def test_failing_repeating_task_ends_failed_with_repeats_left():
    assert lifecycle.finish(task(repeats=3), RunStatus.FAILED, T0).target is TaskStatus.FAILED


def test_stop_consumes_no_retry_and_disables():
    tr = lifecycle.finish(task(retry_failed=5), RunStatus.STOPPED, T0)
    assert tr.target is TaskStatus.STOPPED and tr.values["enabled"] is False
    assert "times_failed" not in tr.values


def test_web2py_fail_fail_succeed_twice_sequence():
    """repeats=2, retry_failed=2: F F S F F S -> 6 runs, COMPLETED, times_run 2."""
    t = task(repeats=2, retry_failed=2, period=0)
    outcomes = [RunStatus.FAILED, RunStatus.FAILED, RunStatus.COMPLETED,
                RunStatus.FAILED, RunStatus.FAILED, RunStatus.COMPLETED]
    for outcome in outcomes:
        assert t["status"] == TaskStatus.RUNNING
        tr = lifecycle.finish(t, outcome, T0)
        t = {**t, **tr.values, "status": tr.target.value}
        if t["status"] == TaskStatus.QUEUED:
            t["status"] = TaskStatus.RUNNING.value
    assert t["status"] == TaskStatus.COMPLETED
    assert t["times_run"] == 2 and t["times_failed"] == 0


def test_lose_worker_requeues_until_cap_then_fails():
    tr = lifecycle.lose_worker(task(lost_count=2), max_lost_requeues=3)
    assert tr.target is TaskStatus.QUEUED and tr.values["lost_count"] == 3
    assert tr.values["assigned_worker_name"] == ""
    tr = lifecycle.lose_worker(task(lost_count=3), max_lost_requeues=3)
    assert tr.target is TaskStatus.FAILED


def test_lose_worker_of_unstarted_lease_does_not_count():
    tr = lifecycle.lose_worker(task(status="ASSIGNED", lost_count=3), max_lost_requeues=3)
    assert tr.target is TaskStatus.QUEUED and "lost_count" not in tr.values


def test_lease_and_start_bumps_attempt_and_sets_last_run_time():
    tr = lifecycle.lease_and_start(task(status="QUEUED", attempt=4), "w1", T0)
    assert (tr.source, tr.target) == (TaskStatus.QUEUED, TaskStatus.RUNNING)
    assert tr.values == {"attempt": 5, "assigned_worker_name": "w1", "last_run_time": T0}


def test_illegal_edge_is_refused():
    with pytest.raises(lifecycle.IllegalTransitionError):
        lifecycle.finish(task(status="COMPLETED"), RunStatus.COMPLETED, T0)
    with pytest.raises(lifecycle.IllegalTransitionError):
        lifecycle.stop_waiting(task(status="RUNNING"), T0)
    assert not lifecycle.is_legal(TaskStatus.EXPIRED, Event.LEASE)


def test_terminal_statuses_leave_only_by_requeue_or_delete():
    for source, event in lifecycle.TASK_TRANSITIONS:
        if source in lifecycle.TERMINAL_TASK_STATUSES:
            assert event in (lifecycle.Event.REQUEUE, lifecycle.Event.DELETE)
    for status in lifecycle.TERMINAL_TASK_STATUSES:
        assert lifecycle.is_legal(status, lifecycle.Event.REQUEUE)
        assert lifecycle.is_legal(status, lifecycle.Event.DELETE)


def test_run_record_dropped_only_for_silent_none():
    assert lifecycle.close_run(RunStatus.COMPLETED, T0, "null", "", "").delete
    assert not lifecycle.close_run(RunStatus.COMPLETED, T0, "null", "", "hi\n").delete
    assert not lifecycle.close_run(RunStatus.COMPLETED, T0, "3", "", "").delete
    assert not lifecycle.close_run(RunStatus.STOPPED, T0, None, "", "").delete


def test_worker_commands_never_revive_terminate_or_kill():
    W = WorkerStatus
    assert lifecycle.change_worker_status(W.ACTIVE, W.DISABLED)
    assert lifecycle.change_worker_status(W.DISABLED, W.ACTIVE)
    assert lifecycle.change_worker_status(W.TERMINATE, W.KILL)
    for wanted in (W.ACTIVE, W.DISABLED):
        assert not lifecycle.change_worker_status(W.TERMINATE, wanted)
        assert not lifecycle.change_worker_status(W.KILL, wanted)
