"""Command tasks in the worker: resolution and allow-list, and real runs in a task child pool.

The programs run are /bin/sh one-liners; `sleep` inside them simulates work and is not
test synchronisation.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Iterator

import pytest

from taskgrid.v1 import common_pb2, worker_pb2
from taskgrid.worker import main as worker_main
from taskgrid.worker._convert import register_request, task_run_from_lease
from taskgrid.worker.agent import AgentConfig
from taskgrid.worker.capture import join_chunks
from taskgrid.worker.command import (
    CommandPolicy,
    CommandRefused,
    StderrTail,
    canonical_path,
    command_env,
    describe_returncode,
    policy_from_flags,
    resolve_executable,
)
from taskgrid.worker.records import Command, LeaseKey, Outcome, RunResult, TaskRun
from taskgrid.worker.runner import Pool
from tests.support.processes import pid_gone
from tests.support.wait import wait_until

SH = canonical_path(shutil.which("sh") or "/bin/sh")
_ids = itertools.count(1)


class Harness:
    def __init__(self, **pool_args) -> None:
        self.results: dict[LeaseKey, RunResult] = {}
        self.cond = threading.Condition()
        pool_args.setdefault("tasks_spec", "")
        pool_args.setdefault("size", 1)
        pool_args.setdefault("kill_grace_s", 1.0)
        self.pool = Pool(on_finish=self._finished, **pool_args)
        self.pool.start()

    def _finished(self, result: RunResult) -> None:
        with self.cond:
            self.results[result.task.key] = result
            self.cond.notify_all()

    def submit(self, *argv: str, env: dict[str, str] | None = None, cwd: str = "",
               timeout: float = 30) -> TaskRun:
        task_id = next(_ids)
        command = Command(argv[0], tuple(argv[1:]), env or {}, cwd)
        task = TaskRun(task_id, 2, task_id * 10, f"uuid-{task_id}", "@command",
                       timeout=timeout, command=command)
        self.pool.submit(task)
        return task

    def wait(self, task: TaskRun, timeout: float = 20.0) -> RunResult:
        with self.cond:
            assert self.cond.wait_for(lambda: task.key in self.results, timeout), task
            return self.results[task.key]

    def run(self, *argv: str, **kwargs) -> RunResult:
        return self.wait(self.submit(*argv, **kwargs))

    def sh(self, script: str, **kwargs) -> RunResult:
        return self.run("/bin/sh", "-c", script, **kwargs)


@pytest.fixture(scope="module")
def shared() -> Iterator[Harness]:
    harness = Harness(command_policy=CommandPolicy(allowed=True))
    yield harness
    harness.pool.close()


# -- runs ------------------------------------------------------------------------------------


def test_exit_zero_completes_with_the_exit_code_as_result(shared):
    result = shared.sh("echo out; echo err >&2")
    assert result.outcome is Outcome.COMPLETED and result.traceback == ""
    assert json.loads(result.result or "") == {"exit_code": 0}
    assert sorted(join_chunks(result.output).splitlines()) == ["err", "out"]


def test_non_zero_exit_fails_with_the_code_and_the_stderr_tail(shared):
    result = shared.sh("for i in $(seq 1 30); do echo e$i >&2; done; echo fine; exit 3")
    assert result.outcome is Outcome.FAILED and result.result is None
    lines = result.traceback.splitlines()
    assert lines[0] == "exit code 3" and lines[1] == "last lines of stderr:"
    assert lines[2:] == [f"e{i}" for i in range(11, 31)]  # the last 20
    output = join_chunks(result.output)
    assert "e1\n" in output and "fine\n" in output  # stderr also went to the output


def test_a_signal_is_named(shared):
    result = shared.sh("kill -KILL $$")
    assert result.outcome is Outcome.FAILED
    assert result.traceback.startswith("killed by signal SIGKILL")


def test_clear_marker_applies_to_command_output(shared):
    result = shared.sh("echo first; echo 'drop!clear!'kept; echo a >&2; echo '!clear!'b >&2")
    assert join_chunks(result.output) == "b\n"


def test_env_cwd_and_identity_reach_the_program(shared, tmp_path):
    task = shared.submit("/bin/sh", "-c", 'echo "$GREETING|$TASKGRID_TASK_ID|$TASKGRID_TASK_UUID|'
                         '$TASKGRID_RUN_ID|$TASKGRID_ATTEMPT|${TASKGRID_TOKEN-unset}"; pwd',
                         env={"GREETING": "hi there"}, cwd=str(tmp_path))
    result = shared.wait(task)
    assert result.outcome is Outcome.COMPLETED
    first, cwd = join_chunks(result.output).splitlines()
    assert first == f"hi there|{task.task_id}|{task.uuid}|{task.run_id}|2|unset"
    assert os.path.samefile(cwd, tmp_path)


def test_a_relative_executable_is_taken_from_cwd(shared, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $0\n")
    script.chmod(0o755)
    result = shared.run("./hello.sh", cwd=str(tmp_path))
    assert result.outcome is Outcome.COMPLETED
    # the kernel hands a script the path it was run by: the resolved one
    assert join_chunks(result.output) == f"hello from {canonical_path(str(script))}\n"


def test_failures_to_start_say_why(shared, tmp_path):
    result = shared.run("no-such-program-taskgrid")
    assert result.outcome is Outcome.FAILED
    assert "not found in PATH" in result.traceback
    result = shared.sh("true", cwd=str(tmp_path / "missing"))
    assert result.outcome is Outcome.FAILED and "cannot start /bin/sh" in result.traceback
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("echo hi\n")
    result = shared.run(str(not_executable))
    assert "is not an executable file" in result.traceback


def test_timeout_kills_the_program_and_its_children(tmp_path):
    harness = Harness(command_policy=CommandPolicy(allowed=True), kill_grace_s=0.5)
    try:
        pid_file = tmp_path / "sleep.pid"
        task = harness.submit("/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait",
                              timeout=1)
        result = harness.wait(task, timeout=10)
        assert result.outcome is Outcome.TIMEOUT
        sleeper = int(pid_file.read_text())
        wait_until(lambda: pid_gone(sleeper), timeout=5, desc="grandchild killed")
        assert harness.sh("echo again").outcome is Outcome.COMPLETED  # the slot came back
    finally:
        harness.pool.close()


def test_stop_ends_a_program_that_ignores_sigterm(tmp_path):
    harness = Harness(command_policy=CommandPolicy(allowed=True), kill_grace_s=0.5)
    try:
        ready = tmp_path / "ready"
        task = harness.submit("/bin/sh", "-c", f"trap '' TERM; touch {ready}; sleep 30")
        wait_until(ready.exists, timeout=10, desc="program started")
        assert harness.pool.stop(task.key)
        assert harness.wait(task, timeout=10).outcome is Outcome.STOPPED
    finally:
        harness.pool.close()


def test_what_a_finished_program_left_running_is_killed(shared, tmp_path):
    pid_file = tmp_path / "bg.pid"
    result = shared.sh(f"sleep 30 & echo $! > {pid_file}")
    assert result.outcome is Outcome.COMPLETED
    sleeper = int(pid_file.read_text())
    wait_until(lambda: pid_gone(sleeper), timeout=5, desc="leftover killed")


def test_function_and_command_tasks_share_a_pool(tmp_path):
    tasks = tmp_path / "cmd_tasks.py"
    tasks.write_text("def add(a, b):\n    return a + b\n")
    harness = Harness(tasks_spec=str(tasks), command_policy=CommandPolicy(allowed=True))
    try:
        task = TaskRun(next(_ids), 1, 0, "u", "add", "[1, 2]")
        harness.pool.submit(task)
        assert harness.wait(task).result == "3"
        assert harness.sh("exit 0").outcome is Outcome.COMPLETED
    finally:
        harness.pool.close()


# -- policy ----------------------------------------------------------------------------------


def test_a_pool_without_policy_refuses_commands():
    harness = Harness()
    try:
        result = harness.sh("echo should not run")
        assert result.outcome is Outcome.FAILED and join_chunks(result.output) == ""
        assert "not allowed on this worker" in result.traceback
        assert "--allow-commands" in result.traceback
        result = harness.run("no-such-program-taskgrid")  # refused before any lookup
        assert "not allowed on this worker" in result.traceback
    finally:
        harness.pool.close()


def test_allow_list_refuses_other_executables():
    harness = Harness(command_policy=policy_from_flags(False, ["sh"]))
    try:
        assert harness.sh("echo ok").outcome is Outcome.COMPLETED
        assert harness.run("sh", "-c", "exit 0").outcome is Outcome.COMPLETED  # by name too
        true = shutil.which("true")
        assert true is not None
        result = harness.run(true)
        assert result.outcome is Outcome.FAILED
        assert "not in this worker's --allow-executable list" in result.traceback
    finally:
        harness.pool.close()


def test_policy_from_flags():
    assert policy_from_flags(False, []) == CommandPolicy(allowed=False)
    assert policy_from_flags(True, []) == CommandPolicy(allowed=True)
    policy = policy_from_flags(False, ["sh", SH])  # implies allowed; duplicates merged
    assert policy == CommandPolicy(allowed=True, executables=(SH,))
    with pytest.raises(ValueError, match="--allow-executable no-such-tool-x: .*not found"):
        policy_from_flags(True, ["no-such-tool-x"])


def test_policy_check():
    with pytest.raises(CommandRefused, match="--allow-commands"):
        CommandPolicy().check(SH)
    CommandPolicy(allowed=True).check("/anything")
    CommandPolicy(allowed=True, executables=(SH,)).check(SH)
    with pytest.raises(CommandRefused, match="allow-executable list"):
        CommandPolicy(allowed=True, executables=(SH,)).check("/usr/bin/env")


def test_canonical_paths_resolve_directories_not_the_file(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = real / "multi"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    (real / "alias").symlink_to(target)
    (tmp_path / "linkdir").symlink_to(real)
    assert canonical_path(str(tmp_path / "linkdir" / "multi")) == str(target)
    # a symlinked file keeps its own name: busybox-style links stay distinct
    assert canonical_path(str(real / "alias")) == str(real / "alias")
    assert resolve_executable("linkdir/alias", str(tmp_path)) == str(real / "alias")
    with pytest.raises(CommandRefused, match="no executable"):
        resolve_executable("")


def test_resolution_uses_the_workers_path_not_the_tasks(monkeypatch, tmp_path):
    fake = tmp_path / "sh"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert resolve_executable("sh") == SH
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_executable("sh") == str(fake)


def test_command_env_adds_task_values_and_hides_the_token():
    command = Command("x", env={"A": "task", "TASKGRID_TOKEN": "explicit"})
    env = command_env(command, 7, "u7", 70, 3, base={"A": "worker", "B": "b",
                                                     "TASKGRID_TOKEN": "secret"})
    assert env == {"A": "task", "B": "b", "TASKGRID_TOKEN": "explicit", "TASKGRID_TASK_ID": "7",
                   "TASKGRID_TASK_UUID": "u7", "TASKGRID_RUN_ID": "70", "TASKGRID_ATTEMPT": "3"}
    assert "TASKGRID_TOKEN" not in command_env(Command("x"), 1, "u", 0, 1,
                                               base={"TASKGRID_TOKEN": "secret"})


def test_stderr_tail_and_exit_descriptions():
    tail = StderrTail(max_bytes=16)
    assert tail.lines() == ""
    tail.feed(b"0123456789\nabc\ndef\n\n")
    assert tail.lines(2) == "abc\ndef\n" and tail.lines(5) == "456789\nabc\ndef\n"
    assert describe_returncode(3) == "exit code 3"
    assert describe_returncode(-9) == "killed by signal SIGKILL"
    assert describe_returncode(-200) == "killed by signal 200"


# -- agent and flags -------------------------------------------------------------------------


def test_the_command_capability_is_declared_only_when_allowed():
    plain = register_request(AgentConfig(tasks="t", functions=["add", "@command"]))
    assert list(plain.capabilities) == [] and list(plain.functions) == ["add"]
    allowed = register_request(AgentConfig(tasks="", functions=[],
                                           command_policy=CommandPolicy(allowed=True)))
    assert list(allowed.capabilities) == ["command"] and list(allowed.functions) == []


def test_a_command_lease_becomes_a_command_run():
    lease = worker_pb2.Lease(
        ref=common_pb2.LeaseRef(task_id=4, attempt=2), run_id=9, uuid="u4",
        function_name="@command", timeout=5,
        command=common_pb2.Command(executable="ls", args=["-l", "/"], env={"K": "V"}, cwd="/tmp"),
    )
    run = task_run_from_lease(lease)
    assert run.command == Command("ls", ("-l", "/"), {"K": "V"}, "/tmp")
    assert run.key == (4, 2) and run.timeout == 5.0
    plain = task_run_from_lease(worker_pb2.Lease(ref=common_pb2.LeaseRef(task_id=1, attempt=1),
                                                 function_name="add"))
    assert plain.command is None


def test_worker_flags():
    parser = worker_main.build_parser()
    ns = parser.parse_args(["--tasks", "m"])
    assert ns.allow_commands is False and ns.executables == []
    ns = parser.parse_args(["--allow-executable", "/bin/sh", "--allow-executable", "ls"])
    assert ns.tasks is None and ns.executables == ["/bin/sh", "ls"]
    help_text = parser.format_help()
    assert "--allow-commands" in help_text and "anyone who may queue tasks" in help_text


def test_worker_needs_tasks_unless_commands_are_allowed(capsys, caplog):
    with pytest.raises(SystemExit) as exit_info:
        worker_main.main([])
    assert exit_info.value.code == worker_main.EXIT_USAGE
    assert "--tasks is required unless" in capsys.readouterr().err
    code = worker_main.main(["--allow-executable", "no-such-tool-x", "--log-level", "ERROR"])
    assert code == worker_main.EXIT_USAGE
    assert "no-such-tool-x" in caplog.text
