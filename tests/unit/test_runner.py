"""The child-process pool, with real children: results, failures, capture, timeouts, stops.

The task functions below run inside the pool's child processes; `time.sleep` in them
simulates work and is not test synchronisation.
"""

from __future__ import annotations

import itertools
import os
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from taskgrid.worker import current_task
from taskgrid.worker.capture import join_chunks
from taskgrid.worker.records import LeaseKey, Outcome, RunResult, TaskRun
from taskgrid.worker.runner import Pool, PoolError
from tests.support.processes import pid_gone
from tests.support.wait import wait_until

TASKS = """
import json, os, signal, subprocess, sys, time
import taskgrid.worker

def add(a, b):
    return a + b

def echo(*args, **kwargs):
    return [list(args), kwargs]

def fail(msg="boom"):
    raise RuntimeError(msg)

def unserializable():
    return object()

def noisy():
    print("from print")
    sys.stderr.write("from stderr\\n")
    os.write(1, b"from fd 1\\n")
    os.system("echo from subprocess")
    return None

def whoami():
    c = taskgrid.worker.current_task()
    return [c.id, c.uuid, c.run_id, c.attempt]

def sleep_for(seconds):
    time.sleep(seconds)
    return seconds

def ignore_sigterm(seconds, ready_file=None):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ready_file:
        open(ready_file, "w").close()
    time.sleep(seconds)

def spawn_sleeper(pid_file):
    proc = subprocess.Popen(["sleep", "60"])
    with open(pid_file, "w") as f:
        f.write(str(proc.pid))
    time.sleep(60)

def ticker(n, delay):
    for i in range(n):
        print("tick", i, flush=True)
        time.sleep(delay)
    return n

def crash(code):
    sys.stdout.flush()
    os._exit(code)

def pid():
    return os.getpid()

async def coro(x):
    return x * 2
"""

_ids = itertools.count(1)


class Harness:
    """A Pool whose results are collected per lease, waited on with a condition."""

    def __init__(self, pool_args: dict) -> None:
        self.results: dict[LeaseKey, RunResult] = {}
        self.cond = threading.Condition()
        self.pool = Pool(on_finish=self._finished, **pool_args)

    def _finished(self, result: RunResult) -> None:
        with self.cond:
            self.results[result.task.key] = result
            self.cond.notify_all()

    def submit(self, function: str, args: str = "[]", vars: str = "{}", timeout: float = 30,
               sync_output: float = 0) -> TaskRun:
        task_id = next(_ids)
        task = TaskRun(task_id, 1, task_id * 10, f"uuid-{task_id}", function, args, vars,
                       timeout, sync_output)
        self.pool.submit(task)
        return task

    def wait(self, task: TaskRun, timeout: float = 20.0) -> RunResult:
        with self.cond:
            assert self.cond.wait_for(lambda: task.key in self.results, timeout), task
            return self.results[task.key]

    def run(self, function: str, args: str = "[]", **kwargs) -> RunResult:
        return self.wait(self.submit(function, args, **kwargs))


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tasks") / "runner_tasks.py"
    path.write_text(TASKS)
    return str(path)


@pytest.fixture(scope="module")
def shared(tasks_file) -> Iterator[Harness]:
    """One pool of two children for the tests that leave their child healthy."""
    harness = Harness({"tasks_spec": tasks_file, "size": 2, "kill_grace_s": 1.0})
    harness.pool.start()
    yield harness
    harness.pool.close()


@pytest.fixture
def make_pool(tasks_file) -> Iterator:
    harnesses: list[Harness] = []

    def make(size: int = 1, kill_grace_s: float = 0.5) -> Harness:
        harness = Harness({"tasks_spec": tasks_file, "size": size, "kill_grace_s": kill_grace_s})
        harness.pool.start()
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.pool.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_result_is_the_json_of_the_return_value(shared):
    result = shared.run("add", "[1, 2]")
    assert (result.outcome, result.result, result.traceback) == (Outcome.COMPLETED, "3", "")
    result = shared.run("echo", '[1, "a"]', vars='{"k": [true, null]}')
    assert result.result == '[[1, "a"], {"k": [true, null]}]'


def test_none_result_is_json_null(shared):
    assert shared.run("noisy").result == "null"


def test_exception_fails_the_run_with_its_traceback(shared):
    result = shared.run("fail", '["kaboom"]')
    assert result.outcome is Outcome.FAILED
    assert result.result is None
    assert result.traceback.startswith("Traceback (most recent call last):")
    assert "RuntimeError: kaboom" in result.traceback


def test_unserializable_result_fails_with_the_type_error(shared):
    result = shared.run("unserializable")
    assert result.outcome is Outcome.FAILED
    assert "TypeError: Object of type object is not JSON serializable" in result.traceback


def test_unknown_function_fails_like_web2py(shared):
    result = shared.run("nope")
    assert result.outcome is Outcome.FAILED
    assert "NameError: name 'nope' not found in scheduler's environment" in result.traceback


def test_coroutine_functions_are_awaited(shared):
    assert shared.run("coro", "[21]").result == "42"


def test_output_is_captured_at_the_fd_level(shared):
    result = shared.run("noisy")
    text = join_chunks(result.output)
    for line in ("from print", "from stderr", "from fd 1", "from subprocess"):
        assert line + "\n" in text
    # the next run of the same children starts with empty output
    assert shared.run("add", "[1, 1]").output == []


def test_current_task_inside_the_child(shared):
    task = shared.submit("whoami")
    result = shared.wait(task)
    assert result.result == f'[{task.task_id}, "{task.uuid}", {task.run_id}, 1]'
    assert current_task() is None  # not inside a task here


def test_children_are_reused_not_spawned_per_task(shared):
    pids = {int(shared.run("pid").result) for _ in range(6)}
    assert pids <= set(shared.pool.child_pids())


