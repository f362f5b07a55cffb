"""The housekeeping transitions of coordinator/lifecycle.py: requeue, enable, edit, delete."""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import lifecycle
from taskgrid.coordinator.lifecycle import Event, IllegalTransitionError, TaskStatus

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
FINISHED = sorted(lifecycle.TERMINAL_TASK_STATUSES)
UNFINISHED = [TaskStatus.QUEUED, TaskStatus.ASSIGNED, TaskStatus.RUNNING]


def task(**over):
    base = {"id": 7, "status": "FAILED", "attempt": 4, "times_run": 2, "times_failed": 3,
            "lost_count": 1, "stop_time": None, "enabled": True, "stop_requested": False,
            "start_time": T0, "next_run_time": T0}
    return {**base, **over}


@pytest.mark.parametrize("status", FINISHED)
def test_requeue_resets_counters_keeps_the_attempt_and_is_due_now(status):
    tr = lifecycle.requeue(task(status=status.value, enabled=False), T0)
    assert (tr.source, tr.target, tr.event) == (status, TaskStatus.QUEUED, Event.REQUEUE)
    v = tr.values
    assert (v["times_run"], v["times_failed"], v["lost_count"]) == (0, 0, 0)
    assert "attempt" not in v  # the lease fencing token only ever grows
    assert v["next_run_time"] == T0 and v["enabled"] is True and v["finished_at"] is None


def test_requeue_can_keep_the_counters():
    v = lifecycle.requeue(task(), T0, keep_counters=True).values
    assert not {"times_run", "times_failed", "lost_count"} & set(v)


def test_requeue_unsets_a_stop_time_already_passed_only():
    past, future = T0 - dt.timedelta(seconds=1), T0 + dt.timedelta(hours=1)
    assert lifecycle.requeue(task(stop_time=past), T0).values["stop_time"] is None
    assert "stop_time" not in lifecycle.requeue(task(stop_time=future), T0).values


@pytest.mark.parametrize("status", UNFINISHED)
def test_only_finished_tasks_are_requeued_or_deleted(status):
    with pytest.raises(IllegalTransitionError):
        lifecycle.requeue(task(status=status.value), T0)
    assert not lifecycle.may_delete(task(status=status.value))


@pytest.mark.parametrize("status", FINISHED)
def test_finished_tasks_may_be_deleted(status):
    assert lifecycle.may_delete(task(status=status.value))


def test_enable_and_disable_apply_to_queued_tasks_only():
    tr = lifecycle.set_enabled(task(status="QUEUED", enabled=False), True)
    assert tr.values == {"enabled": True} and tr.event is Event.ENABLE
    assert lifecycle.set_enabled(task(status="QUEUED"), False).event is Event.DISABLE
    for status in ("RUNNING", "ASSIGNED", "COMPLETED"):
        with pytest.raises(IllegalTransitionError):
            lifecycle.set_enabled(task(status=status), True)


def test_edit_moves_the_first_run_with_start_time_until_the_task_has_run():
    later = T0 + dt.timedelta(hours=1)
    fresh = lifecycle.edit(task(status="QUEUED", times_run=0), {"start_time": later})
    assert fresh.values == {"start_time": later, "next_run_time": later}
    cron = lifecycle.edit(task(status="QUEUED", times_run=0), {"start_time": later},
                          first_run=later + dt.timedelta(minutes=5))
    assert cron.values["next_run_time"] == later + dt.timedelta(minutes=5)
    ran = lifecycle.edit(task(status="QUEUED", times_run=1), {"start_time": later})
    assert ran.values == {"start_time": later}
    given = lifecycle.edit(task(status="QUEUED", times_run=0),
                           {"start_time": later, "next_run_time": T0})
    assert given.values["next_run_time"] == T0


def test_edit_refuses_fields_that_are_not_editable_and_unqueued_tasks():
    with pytest.raises(IllegalTransitionError, match="not editable: function_name"):
        lifecycle.edit(task(status="QUEUED"), {"function_name": "x"})
    with pytest.raises(IllegalTransitionError):
        lifecycle.edit(task(status="RUNNING"), {"priority": 1})
    assert lifecycle.edit(task(status="QUEUED"), {"priority": 5}).values == {"priority": 5}
