"""Two web2py rules end to end, on an in-process coordinator whose clock the test moves and a
real worker process (see tests/unit/test_web2py_rules.py for the pure functions).

1. A cron line with a reversed range (`5-1`, `fri-mon`, `5-1/2`) is a field error on
   `cronline`: nothing is queued, nothing runs.
2. The report that ends a task writes next_run_time, as every report does in web2py: the
   next run counted from the run's start (period, prevent_drift grid, cron match).
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.client import Scheduler
from tests.support.wait import wait_until

S = dt.timedelta(seconds=1)
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


@pytest.fixture
def sched(clocked):
    s = Scheduler(clocked.address)
    yield s
    s.close()


def wait_status(s, ref, wanted, timeout=20.0):
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    wait_until(lambda: str(s.task_status(ref).status) in wanted, timeout=timeout,
               desc=f"task {ref} in {wanted}")
    return s.task_status(ref)


def test_reversed_cron_ranges_are_cronline_errors_and_nothing_runs(clocked, sched,
                                                                   start_worker):
    start_worker("w1", coordinator=clocked.address)
    bad = {"30-5 * * * *": "30-5", "* 23-1 * * *": "23-1", "* * 5-1 * *": "5-1",
           "* * * 12-1 *": "12-1", "* * * * 5-1": "5-1", "* * 5-1/2 * *": "5-1/2",
           "* * * dec-jan *": "dec-jan", "* * * * FRI-MON": "fri-mon"}
    for line, field in bad.items():
        r = sched.queue_task("add", pargs=[1, 1], cronline=line)
        assert r.id is None, line
        assert r.errors == {"cronline": f"Invalid cron value ({field})"}, line
    # the same ranges the right way round are queued and run at their next match
    good = sched.queue_task("add", pargs=[2, 3], cronline="0-30 1-23 1-5 1-12 1-5")
    assert good.errors == {}
    # Monday 2030-01-07 00:00:30: hour 0 is excluded, so the first match is 01:00
    first = dt.datetime(2030, 1, 7, 1, 0, tzinfo=dt.UTC)
    assert sched.task_status(good.id).next_run_time == first
    clocked.advance((first - clocked.now()).total_seconds())
    done = wait_status(sched, good.id, "COMPLETED")
    assert sched.task_status(good.id, output=True).result == 5 and done.times_run == 1
    assert [t.id for t in sched.list_tasks(function_name="add", limit=None)] == [good.id]


def test_the_report_that_ends_a_task_writes_next_run_time(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    now = clocked.now()
    completed = sched.queue_task("add", pargs=[1, 1], period=3600)
    failed = sched.queue_task("fail", period=600)
    expired = sched.queue_task("add", pargs=[1, 2], repeats=0, period=60, stop_time=now + 30 * S)
    anchor = now - 60 * S  # the run at anchor+60 s (or a little later) -> the next 7 s slot
    drift = sched.queue_task("add", pargs=[1, 3], period=7, prevent_drift=True,
                             start_time=anchor)
    timed_out = sched.queue_task("sleep_for", pargs=[30], timeout=1, period=120)
    for ref, ending in [(completed.id, "COMPLETED"), (failed.id, "FAILED"),
                        (expired.id, "EXPIRED"), (drift.id, "COMPLETED"),
                        (timed_out.id, "TIMEOUT")]:
        wait_status(sched, ref, ending)
    for ref, period in [(completed.id, 3600), (failed.id, 600), (expired.id, 60),
                        (timed_out.id, 120)]:
        [run] = sched.runs(ref)
        assert sched.task_status(ref).next_run_time == run.start_time + period * S, ref
    [run] = sched.runs(drift.id)
    slots = (run.start_time - anchor) // (7 * S) + 1
    assert sched.task_status(drift.id).next_run_time == anchor + slots * 7 * S
    assert sched.task_status(drift.id).next_run_time > run.start_time

    # stopped while running: web2py's failure path writes it too
    stopped = sched.queue_task("sleep_for", pargs=[30], period=900)
    wait_status(sched, stopped.id, "RUNNING")
    wait_until(lambda: sched.runs(stopped.id) != [], timeout=10, desc="the run record")
    assert sched.stop_task(stopped.id)
    task = wait_status(sched, stopped.id, "STOPPED")
    [run] = sched.runs(stopped.id)
    assert run.status == "STOPPED"
    assert task.next_run_time == run.start_time + 900 * S

    # a cron task's last run: the next match strictly after the run's start
    cron = sched.queue_task("add", pargs=[2, 2], cronline="*/5 * * * *")
    due = sched.task_status(cron.id).next_run_time
    clocked.advance((due - clocked.now()).total_seconds())
    task = wait_status(sched, cron.id, "COMPLETED")
    [run] = sched.runs(cron.id)
    assert task.next_run_time == run.start_time.replace(second=0, microsecond=0) + 300 * S
