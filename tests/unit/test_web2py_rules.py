"""Two web2py rules a black-box check found missing: reversed cron ranges, and next_run_time
written at every report, even the one that ends the task.

1. web2py's cron parser expands a range whose start is past its end (`5-1`) to nothing and
   rejects the line; croniter would wrap it round the field's end. A queued task with such a
   line is a field error on `cronline`.
2. web2py computes next_run_time when a run is picked up (period after the run's start, the
   prevent_drift grid, or the next cron match) and writes it at every report: success or
   failure, whatever status follows (COMPLETED, EXPIRED, FAILED, TIMEOUT, STOPPED too).
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import lifecycle, timing
from taskgrid.coordinator.lifecycle import RunStatus, TaskStatus
from taskgrid.coordinator.validation import cron_problem, validate_task

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)

# -- 1. reversed cron ranges -------------------------------------------------------------------

REVERSED = [
    ("30-5 * * * *", "30-5"),  # minute
    ("* 23-1 * * *", "23-1"),  # hour
    ("* * 5-1 * *", "5-1"),  # day of month
    ("* * * 12-1 *", "12-1"),  # month
    ("* * * * 5-1", "5-1"),  # day of week
    ("30-5/2 * * * *", "30-5/2"),  # with a step
    ("* 23-1/3 * * *", "23-1/3"),
    ("* * 5-1/2 * *", "5-1/2"),
    ("* * * 12-1/2 *", "12-1/2"),
    ("* * * * 5-1/2", "5-1/2"),
    ("* * * dec-jan *", "dec-jan"),  # names, as web2py maps them to numbers
    ("* * * DEC-JAN *", "dec-jan"),  # case-insensitive; web2py's message is lowercased
    ("* * * * fri-mon", "fri-mon"),
    ("* * * * sat-sun", "sat-sun"),  # sun is 0 in web2py
    ("* * * * fri-mon/2", "fri-mon/2"),
    ("* * * * 7-0", "7-0"),
    ("1,5-1 * * * *", "1,5-1"),  # inside a list
    ("0 9 * * 1,5-1", "1,5-1"),
]

FORWARD = ["0-59 * * * *", "5-5 * * * *", "* 0-23/2 * * *", "* * 1-31 * *", "* * * 1-12 *",
           "* * * * 0-7", "* * * * 6-7", "* * * * sun-thu", "* * * jan-jun *",
           "0 0 1 jan-mar/2 *", "* * * * mon-fri/2", "*/5 * * * *", "5/10 * * * *",
           "0 9 * * 1,3-5", "30 23 L * *", "@daily"]


@pytest.mark.parametrize(("line", "field"), REVERSED)
def test_reversed_range_is_found(line, field):
    assert timing.reversed_range(line) == field


@pytest.mark.parametrize(("line", "field"), REVERSED)
def test_reversed_range_is_invalid_with_web2py_message(line, field):
    assert timing.cron_error(line) == f"Invalid cron value ({field})"
    assert cron_problem(line) == f"Invalid cron value ({field})"


@pytest.mark.parametrize(("line", "field"), REVERSED)
def test_queueing_a_reversed_range_is_a_cronline_field_error(line, field):
    row, errors = validate_task({"function_name": "f", "cronline": line}, {}, T0)
    assert row is None
    assert errors == {"cronline": f"Invalid cron value ({field})"}


@pytest.mark.parametrize("line", FORWARD)
def test_forward_ranges_are_still_accepted(line):
    assert timing.reversed_range(line) is None
    assert cron_problem(line) is None
    row, errors = validate_task({"function_name": "f", "cronline": line}, {}, T0)
    assert errors == {} and row is not None


def test_reversed_range_leaves_other_shapes_to_croniter():
    assert timing.reversed_range("* *") is None  # field count: cron_problem's message
    assert timing.reversed_range("* * * * * *") is None
    assert timing.reversed_range("@hourly") is None
    assert timing.reversed_range("* * * * xyz-mon") is None  # croniter rejects the name
    assert cron_problem("* * * * xyz-mon")


# -- 2. next_run_time at every report ----------------------------------------------------------


def task(**over):
    base = {"id": 7, "status": "RUNNING", "attempt": 1, "times_run": 0, "times_failed": 0,
            "repeats": 1, "retry_failed": 0, "period": 60, "prevent_drift": False,
            "cronline": None, "start_time": T0, "next_run_time": T0, "stop_time": None,
            "last_run_time": T0, "lost_count": 0, "stop_requested": False,
            "retry_delay": 0, "retry_backoff": 1, "retry_delay_max": 0, "retry_jitter": 0}
    return {**base, **over}


#: (task fields, outcome, the status that ends the task)
ENDINGS = [
    ({}, RunStatus.COMPLETED, TaskStatus.COMPLETED),  # the last repeat
    ({"repeats": 3, "times_run": 2}, RunStatus.COMPLETED, TaskStatus.COMPLETED),
    ({"repeats": 0, "stop_time": T0 + 30 * S}, RunStatus.COMPLETED, TaskStatus.EXPIRED),
    ({}, RunStatus.FAILED, TaskStatus.FAILED),  # no retry left
    ({"retry_failed": 2, "times_failed": 2}, RunStatus.FAILED, TaskStatus.FAILED),
    ({"repeats": 3}, RunStatus.FAILED, TaskStatus.FAILED),
    ({}, RunStatus.TIMEOUT, TaskStatus.TIMEOUT),
    ({"retry_failed": 1, "times_failed": 1}, RunStatus.TIMEOUT, TaskStatus.TIMEOUT),
    ({}, RunStatus.STOPPED, TaskStatus.STOPPED),  # web2py: the failure path, next_run_time too
    ({"retry_failed": -1}, RunStatus.STOPPED, TaskStatus.STOPPED),
    ({"stop_requested": True, "retry_failed": 3}, RunStatus.FAILED, TaskStatus.STOPPED),
    ({"stop_requested": True}, RunStatus.TIMEOUT, TaskStatus.STOPPED),
    # retry_delay only decides the time of a retry; a task that ends gets web2py's value
    ({"retry_delay": 30}, RunStatus.FAILED, TaskStatus.FAILED),
]


@pytest.mark.parametrize(("over", "outcome", "ending"), ENDINGS)
def test_a_run_that_ends_the_task_writes_next_run_time_one_period_after_its_start(
        over, outcome, ending):
    start = T0 + 90 * S
    tr = lifecycle.finish(task(**over), outcome, start, now=start + 5 * S)
    assert tr.target is ending
    assert tr.values["next_run_time"] == start + 60 * S


@pytest.mark.parametrize(("over", "outcome", "ending"), ENDINGS)
def test_next_run_time_of_an_ending_run_follows_the_prevent_drift_grid(over, outcome, ending):
    anchor = T0 - 60 * S  # period 7: the run at anchor+65 s -> the slot at anchor+70 s
    t = task(**{**over, "period": 7, "prevent_drift": True, "start_time": anchor})
    if "stop_time" in over:
        t["stop_time"] = anchor + 66 * S
    tr = lifecycle.finish(t, outcome, anchor + 65 * S)
    assert tr.target is ending
    assert tr.values["next_run_time"] == anchor + 70 * S


@pytest.mark.parametrize(("over", "outcome", "ending"), ENDINGS)
def test_next_run_time_of_an_ending_run_is_the_cron_match_after_its_start(
        over, outcome, ending):
    start = T0 + dt.timedelta(minutes=3, seconds=20, microseconds=5)  # 12:03:20
    t = task(**{**over, "cronline": "*/5 * * * *"})
    if "stop_time" in over:
        t["stop_time"] = T0 + dt.timedelta(minutes=4)
    tr = lifecycle.finish(t, outcome, start)
    assert tr.target is ending
    assert tr.values["next_run_time"] == T0 + dt.timedelta(minutes=5)


def test_without_a_run_start_the_last_run_time_counts():
    tr = lifecycle.finish(task(last_run_time=T0 + 10 * S), RunStatus.COMPLETED, None)
    assert tr.target is TaskStatus.COMPLETED
    assert tr.values["next_run_time"] == T0 + 70 * S


def test_the_value_is_the_same_whether_the_task_goes_on_or_ends():
    """web2py writes one value, computed at pop, whatever the report says."""
    start = T0 + 42 * S
    wanted = start + 60 * S
    for over, outcome in [({"repeats": 2}, RunStatus.COMPLETED), ({}, RunStatus.COMPLETED),
                          ({"retry_failed": 1}, RunStatus.FAILED), ({}, RunStatus.FAILED),
                          ({"retry_failed": 1}, RunStatus.TIMEOUT), ({}, RunStatus.TIMEOUT),
                          ({}, RunStatus.STOPPED)]:
        assert lifecycle.finish(task(**over), outcome, start).values["next_run_time"] == wanted


def test_a_retry_under_retry_delay_is_still_due_after_its_delay():
    start, failed_at = T0 + 10 * S, T0 + 20 * S
    tr = lifecycle.finish(task(retry_failed=1, retry_delay=30), RunStatus.FAILED, start,
                          now=failed_at)
    assert tr.target is TaskStatus.QUEUED
    assert tr.values["next_run_time"] == failed_at + 30 * S


def test_a_cron_line_without_a_further_match_ends_with_end_of_time():
    start = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    tr = lifecycle.finish(task(cronline="0 0 1 1 *"), RunStatus.COMPLETED, start)
    assert tr.target is TaskStatus.COMPLETED
    assert tr.values["next_run_time"] == timing.END_OF_TIME