def test_children_lead_their_own_process_group(shared):
    for pid in shared.pool.child_pids():
        assert os.getpgid(pid) == pid


def test_runs_beyond_the_pool_size_wait_for_a_free_child(make_pool):
    harness = make_pool(size=1)
    # the first run holds the only child long enough to look: four quick adds alone could
    # all be done by the time free_slots() is read
    tasks = [harness.submit("sleep_for", "[1]")]
    tasks += [harness.submit("add", f"[{i}, 1]") for i in range(3)]
    assert harness.pool.free_slots() == 0
    assert [harness.wait(t).result for t in tasks] == ["1", "1", "2", "3"]
    assert harness.pool.free_slots() == 1


def test_timeout_fires_within_half_a_second_of_the_deadline(make_pool):
    harness = make_pool(kill_grace_s=5.0)
    started = time.monotonic()
    result = harness.run("sleep_for", "[30]", timeout=1)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TIMEOUT
    assert 1.0 <= elapsed < 1.5


def test_timeout_of_a_task_ignoring_sigterm_kills_it_after_the_grace(make_pool):
    harness = make_pool(kill_grace_s=0.5)
    old_pid = harness.pool.child_pids()[0]
    started = time.monotonic()
    result = harness.run("ignore_sigterm", "[30]", timeout=1)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TIMEOUT
    assert 1.5 <= elapsed < 2.5  # the deadline, then the grace, then SIGKILL
    wait_until(lambda: not pid_alive(old_pid), desc="the old child reaped")
    wait_until(lambda: harness.pool.child_pids() and old_pid not in harness.pool.child_pids(),
               desc="a replacement child")
    assert harness.run("add", "[2, 2]").result == "4"  # the replacement works


def test_stop_of_a_task_ignoring_sigterm_kills_it_after_the_grace(make_pool, tmp_path):
    harness = make_pool(kill_grace_s=0.5)
    ready = tmp_path / "ignoring"
    task = harness.submit("ignore_sigterm", f'[30, "{ready}"]', timeout=60)
    wait_until(ready.exists, desc="the task ignores SIGTERM")
    started = time.monotonic()
    assert harness.pool.stop(task.key)
    assert harness.wait(task, timeout=10).outcome is Outcome.STOPPED
    assert 0.5 <= time.monotonic() - started < 1.5


def test_stop_kills_the_whole_process_group(make_pool, tmp_path):
    harness = make_pool(kill_grace_s=0.5)
    pid_file = tmp_path / "sleeper.pid"
    task = harness.submit("spawn_sleeper", f'["{pid_file}"]')
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), desc="subprocess started")
    sleeper = int(pid_file.read_text())
    assert harness.pool.stop(task.key) is True
    assert harness.pool.stop(task.key) is False  # already stopping
    assert harness.wait(task).outcome is Outcome.STOPPED
    wait_until(lambda: pid_gone(sleeper), desc="subprocess killed")


def test_stop_of_a_queued_run_ends_it_at_once(make_pool):
    harness = make_pool(size=1)
    running = harness.submit("sleep_for", "[30]")
    queued = harness.submit("add", "[1, 2]")
    assert harness.pool.stop(queued.key)
    assert harness.wait(queued).outcome is Outcome.STOPPED
    harness.pool.stop(running.key)
    assert harness.wait(running).outcome is Outcome.STOPPED
    assert harness.pool.stop((999999, 1)) is False


def test_a_child_that_dies_fails_its_run_and_is_replaced(make_pool):
    harness = make_pool()
    result = harness.run("crash", "[3]")
    assert result.outcome is Outcome.FAILED
    assert "exit code 3" in result.traceback
    assert harness.run("add", "[1, 2]").result == "3"


def test_live_output_is_readable_while_the_task_runs(make_pool):
    harness = make_pool()
    task = harness.submit("ticker", "[50, 0.05]")
    first: list = []

    def first_line_read():
        # print() may reach the pipe in pieces ("tick", " 0", "\n"): gather until a line is in
        first.extend(c for r in harness.pool.active_runs() for c in r.output.take())
        return join_chunks(first).startswith("tick 0\n")
    wait_until(first_line_read, desc="output while running")
    assert first[0].seq == 1
    result = harness.wait(task)
    assert result.result == "50"
    text = join_chunks(first + result.output)
    assert text == "".join(f"tick {i}\n" for i in range(50))


def test_close_stops_running_tasks(make_pool):
    harness = make_pool(kill_grace_s=0.5)
    task = harness.submit("sleep_for", "[30]")
    wait_until(lambda: harness.pool.active_runs(), desc="run started")
    harness.pool.close()
    assert harness.wait(task).outcome is Outcome.STOPPED
    assert harness.pool.child_pids() == []
    assert harness.pool.free_slots() == 0


def test_children_that_cannot_load_the_tasks_fail_the_start(tmp_path):
    broken = tmp_path / "broken_tasks.py"
    broken.write_text(textwrap.dedent("""
        raise RuntimeError("cannot import in the child")

        def f():
            return 1
    """))
    pool = Pool(str(broken), 1, lambda result: None)
    with pytest.raises(PoolError, match="cannot import in the child"):
        pool.start(timeout_s=20)


def test_sigterm_to_the_group_ends_a_cooperative_task_before_the_grace(make_pool):
    harness = make_pool(kill_grace_s=10.0)
    task = harness.submit("sleep_for", "[30]")
    wait_until(lambda: harness.pool.active_runs(), desc="run started")
    started = time.monotonic()
    harness.pool.stop(task.key)
    assert harness.wait(task).outcome is Outcome.STOPPED
    assert time.monotonic() - started < 2.0  # SIGTERM ended it; no wait for the grace
