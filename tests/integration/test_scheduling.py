"""Time and scheduling rules on a coordinator whose clock the test moves (issue 3).

The coordinator runs in-process on a ManualClock; workers are real processes.
Nothing here waits for wall-clock minutes: the clock is moved instead.
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.client import Scheduler
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
MIN = dt.timedelta(minutes=1)


@pytest.fixture
def sched(clocked):
    s = Scheduler(clocked.address)
    yield s
    s.close()


def status(s, ref):
    return str(s.task_status(ref).status)


def wait_status(s, ref, wanted, timeout=15.0):
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    wait_until(lambda: status(s, ref) in wanted, timeout=timeout,
               desc=f"task {ref} in {wanted}")
    return s.task_status(ref)


def wait_runs(s, ref, n, timeout=15.0):
    wait_until(lambda: len([r for r in s.runs(ref) if r.status != "RUNNING"]) >= n,
               timeout=timeout, desc=f"{n} finished runs of task {ref}")
    return s.runs(ref)


def test_cron_task_first_runs_at_next_match_then_follows_the_line(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    t0 = clocked.now()  # 00:00:30
    r = sched.queue_task("add", pargs=[1, 1], cronline="*/5 * * * *", repeats=2)
    task = sched.task_status(r.id)
    assert task.next_run_time == t0.replace(minute=5, second=0)
    assert "not due until" in sched.explain(r.id)
    clocked.advance(4 * 60 + 29)  # 00:04:59: still not due
    assert status(sched, r.id) == "QUEUED" and sched.runs(r.id) == []
    clocked.advance(1)  # 00:05:00
    wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    assert task.times_run == 1 and task.next_run_time == t0.replace(minute=10, second=0)
    clocked.advance(5 * 60)
    assert wait_status(sched, r.id, "COMPLETED").times_run == 2


def test_cron_day_fields_and_names_compute_next_times(clocked, sched):
    # Monday 2030-01-07 00:00:30. "0 9 * * sat,sun": Saturday 2030-01-12 09:00.
    r = sched.queue_task("add", cronline="0 9 * * sat,sun")
    assert sched.task_status(r.id).next_run_time == dt.datetime(2030, 1, 12, 9, tzinfo=dt.UTC)
    # day-of-month OR day-of-week, as cron: the 15th or any Friday -> Friday the 11th
    r = sched.queue_task("add", cronline="0 0 15 * fri")
    assert sched.task_status(r.id).next_run_time == dt.datetime(2030, 1, 11, tzinfo=dt.UTC)
    r = sched.queue_task("add", cronline="30 23 L * *")  # last day of the month
    assert sched.task_status(r.id).next_run_time == dt.datetime(2030, 1, 31, 23, 30,
                                                                 tzinfo=dt.UTC)
    r = sched.queue_task("add", cronline="@monthly")
    assert sched.task_status(r.id).next_run_time == dt.datetime(2030, 2, 1, tzinfo=dt.UTC)
    r = sched.queue_task("add", cronline="0 0 1 jan-mar/2 *", start_time=dt.datetime(
        2030, 1, 2, tzinfo=dt.UTC))
    assert sched.task_status(r.id).next_run_time == dt.datetime(2030, 3, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("line", "message"), [
    ("* * *", "too short"), ("* * * * * *", "too long"), ("99 * * * *", ""),
    ("5 4 31 2 *", ""), ("@reboot", "unknown shortcut"),
])
def test_bad_cron_lines_are_field_errors(clocked, sched, line, message):
    r = sched.queue_task("add", cronline=line)
    assert r.id is None and "cronline" in r.errors and message in r.errors["cronline"]


def test_stop_time_expires_a_waiting_task_without_running_it(clocked, sched):
    r = sched.queue_task("nobody_offers_this", stop_time=clocked.now() + 10 * MIN)
    clocked.advance(9 * 60)
    assert status(sched, r.id) == "QUEUED"
    clocked.advance(61)
    task = wait_status(sched, r.id, "EXPIRED")
    assert task.times_run == 0 and sched.runs(r.id) == []


def test_repeats_expire_when_next_run_falls_after_stop_time(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("add", pargs=[1, 2], repeats=0, period=60,
                         stop_time=clocked.now() + dt.timedelta(seconds=150))
    wait_runs(sched, r.id, 1)
    wait_status(sched, r.id, "QUEUED")
    clocked.advance(60)
    wait_runs(sched, r.id, 2)
    wait_status(sched, r.id, "QUEUED")
    clocked.advance(60)  # third run at +120 s; the fourth would be at +180 s > stop_time
    task = wait_status(sched, r.id, "EXPIRED")
    assert task.times_run == 3 and len(sched.runs(r.id)) == 3


def test_prevent_drift_runs_on_the_grid_of_start_time(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    start = clocked.now() - dt.timedelta(seconds=60)
    r = sched.queue_task("add", pargs=[1, 1], repeats=3, period=7, prevent_drift=True,
                         start_time=start)
    wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    # first run at start+60 s -> next slot strictly after it: start+63 s
    assert task.next_run_time == start + dt.timedelta(seconds=63)
    clocked.advance(5)  # run 2 at start+65 s -> next slot start+70 s, not start+72 s
    wait_runs(sched, r.id, 2)
    assert wait_status(sched, r.id, "QUEUED").next_run_time == start + dt.timedelta(seconds=70)


def test_period_without_drift_counts_from_the_run_start(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("add", pargs=[1, 1], repeats=2, period=3600)
    [run] = wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    assert task.next_run_time == run.start_time + dt.timedelta(hours=1)
    clocked.advance(3599)
    assert len(sched.runs(r.id)) == 1
    clocked.advance(1)
    assert wait_status(sched, r.id, "COMPLETED").times_run == 2


def test_retry_waits_one_period_by_default(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("fail", retry_failed=1, period=120)
    [first] = wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    assert task.next_run_time == first.start_time + dt.timedelta(seconds=120)
    clocked.advance(120)
    assert wait_status(sched, r.id, "FAILED").times_failed == 2


def test_fixed_retry_delay(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("fail", retry_failed=2, retry_delay=30)
    [first] = wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    assert task.next_run_time == first.stop_time + dt.timedelta(seconds=30)
    clocked.advance(30)
    runs = wait_runs(sched, r.id, 2)
    task = wait_status(sched, r.id, "QUEUED")
    assert task.next_run_time == runs[1].stop_time + dt.timedelta(seconds=30)


def test_exponential_backoff_with_cap(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("fail", retry_failed=-1, retry_delay=10, retry_backoff=2,
                         retry_delay_max=25)
    delays = []
    for n in range(1, 5):
        runs = wait_runs(sched, r.id, n)
        task = wait_status(sched, r.id, "QUEUED")
        delays.append((task.next_run_time - runs[-1].stop_time).total_seconds())
        clocked.advance(delays[-1])
    assert delays == [10, 20, 25, 25]
    sched.stop_task(r.id)


def test_retry_jitter_stays_within_its_fraction(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    r = sched.queue_task("fail", retry_failed=1, retry_delay=100, retry_jitter=0.2)
    [run] = wait_runs(sched, r.id, 1)
    task = wait_status(sched, r.id, "QUEUED")
    assert 80 <= (task.next_run_time - run.stop_time).total_seconds() <= 120


def test_broadcast_puts_one_child_per_worker_each_period(clocked, sched, start_worker):
    start_worker("w1", coordinator=clocked.address)
    start_worker("w2", coordinator=clocked.address)
    r = sched.queue_task("echo", pvars={"k": 1}, timeout=7, broadcast=True, period=60)
    assert r.errors == {}
    wait_until(lambda: len(children(sched, r.id)) == 2, timeout=15, desc="2 children")
    kids = children(sched, r.id)
    assert {k.target_worker_name for k in kids} == {"w1", "w2"}
    assert all(k.vars == {"k": 1} and k.timeout == 7 and not k.broadcast for k in kids)
    for k in kids:
        done = wait_status(sched, k.id, "COMPLETED")
        assert sched.runs(k.id)[0].worker_name == done.target_worker_name
    parent = sched.task_status(r.id)
    assert parent.status == "QUEUED" and parent.times_run == 1 and sched.runs(r.id) == []
    clocked.advance(60)
    wait_until(lambda: len(children(sched, r.id)) == 4, timeout=15, desc="4 children")
    assert sched.task_status(r.id).times_run == 2


def children(s, parent_id):
    return [t for t in s.list_tasks(function_name="echo", limit=None)
            if t.broadcast_parent == parent_id]


def test_broadcast_and_prevent_drift_need_a_period_or_cron(clocked, sched):
    assert "broadcast" in sched.queue_task("add", broadcast=True, period=0).errors
    assert "prevent_drift" in sched.queue_task("add", prevent_drift=True, period=0).errors
