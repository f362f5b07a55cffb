"""Lifecycle decisions on the fault paths, not covered by test_lifecycle.py.

Consecutive lost workers only (finish resets lost_count), a pending stop winning over a
failure or the backstop's timeout, abandon (a poisoned outcome), orphaned broadcast
children, and the lose_worker cap's effects.
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.lifecycle import Event, RunStatus, TaskStatus

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def task(**over):
    base = {"id": 7, "status": "RUNNING", "attempt": 3, "times_run": 0, "times_failed": 0,
            "repeats": 1, "retry_failed": 0, "period": 60, "prevent_drift": False,
            "cronline": None, "start_time": T0, "next_run_time": T0, "stop_time": None,
            "last_run_time": T0, "lost_count": 0, "stop_requested": False,
            "assigned_worker_name": "w1", "target_worker_name": "", "enabled": True}
    return {**base, **over}


def after(row, tr):
    return {**row, **tr.values, "status": tr.target.value}


# -- lost_count counts consecutive losses only -----------------------------------------------


@pytest.mark.parametrize(("outcome", "over"), [
    (RunStatus.COMPLETED, {}),
    (RunStatus.COMPLETED, {"repeats": 0}),
    (RunStatus.FAILED, {}),
    (RunStatus.FAILED, {"retry_failed": -1}),
    (RunStatus.TIMEOUT, {}),
    (RunStatus.STOPPED, {}),
    (RunStatus.FAILED, {"stop_requested": True}),
])
def test_any_reported_outcome_resets_lost_count(outcome, over):
    tr = lifecycle.finish(task(lost_count=2, **over), outcome, T0)
    assert tr.values["lost_count"] == 0
    assert tr.values["stop_requested"] is False


def test_a_periodic_task_survives_unrelated_losses_over_its_life():
    cap = 2
    t = task(repeats=0, retry_failed=0)
    for _life in range(5):  # lose, lose, complete: never more than `cap` in a row
        for _ in range(cap):
            tr = lifecycle.lose_worker(t, cap)
            assert tr.target is TaskStatus.QUEUED
            t = {**after(t, tr), "status": "RUNNING"}  # leased and started again
        tr = lifecycle.finish(t, RunStatus.COMPLETED, T0)
        assert tr.target is TaskStatus.QUEUED and tr.values["lost_count"] == 0
        t = {**after(t, tr), "status": "RUNNING"}
    assert t["times_run"] == 5 and t["times_failed"] == 0
    for _ in range(cap):
        t = {**after(t, lifecycle.lose_worker(t, cap)), "status": "RUNNING"}
    assert lifecycle.lose_worker(t, cap).target is TaskStatus.FAILED  # the third in a row


# -- a pending stop wins ------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [RunStatus.FAILED, RunStatus.TIMEOUT])
@pytest.mark.parametrize("retry_failed", [0, 3, -1])
def test_a_pending_stop_turns_failure_or_timeout_into_stopped(outcome, retry_failed):
    t = task(stop_requested=True, retry_failed=retry_failed, times_failed=1, lost_count=1)
    tr = lifecycle.finish(t, outcome, T0)
    assert (tr.source, tr.target, tr.event) == (
        TaskStatus.RUNNING, TaskStatus.STOPPED, lifecycle.OUTCOME_EVENTS[outcome])
    # next_run_time is written at every report, as web2py does (one period after T0)
    assert tr.values == {"stop_requested": False, "lost_count": 0, "enabled": False,
                         "next_run_time": T0 + dt.timedelta(seconds=60)}
    assert tr.attempt == 3  # fenced like every worker write
    assert "stop was pending" in tr.reason


def test_without_a_pending_stop_failure_and_timeout_retry_or_fail():
    assert lifecycle.finish(task(retry_failed=1), RunStatus.FAILED, T0).target \
        is TaskStatus.QUEUED
    assert lifecycle.finish(task(), RunStatus.TIMEOUT, T0).target is TaskStatus.TIMEOUT


def test_a_pending_stop_does_not_undo_a_success():
    tr = lifecycle.finish(task(stop_requested=True), RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.COMPLETED and tr.values["times_run"] == 1
    assert tr.values["stop_requested"] is False
    tr = lifecycle.finish(task(stop_requested=True, repeats=0), RunStatus.COMPLETED, T0)
    assert tr.target is TaskStatus.QUEUED and tr.values["stop_requested"] is False


def test_a_pending_stop_wins_over_a_lost_worker():
    tr = lifecycle.lose_worker(task(stop_requested=True, lost_count=5), max_lost_requeues=1)
    assert tr.target is TaskStatus.STOPPED
    assert tr.values == {"assigned_worker_name": "", "stop_requested": False, "enabled": False}
    # an unstarted lease is only handed back, whatever was asked
    tr = lifecycle.lose_worker(task(status="ASSIGNED", stop_requested=True), 1)
    assert tr.target is TaskStatus.QUEUED


# -- lose_worker: the cap ------------------------------------------------------------------------


def test_lose_worker_past_the_cap_fails_counting_a_failure():
    tr = lifecycle.lose_worker(task(lost_count=3, times_failed=2), max_lost_requeues=3)
    assert tr.target is TaskStatus.FAILED and tr.event is Event.LOSE_WORKER
    assert tr.values == {"assigned_worker_name": "", "stop_requested": False, "lost_count": 4,
                         "times_failed": 3}
    assert tr.reason == "worker lost 4 times; cap is 3"
    assert tr.attempt is None  # decided from the locked row: guarded by status only


def test_lose_worker_below_the_cap_leaves_times_run_and_times_failed_alone():
    tr = lifecycle.lose_worker(task(lost_count=0, times_failed=2, times_run=4), 3)
    assert tr.target is TaskStatus.QUEUED
    assert tr.values == {"assigned_worker_name": "", "stop_requested": False, "lost_count": 1}


def test_lose_worker_with_a_zero_cap_fails_at_the_first_loss():
    assert lifecycle.lose_worker(task(), max_lost_requeues=0).target is TaskStatus.FAILED


def test_lose_worker_refuses_a_task_that_holds_no_lease():
    for status in ("QUEUED", "COMPLETED", "STOPPED"):
        with pytest.raises(lifecycle.IllegalTransitionError):
            lifecycle.lose_worker(task(status=status), 3)


# -- abandon ------------------------------------------------------------------------------


def test_abandon_fails_the_run_with_the_reason():
    tr = lifecycle.abandon(task(times_failed=1, stop_requested=True, retry_failed=-1),
                           "CoordinatorError: boom")
    assert (tr.source, tr.target, tr.event) == (TaskStatus.RUNNING, TaskStatus.FAILED,
                                                Event.ABANDON)
    assert tr.values == {"stop_requested": False, "times_failed": 2}  # no retry, whatever
    assert tr.attempt == 3 and tr.reason == "CoordinatorError: boom"


def test_abandon_cuts_a_long_reason():
    assert len(lifecycle.abandon(task(), "x" * 2000).reason) == 500


@pytest.mark.parametrize("status", ["QUEUED", "ASSIGNED", "COMPLETED"])
def test_abandon_only_from_running(status):
    with pytest.raises(lifecycle.IllegalTransitionError):
        lifecycle.abandon(task(status=status), "why")


# -- orphan_child ------------------------------------------------------------------------------


def test_orphan_child_expires_a_queued_child_of_a_gone_worker():
    child = task(status="QUEUED", target_worker_name="gone", assigned_worker_name="")
    tr = lifecycle.orphan_child(child)
    assert (tr.source, tr.target, tr.event) == (TaskStatus.QUEUED, TaskStatus.EXPIRED,
                                                Event.EXPIRE)
    assert tr.values == {"assigned_worker_name": ""}
    assert tr.reason == "target worker gone is gone" and tr.attempt is None


@pytest.mark.parametrize("status", ["RUNNING", "EXPIRED"])
def test_orphan_child_only_from_queued(status):
    with pytest.raises(lifecycle.IllegalTransitionError):
        lifecycle.orphan_child(task(status=status, target_worker_name="gone"))
