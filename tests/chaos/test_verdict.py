"""The chaos verdict on hand-made rows and journals: what it explains and what it flags.

No processes: `ChaosRun._check_task` is fed a task row, its run rows and its executions as
the real run would read them, so each rule of docs/reliability.md is pinned by an example.
"""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from tests.chaos.harness import SCALES, ChaosRun, Execution, Spec, WorkerKill

T0 = dt.datetime(2030, 1, 1, 12, 0, 0)


@pytest.fixture
def run(tmp_path):
    def unused(*args, **kwargs):
        raise AssertionError("no process in verdict tests")

    return ChaosRun(scale=SCALES["small"], seed=1, db_url="sqlite:///unused.sqlite",
                    tmp_path=tmp_path, start_coordinator=unused, start_worker=unused)


def spec(kind="trivial", retry_failed=0, fails=0, timeout=10):
    return Spec(f"00001-{kind}", kind, f"chaos_{kind}", (), timeout, retry_failed, fails)


def task(status="COMPLETED", attempt=1, times_run=1, times_failed=0, lost_count=0):
    return {"id": 1, "uuid": "chaos-00001", "status": status, "attempt": attempt,
            "times_run": times_run, "times_failed": times_failed, "lost_count": lost_count,
            "assigned_worker_name": "w1"}


def row(attempt, status, worker="w1", traceback="", stop=1.0):
    start = T0 + dt.timedelta(seconds=attempt)
    return {"id": attempt, "task_id": 1, "attempt": attempt, "status": status,
            "worker_name": worker, "traceback": traceback, "start_time": start,
            "stop_time": None if stop is None else start + dt.timedelta(seconds=stop)}


def ex(attempt, worker, start, end=None, outcome=None):
    return Execution("00001", 1, attempt, attempt, worker, 100 + attempt, start, end, outcome)


LOST = "WorkerLost: worker w1 lost: no heartbeat for 1.5 s"
DESIGNED = "chaos_tasks.ChaosDesignedFailureError: ChaosDesignedFailure: failure 1/1"


def check(run, s, t, rows, execs):
    counts = collections.Counter()
    lost = set()
    kill_of = {k.worker: k for k in run.kills}

    def killed(e):
        k = kill_of.get(e.worker)
        return k if k is not None and k.killed_at + 0.05 >= e.start else None

    run._check_task(s, t, rows, execs, killed, counts, lost)
    return {k: [f.message for f in v] for k, v in run.verdict.violations.items() if v}, counts


def kill(run, worker, at):
    run.kills.append(WorkerKill(worker, 1, at, at + 0.01, 0.0, 0, []))


def test_a_rerun_after_the_worker_was_killed_is_explained(run):
    kill(run, "w1", at=10.5)
    violations, counts = check(
        run, spec(), task(attempt=2, lost_count=0),
        [row(1, "FAILED", "w1", LOST), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0), ex(2, "w2", 12.0, 12.1, "done")])
    assert violations == {}
    assert counts["rerun_explained"] == 1 and counts["rerun_unexplained"] == 0


def test_a_done_whose_report_died_with_its_worker_is_at_least_once_not_twice(run):
    kill(run, "w1", at=10.5)
    violations, counts = check(
        run, spec(), task(attempt=2),
        [row(1, "FAILED", "w1", LOST), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0, 10.1, "done"), ex(2, "w2", 12.0, 12.1, "done")])
    assert violations == {}
    assert counts["done_twice_report_lost"] == 1 and counts["completed_twice"] == 0


def test_a_lost_run_on_a_live_worker_is_an_unexplained_rerun(run):
    violations, counts = check(
        run, spec(), task(attempt=2),
        [row(1, "FAILED", "w1", LOST), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0, 10.1, "done"), ex(2, "w2", 12.0, 12.1, "done")])
    assert counts["rerun_unexplained"] == 1
    assert set(violations) == {"execution_run_mismatch", "rerun_unexplained", "completed_twice"}


def test_an_execution_whose_run_row_vanished_is_flagged(run):
    violations, counts = check(
        run, spec(), task(attempt=2),
        [row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0, 10.1, "done"), ex(2, "w2", 14.0, 14.1, "done")])
    assert set(violations) == {"execution_without_run", "rerun_unexplained", "completed_twice"}


def test_two_completed_runs_are_completed_twice(run):
    violations, _ = check(
        run, spec(), task(attempt=2),
        [row(1, "COMPLETED", "w1"), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0, 10.1, "done"), ex(2, "w2", 12.0, 12.1, "done")])
    assert "completed_twice" in violations and "counters_disagree" in violations


def test_designed_retries_are_not_reruns_and_counters_agree(run):
    violations, counts = check(
        run, spec("flaky", retry_failed=1, fails=1), task(attempt=2),
        [row(1, "FAILED", "w1", DESIGNED), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0, 10.01, "fail"), ex(2, "w2", 11.0, 11.01, "done")])
    assert violations == {}
    assert counts["designed_retry"] == 1 and counts["rerun_explained"] == 0


def test_a_retry_past_retry_failed_is_unexplained(run):
    violations, _ = check(
        run, spec("doomed", retry_failed=0, fails=1), task("FAILED", 2, 0, 2),
        [row(1, "FAILED", "w1", DESIGNED), row(2, "FAILED", "w2", DESIGNED)],
        [ex(1, "w1", 10.0, 10.01, "fail"), ex(2, "w2", 11.0, 11.01, "fail")])
    assert "rerun_unexplained" in violations and "counters_disagree" in violations


def test_overlapping_executions_are_concurrent(run):
    kill(run, "w1", at=20.0)
    violations, _ = check(
        run, spec("nap"), task(attempt=2),
        [row(1, "FAILED", "w1", LOST), row(2, "COMPLETED", "w2")],
        [ex(1, "w1", 10.0), ex(2, "w2", 12.0, 12.2, "done")])
    assert "concurrent_executions" in violations


def test_a_task_left_running_is_stuck(run):
    violations, counts = check(
        run, spec(), task("RUNNING", 1, 0, 0), [row(1, "RUNNING", stop=None)],
        [ex(1, "w1", 10.0)])
    assert counts["stuck"] == 1
    assert {"stuck", "run_left_running"} <= set(violations)


def test_a_timeout_of_an_overrun_task_is_designed(run):
    violations, _ = check(
        run, spec("overrun", retry_failed=0, fails=1, timeout=1), task("TIMEOUT", 1, 0, 1),
        [row(1, "TIMEOUT", "w1")], [ex(1, "w1", 10.0, 11.0, "sigterm")])
    assert violations == {}


def test_an_unstarted_run_is_explained_only_by_a_kill_or_a_crash(run):
    violations, counts = check(
        run, spec(), task(attempt=2), [row(1, "FAILED", "w1", LOST), row(2, "COMPLETED", "w2")],
        [ex(2, "w2", 12.0, 12.1, "done")])
    assert counts["runs_never_started"] == 1
    assert set(violations) == {"unstarted_run_unexplained"}
