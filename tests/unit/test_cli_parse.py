"""The client command line: argument parsing, queue option mapping, exit codes, and output,
driven through main() with a fake Scheduler (no coordinator, no sockets)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskgrid.client import (
    CommandSpec,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutputChunk,
    QueueResult,
    RunRecord,
    RunStatus,
    TaskgridError,
    TaskRecord,
    TaskStatus,
    TaskStatusResult,
    UnavailableError,
    WorkerRecord,
    WorkerStatus,
    cli,
)
from taskgrid.v1 import client_pb2  # only to answer QueueJob as the coordinator would

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def task(**overrides: Any) -> TaskRecord:
    fields: dict[str, Any] = dict(
        id=12, uuid="u-12", task_name="add", group_name="main", status=TaskStatus.QUEUED,
        function_name="add", args=[1, 2], vars={}, enabled=True, start_time=T0,
        next_run_time=T0, stop_time=None, repeats=1, retry_failed=0, period=60,
        prevent_drift=False, cronline=None, timeout=60, sync_output=0, times_run=0,
        times_failed=0, last_run_time=None, assigned_worker_name="", broadcast=False,
        priority=0, discard_results=False, attempt=0, lost_count=0, stop_requested=False,
        retry_delay=0.0, retry_backoff=1.0, retry_delay_max=0.0, retry_jitter=0.0,
        broadcast_parent=0, target_worker_name="",
    )
    fields.update(overrides)
    return TaskRecord(**fields)


def run(**overrides: Any) -> RunRecord:
    fields: dict[str, Any] = dict(
        id=3, task_id=12, attempt=1, status=RunStatus.COMPLETED, start_time=T0,
        stop_time=T0 + timedelta(seconds=1), run_output="line 1\nline 2\n", run_result="3",
        traceback="", worker_name="w1",
    )
    fields.update(overrides)
    return RunRecord(**fields)


# -- parsing ---------------------------------------------------------------------------------------


def test_queue_with_every_option_maps_to_queue_task_kwargs() -> None:
    ns = cli.parse_args([
        "queue", "add", "[1, 2]", "--vars", '{"a": 1}', "--timeout", "30", "--repeats", "0",
        "--period", "90", "--retry-failed", "-1", "--group", "g1", "--uuid", "u1",
        "--task-name", "nightly", "--sync-output", "2", "--priority", "5",
        "--start-time", "2030-01-02T03:04:05", "--stop-time", "2030-01-03T00:00:00+02:00",
        "--prevent-drift", "--cronline", "*/5 * * * *", "--disabled", "--discard-results",
        "--retry-delay", "2.5", "--retry-backoff", "2", "--retry-delay-max", "60",
        "--retry-jitter", "0.1", "--broadcast", "--immediate",
    ])
    assert ns.command == "queue" and ns.function == "add"
    assert cli.queue_kwargs(ns) == {
        "args": "[1, 2]", "vars": '{"a": 1}', "timeout": 30, "repeats": 0, "period": 90,
        "retry_failed": -1, "group_name": "g1", "uuid": "u1", "task_name": "nightly",
        "sync_output": 2, "priority": 5,
        "start_time": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        "stop_time": datetime(2030, 1, 2, 22, 0, tzinfo=UTC),
        "prevent_drift": True, "cronline": "*/5 * * * *", "enabled": False,
        "discard_results": True, "retry_delay": 2.5, "retry_backoff": 2.0,
        "retry_delay_max": 60.0, "retry_jitter": 0.1, "broadcast": True, "immediate": True,
    }
    assert ns.after is None


def test_queue_after_is_repeatable_and_not_a_queue_task_keyword() -> None:
    ns = cli.parse_args(["queue", "load", "--after", "3", "--after", "5", "--timeout", "9"])
    assert ns.after == [3, 5]
    assert cli.queue_kwargs(ns) == {"timeout": 9}


def test_every_scheduling_option_has_a_queue_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["queue", "--help"], scheduler_factory=_no_scheduler) == 0
    help_text = capsys.readouterr().out
    for flag in ("--start-time", "--stop-time", "--repeats", "--period", "--prevent-drift",
                 "--cronline", "--retry-failed", "--retry-delay", "--retry-backoff",
                 "--retry-delay-max", "--retry-jitter", "--broadcast", "--immediate",
                 "--priority", "--after"):
        assert flag in help_text, flag


def test_queue_without_options_sends_only_the_function() -> None:
    ns = cli.parse_args(["queue", "add"])
    assert cli.queue_kwargs(ns) == {}


def test_json_texts_pass_through_unparsed_for_the_coordinator_to_judge() -> None:
    ns = cli.parse_args(["queue", "add", "{not json", "--vars", "[1]"])
    assert cli.queue_kwargs(ns) == {"args": "{not json", "vars": "[1]"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--coordinator", "h:1", "--json", "workers"],
        ["workers", "--coordinator", "h:1", "--json"],
        ["--json", "workers", "--coordinator", "h:1"],
        ["--coordinator", "h:1", "workers", "--json"],
    ],
)
def test_global_options_work_before_or_after_the_subcommand(argv: list[str]) -> None:
    ns = cli.parse_args(argv)
    assert ns.coordinator == "h:1" and ns.json is True


def test_coordinator_defaults_from_env_then_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.ENV_COORDINATOR, raising=False)
    ns = cli.parse_args(["workers"])
    assert ns.coordinator == "127.0.0.1:50051" and ns.json is False
    monkeypatch.setenv(cli.ENV_COORDINATOR, "10.0.0.5:6000")
    assert cli.parse_args(["workers"]).coordinator == "10.0.0.5:6000"
    assert cli.parse_args(["workers", "--coordinator", "x:1"]).coordinator == "x:1"


def test_refs_are_ids_when_all_digits_else_uuids() -> None:
    assert cli.parse_args(["status", "42"]).ref == 42
    assert cli.parse_args(["tail", "3f2a-77"]).ref == "3f2a-77"
    assert cli.parse_args(["stop", "-1"]).ref == "-1"
    ns = cli.parse_args(["status", "7", "--output", "--runs"])
    assert ns.output and ns.runs


@pytest.mark.parametrize("command", ["resume", "disable", "terminate", "kill"])
def test_worker_commands_take_groups_and_a_worker(command: str) -> None:
    ns = cli.parse_args([command, "--group", "a", "--group", "b", "--worker", "w1"])
    assert ns.command == command and ns.group_names == ["a", "b"] and ns.worker_name == "w1"
    ns = cli.parse_args([command])
    assert ns.group_names is None and ns.worker_name is None


def test_tasks_filters() -> None:
    ns = cli.parse_args(["tasks", "--status", "queued", "--status", "RUNNING", "--limit", "5"])
    assert ns.statuses == ["QUEUED", "RUNNING"] and ns.limit == 5


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["queue"],
        ["queue", "add", "--timeout", "abc"],
        ["queue", "add", "--start-time", "yesterday"],
        ["queue", "add", "--retry-delay", "soon"],
        ["queue", "add", "--after", "u-3"],
        ["status"],
        ["nope"],
        ["workers", "--bogus"],
        ["tasks", "--status", "DONE"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv, scheduler_factory=_no_scheduler) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"], scheduler_factory=_no_scheduler) == 0
    assert "queue" in capsys.readouterr().out


def _no_scheduler(target: str) -> Any:
    raise AssertionError("no scheduler should be built")


# -- exit codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFoundError("x"), 3),
        (InvalidArgumentError("x"), 2),
        (UnavailableError("x"), 4),
        (DeadlineExceededError("x"), 4),
        (FailedPreconditionError("x"), 1),
        (TaskgridError("x"), 1),
    ],
)
def test_exit_code_table(error: TaskgridError, code: int) -> None:
    assert cli.exit_code_for(error) == code


class FakeScheduler:
    """Answers like a Scheduler; `fail` makes every call raise."""

    def __init__(self, target: str, fail: BaseException | None = None) -> None:
        self.target, self.fail = target, fail
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.queue_answer = QueueResult(id=12, uuid="u-12", errors={})
        self.task: TaskRecord | None = task()
        self.run: RunRecord | None = run()
        self.events: list[Any] = []
        self.stopped = True
        self.closed = False
        self.waiting: tuple[int, ...] = ()
        self.job_answer: Any = None  # a QueueJobResponse for `queue --after`
        self.task_count = 2  # tasks list_tasks has
        self.changed: list[str] | None = None  # what the worker commands answer (w1)

    def __enter__(self) -> FakeScheduler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed = True

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.fail is not None:
            raise self.fail

    def queue_task(self, function: str, **kwargs: Any) -> QueueResult:
        self._call("queue_task", function, **kwargs)
        return self.queue_answer

    def queue_command(self, argv: list[str], env: Any = None, cwd: Any = None,
                      **kwargs: Any) -> QueueResult:
        self._call("queue_command", argv, env, cwd, **kwargs)
        return self.queue_answer

    def task_status(self, ref: Any, output: bool = False) -> Any:
        self._call("task_status", ref, output=output)
        if self.task is None or not output:
            return self.task
        return TaskStatusResult(self.task, self.run, self.run.result if self.run else None,
                                self.waiting)

    def _queue_job(self, request: Any) -> Any:
        self._call("_queue_job", request)
        return self.job_answer

    def explain(self, ref: Any) -> str | None:
        self._call("explain", ref)
        return "no live worker of group main offers add"

    def runs(self, ref: Any) -> list[RunRecord]:
        self._call("runs", ref)
        return [run(id=1, status=RunStatus.FAILED, run_result=None), run(id=3)]

    def watch(self, ref: Any) -> Iterator[Any]:
        self._call("watch", ref)
        yield from self.events

    def stop_task(self, ref: Any) -> bool:
        self._call("stop_task", ref)
        return self.stopped

    def list_tasks(self, **kwargs: Any) -> list[TaskRecord]:
        self._call("list_tasks", **kwargs)
        rows = [task(id=i) for i in range(self.task_count, 2, -1)]
        rows += [task(id=2), task(id=1, status=TaskStatus.COMPLETED)]
        limit = kwargs.get("limit")
        return rows if limit is None else rows[:limit]

    def get_workers(self, include_dead: bool = False) -> dict[str, WorkerRecord]:
        self._call("get_workers", include_dead=include_dead)
        now = datetime.now(UTC)
        return {"w1": WorkerRecord(
            worker_name="w1", status=WorkerStatus.ACTIVE, first_heartbeat=now,
            last_heartbeat=now, group_names=("main",), functions=("add", "mul"), capacity=2,
            language="python", alive=True, running=(12,), rss_bytes=50 * 1024 * 1024,
            heartbeat=3.0, hostname="box", pid=99, capabilities=(),
        )}

    def kill(self, group_names: Any = None, worker_name: Any = None) -> list[str]:
        self._call("kill", group_names=group_names, worker_name=worker_name)
        return ["w1"] if self.changed is None else self.changed

    resume = disable = terminate = kill


class Harness:
    """Runs cli.main against a fake Scheduler (of `fake_class`), set up by `setup` steps."""

    def __init__(self, fake_class: type[FakeScheduler] = FakeScheduler) -> None:
        self.fake_class = fake_class
        self.fake: FakeScheduler | None = None
        self.setup: list[Any] = []

    def factory(self, target: str) -> FakeScheduler:
        self.fake = self.fake_class(target)
        for step in self.setup:
            step(self.fake)
        return self.fake

    def run(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), scheduler_factory=self.factory, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnavailableError("failed to connect to all addresses"), 4),
        (NotFoundError("task 9 not found"), 3),
        (InvalidArgumentError("bad ref"), 2),
        (TaskgridError("boom"), 1),
        (RuntimeError("bug"), 1),
    ],
)
def test_errors_become_one_line_and_an_exit_code(
    h: Harness, error: BaseException, code: int
) -> None:
    h.setup.append(lambda f: setattr(f, "fail", error))
    status, out, err = h.run("workers", "--coordinator", "h:9")
    assert status == code and out == ""
    assert err.count("\n") == 1 and err.startswith("taskgrid: ") and "Traceback" not in err
    if code == 4:
        assert "h:9" in err


def test_interrupt_exits_130(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "fail", KeyboardInterrupt()))
    assert h.run("workers")[0] == 130


def test_queue_prints_id_and_uuid(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.ENV_COORDINATOR, raising=False)
    code, out, _ = h.run("queue", "add", "[1, 2]", "--timeout", "5")
    assert code == 0 and "12" in out and "u-12" in out
    assert h.fake is not None and h.fake.calls == [
        ("queue_task", ("add",), {"args": "[1, 2]", "timeout": 5})
    ]
    assert h.fake.closed and h.fake.target == "127.0.0.1:50051"


def test_queue_errors_exit_2(h: Harness) -> None:
    answer = QueueResult(None, None, {"timeout": "Enter an integer greater than or equal to 1"})
    h.setup.append(lambda f: setattr(f, "queue_answer", answer))
    code, out, err = h.run("queue", "add", "--timeout", "0")
    assert code == 2 and out == ""
    assert "timeout: Enter an integer greater than or equal to 1" in err
    code, out, err = h.run("queue", "add", "--timeout", "0", "--json")
    assert code == 2 and json.loads(out) == {"id": None, "uuid": None, "errors": answer.errors}


def test_status_prints_task_run_and_waiting_reason(h: Harness) -> None:
    code, out, _ = h.run("status", "12", "--output", "--runs")
    assert code == 0
    assert "status:" in out and "QUEUED" in out and "no live worker" in out
    assert "line 2" in out and "runs (2):" in out
    assert h.fake is not None
    assert [c[0] for c in h.fake.calls] == ["task_status", "explain", "runs"]


def test_status_json_is_one_document(h: Harness) -> None:
    code, out, _ = h.run("status", "u-12", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["task"]["uuid"] == "u-12" and doc["task"]["status"] == "QUEUED"
    assert doc["task"]["start_time"] == T0.isoformat()
    assert doc["run"]["run_output"] == "line 1\nline 2\n" and doc["result"] == 3
    assert doc["waiting_reason"].startswith("no live worker")


def test_status_of_a_missing_task_exits_3(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "task", None))
    code, out, err = h.run("status", "99")
    assert code == 3 and out == "" and "99" in err


def _chunk(seq: int, data: str, clear: bool = False, attempt: int = 1) -> OutputChunk:
    return OutputChunk(task_id=12, attempt=attempt, run_id=3, seq=seq, data=data, clear=clear)


def test_tail_prints_output_and_exits_0_on_completed(h: Harness) -> None:
    events = [
        task(status=TaskStatus.RUNNING), _chunk(1, "hello "), _chunk(2, "10%"),
        _chunk(3, "100%\n", clear=True), task(status=TaskStatus.COMPLETED),
    ]
    h.setup.append(lambda f: setattr(f, "events", events))
    code, out, err = h.run("tail", "12")
    assert code == 0
    assert out == "hello 10%\n100%\n"  # not a terminal: a clear starts a new line
    assert "RUNNING" in err and "COMPLETED" in err


def test_tail_json_streams_one_event_per_line(h: Harness) -> None:
    events = [task(status=TaskStatus.RUNNING), _chunk(1, "a"), _chunk(2, "b\n", clear=True),
              task(status=TaskStatus.COMPLETED)]
    h.setup.append(lambda f: setattr(f, "events", events))
    code, out, err = h.run("tail", "12", "--json")
    assert code == 0 and err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event"] for line in lines] == ["status", "output", "output", "status"]
    assert lines[0]["task"]["status"] == "RUNNING" and lines[3]["task"]["status"] == "COMPLETED"
    assert lines[2] == {"event": "output", "task_id": 12, "attempt": 1, "run_id": 3, "seq": 2,
                        "data": "b\n", "clear": True}


def test_tail_json_flushes_each_line_as_it_comes() -> None:
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    fake = FakeScheduler("t")
    fake.events = [_chunk(1, "a"), task(status=TaskStatus.FAILED)]
    out = Recorder()
    code = cli.main(["tail", "1", "--json"], scheduler_factory=lambda t: fake, stdout=out,
                    stderr=io.StringIO())
    assert code == 1
    first, second = out.getvalue().splitlines(keepends=True)
    assert out.flushed[:2] == [first, first + second]  # each line reaches the reader at once


@pytest.mark.parametrize("final", [TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.STOPPED])
def test_tail_exits_1_unless_completed(h: Harness, final: TaskStatus) -> None:
    events = [_chunk(1, "x"), task(status=final)]
    h.setup.append(lambda f: setattr(f, "events", events))
    code, out, _ = h.run("tail", "12")
    assert code == 1 and out == "x\n"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _tail_on_a_terminal(events: list[Any]) -> str:
    fake = FakeScheduler("t")
    fake.events = [*events, task(status=TaskStatus.COMPLETED)]
    out = Tty()
    code = cli.main(["tail", "1"], scheduler_factory=lambda t: fake, stdout=out,
                    stderr=io.StringIO())
    assert code == 0
    return out.getvalue()


def test_tail_clear_rewrites_only_the_progress_line_of_a_terminal() -> None:
    text = _tail_on_a_terminal([_chunk(1, "old"), _chunk(2, "new", clear=True)])
    assert text == "old\r\x1b[Knew\n"
    assert "\x1b[2J" not in text  # never the whole screen


def test_tail_clear_after_a_newline_rewrites_the_line_above() -> None:
    # print("50%"); print("!clear!100%"): the cursor sits below "50%", so go up one line
    text = _tail_on_a_terminal([_chunk(1, "header\n50%\n"), _chunk(2, "100%\n", clear=True)])
    assert text == "header\n50%\n\x1b[A\r\x1b[K100%\n"


def test_tail_clear_first_thing_or_in_a_new_run_writes_no_escape() -> None:
    assert _tail_on_a_terminal([_chunk(1, "a", clear=True)]) == "a\n"
    text = _tail_on_a_terminal([_chunk(1, "run 1"), _chunk(1, "run 2", clear=True, attempt=2)])
    assert text == "run 1\nrun 2\n"


def test_tail_off_a_terminal_prints_plainly(h: Harness) -> None:
    events = [_chunk(1, "50%\n"), _chunk(2, "100%\n", clear=True),
              task(status=TaskStatus.COMPLETED)]
    h.setup.append(lambda f: setattr(f, "events", events))
    code, out, _ = h.run("tail", "12")
    assert code == 0 and out == "50%\n100%\n" and "\x1b" not in out


def test_stop(h: Harness) -> None:
    code, out, _ = h.run("stop", "12")
    assert code == 0 and "stop sent" in out
    h.setup.append(lambda f: setattr(f, "stopped", False))
    h.setup.append(lambda f: setattr(f, "task", task(status=TaskStatus.COMPLETED)))
    code, out, err = h.run("stop", "12")
    assert code == 1 and "COMPLETED" in err
    h.setup.append(lambda f: setattr(f, "task", None))
    assert h.run("stop", "12")[0] == 3


def test_workers_table_and_json(h: Harness) -> None:
    code, out, _ = h.run("workers", "--all")
    header, row = out.splitlines()
    assert code == 0
    assert header.split() == ["NAME", "STATUS", "ALIVE", "GROUPS", "FUNCTIONS", "RUNNING",
                              "HEARTBEAT", "RSS", "COORDINATOR"]
    assert row.split()[:6] == ["w1", "ACTIVE", "yes", "main", "add,mul", "1"]
    assert row.split()[-2] == "50.0M"
    assert h.fake is not None and h.fake.calls[0][2] == {"include_dead": True}
    code, out, _ = h.run("workers", "--json")
    assert json.loads(out)[0]["group_names"] == ["main"]


@pytest.mark.parametrize("command", ["resume", "disable", "terminate", "kill"])
def test_worker_commands_print_changed_names(h: Harness, command: str) -> None:
    code, out, _ = h.run(command, "--group", "main", "--worker", "w1")
    assert code == 0 and out == "w1\n"
    assert h.fake is not None
    assert h.fake.calls == [("kill", (), {"group_names": ["main"], "worker_name": "w1"})]
    code, out, _ = h.run(command, "--all", "--json")
    assert json.loads(out) == {"worker_names": ["w1"]}
    assert h.fake.calls == [("kill", (), {"group_names": None, "worker_name": None})]


def test_tasks_table(h: Harness) -> None:
    code, out, _ = h.run("tasks", "--status", "queued", "--group", "main")
    assert code == 0 and len(out.splitlines()) == 3
    assert h.fake is not None and h.fake.calls[0][2]["status"] == ["QUEUED"]


def job_answer(task_id: int = 12, **errors: str) -> Any:
    if errors:
        return client_pb2.QueueJobResponse(
            results=[client_pb2.QueueTaskResponse(errors=errors)] if "timeout" in errors else [],
            errors={k: v for k, v in errors.items() if k != "timeout"},
        )
    return client_pb2.QueueJobResponse(
        results=[client_pb2.QueueTaskResponse(id=task_id, uuid=f"u-{task_id}")],
        layers=[client_pb2.JobLayer(task_ids=[3, 5]), client_pb2.JobLayer(task_ids=[task_id])],
    )


def test_queue_after_sends_a_one_task_job(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "job_answer", job_answer()))
    code, out, err = h.run("queue", "load", "[1]", "--after", "3", "--after", "5",
                           "--retry-delay", "1.5")
    assert code == 0 and err == ""
    assert "12" in out and "u-12" in out and "waiting for: 3, 5" in out
    assert h.fake is not None
    (name, (request,), _), = h.fake.calls
    assert name == "_queue_job" and request.job_name == "job_0" and len(request.tasks) == 1
    spec = request.tasks[0]
    assert spec.function_name == "load" and spec.args == "[1]" and spec.retry_delay == 1.5
    assert [(e.task.index, e.waits_for.task_id) for e in request.edges] == [(0, 3), (0, 5)]
    code, out, _ = h.run("queue", "load", "--after", "3", "--json")
    assert code == 0
    assert json.loads(out) == {"id": 12, "uuid": "u-12", "errors": {}, "waiting_for": [3]}


def test_queue_after_errors_read_like_a_plain_queue(h: Harness) -> None:
    answer = job_answer(timeout="Enter an integer greater than or equal to 1")
    h.setup.append(lambda f: setattr(f, "job_answer", answer))
    code, out, err = h.run("queue", "load", "--timeout", "0", "--after", "3")
    assert code == 2 and out == ""
    assert "not queued: timeout: Enter an integer" in err and "tasks[0]" not in err
    h.setup.append(lambda f: setattr(f, "job_answer", job_answer(edges="task 99 does not exist")))
    code, out, err = h.run("queue", "load", "--after", "99", "--json")
    assert code == 2
    assert json.loads(out) == {"id": None, "uuid": None,
                               "errors": {"edges": "task 99 does not exist"}, "waiting_for": [99]}


def test_status_shows_what_a_task_waits_for(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "waiting", (3, 5)))
    code, out, _ = h.run("status", "12")
    assert code == 0 and "waiting for: 3, 5" in out
    code, out, _ = h.run("status", "12", "--json")
    assert code == 0 and json.loads(out)["waiting_for"] == [3, 5]


def test_status_without_prerequisites_has_no_waiting_for_line(h: Harness) -> None:
    code, out, _ = h.run("status", "12", "--json")
    assert json.loads(out)["waiting_for"] == []
    code, out, _ = h.run("status", "12")
    assert "waiting for" not in out


# -- queue-command ---------------------------------------------------------------------------------


def test_queue_command_parses_options_then_the_command_after_the_separator() -> None:
    ns = cli.parse_args(["queue-command", "--timeout", "5", "--env", "A=1", "--env", "B=x=y",
                         "--cwd", "/srv", "--retry-failed", "2", "--group", "g", "--",
                         "/bin/sh", "-c", "echo --timeout", "--", "x"])
    assert ns.command == "queue-command"
    assert ns.argv == ["/bin/sh", "-c", "echo --timeout", "--", "x"]
    assert cli.queue_kwargs(ns) == {"timeout": 5, "retry_failed": 2, "group_name": "g"}
    assert ns.env == [("A", "1"), ("B", "x=y")] and ns.cwd == "/srv"


@pytest.mark.parametrize("argv", [
    ["queue-command"], ["queue-command", "--"], ["queue-command", "--env", "NOEQUALS", "--", "ls"],
    ["queue-command", "--env", "=v", "--", "ls"], ["queue-command", "--vars", "{}", "--", "ls"],
])
def test_queue_command_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_queue_command_prints_id_and_uuid(h: Harness) -> None:
    code, out, err = h.run("queue-command", "--env", "K=V", "--cwd", "/tmp", "--timeout", "5",
                           "--", "ls", "-l")
    assert code == 0 and err == "" and "12" in out and "u-12" in out
    assert h.fake is not None and h.fake.calls == [
        ("queue_command", (["ls", "-l"], {"K": "V"}, "/tmp"), {"timeout": 5})
    ]
    code, out, _ = h.run("queue-command", "--json", "--", "true")
    assert code == 0 and json.loads(out) == {"id": 12, "uuid": "u-12", "errors": {}}
    assert h.fake.calls == [("queue_command", (["true"], None, None), {})]


def test_queue_command_errors_exit_2(h: Harness) -> None:
    answer = QueueResult(None, None, {"command": "executable must not be empty"})
    h.setup.append(lambda f: setattr(f, "queue_answer", answer))
    code, out, err = h.run("queue-command", "--", "")
    assert code == 2 and out == ""
    assert "taskgrid: not queued: command: executable must not be empty" in err


def test_queue_command_after_sends_a_one_command_job(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "job_answer", job_answer()))
    code, out, err = h.run("queue-command", "--after", "3", "--env", "K=V", "--", "make", "all")
    assert code == 0 and err == "" and "waiting for: 3" in out
    assert h.fake is not None
    (name, (request,), _), = h.fake.calls
    spec = request.tasks[0]
    assert name == "_queue_job" and spec.function_name == "@command"
    assert (spec.command.executable, list(spec.command.args), dict(spec.command.env)) == (
        "make", ["all"], {"K": "V"})


def test_status_shows_the_command_line_of_a_command_task(h: Harness) -> None:
    command = CommandSpec("/bin/sh", ("-c", "echo hi there"), {"K": "a b"}, "/srv")
    h.setup.append(lambda f: setattr(f, "task", task(function_name="@command", command=command)))
    code, out, _ = h.run("status", "12")
    assert code == 0
    fields = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith("command"))
    assert {k.strip(): v.strip() for k, v in fields.items()} == {
        "command": "/bin/sh -c 'echo hi there'", "command env": "'K=a b'",
        "command cwd": "/srv"}
    code, out, _ = h.run("status", "12", "--json")
    assert json.loads(out)["task"]["command"] == {
        "executable": "/bin/sh", "args": ["-c", "echo hi there"], "env": {"K": "a b"},
        "cwd": "/srv"}


def test_status_of_a_function_task_has_no_command(h: Harness) -> None:
    code, out, _ = h.run("status", "12")
    assert code == 0 and "command" not in out and _fields(out)["function"] == "add"
    code, out, _ = h.run("status", "12", "--verbose")
    assert code == 0 and "command env" not in out
    assert [line.split() for line in out.splitlines() if line.startswith("command")] == [
        ["command:", "-"]]


def _fields(out: str) -> dict[str, str]:
    """`key: value` lines of a text answer, keys and values stripped."""
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line and line[:1] != " ")
    return {k.strip(): v.strip() for k, v in pairs}


# -- the command line as people expect it ----------------------------------------------------------

ALL_COMMANDS = ("coordinator", "worker", "queue", "queue-command", "status", "tail", "wait",
                "stop", "tasks", "update", "requeue", "enable-task", "disable-task", "delete",
                "workers", "resume", "disable", "terminate", "kill", "completion")


def test_help_lists_every_command_with_a_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"], scheduler_factory=_no_scheduler) == 0
    out = capsys.readouterr().out
    section = out[out.index("\n  COMMAND\n"):out.index("\noptions:")]
    listed = {line.split()[0]: line for line in section.splitlines()
              if line.startswith("    ") and not line.startswith("     ")}
    for command in ALL_COMMANDS:
        assert command in listed, command
        assert len(listed[command].split()) > 1, f"{command} has no description"
    assert "serve the gRPC API" in listed["coordinator"]
    assert "run tasks" in listed["worker"]


def test_the_dispatcher_help_is_the_client_help(capsys: pytest.CaptureFixture[str]) -> None:
    from taskgrid import cli as dispatcher

    assert dispatcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "coordinator" in out and "worker" in out and "completion" in out


def test_coordinator_and_worker_reached_through_the_client_cli_run_their_programs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["worker", "--help"], scheduler_factory=_no_scheduler)
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: taskgrid worker")


def test_a_routed_command_after_global_options_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--json", "worker", "--tasks", "x"], scheduler_factory=_no_scheduler) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "put worker first" in err


def test_version_is_the_installed_distribution_version(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from importlib import metadata

    assert cli.main(["--version"], scheduler_factory=_no_scheduler) == 0
    dist = metadata.packages_distributions()["taskgrid"][0]  # e.g. taskgrid-scheduler
    assert capsys.readouterr().out == f"taskgrid {metadata.version(dist)}\n"


def test_version_falls_back_to_the_package_when_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib import metadata

    import taskgrid
    from taskgrid.client import _cli_parse

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "packages_distributions", lambda: {})
    monkeypatch.setattr(metadata, "version", missing)
    assert _cli_parse.package_version() == taskgrid.__version__


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_naming_every_command(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("shtab")
    assert cli.main(["completion", shell], scheduler_factory=_no_scheduler) == 0
    script = capsys.readouterr().out
    assert "taskgrid" in script
    for command in ("queue", "status", "requeue", "enable-task", "kill", "--coordinator"):
        assert command in script, command
    if shell == "zsh":
        assert script.startswith("#compdef taskgrid")


def test_completion_without_shtab_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "shtab", None)  # `import shtab` raises ImportError
    assert cli.main(["completion", "bash"], scheduler_factory=_no_scheduler) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "taskgrid: shell completion needs the shtab package: pip install shtab\n")


def test_completion_of_another_shell_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "tcsh"], scheduler_factory=_no_scheduler) == 2


def test_tasks_says_when_more_rows_exist(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "task_count", 150))
    code, out, err = h.run("tasks")
    assert code == 0 and len(out.splitlines()) == 1 + 100
    assert err == ("taskgrid: more tasks exist (showing the newest 100): use --limit N or "
                   "--all\n")
    assert h.fake is not None and h.fake.calls[0][2]["limit"] == 101  # one more than shown
    code, out, err = h.run("tasks", "--limit", "149")
    assert len(out.splitlines()) == 1 + 149 and "more tasks exist" in err
    code, out, err = h.run("tasks", "--limit", "150")
    assert len(out.splitlines()) == 1 + 150 and err == ""


def test_tasks_all_pages_through_everything(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "task_count", 1500))
    code, out, err = h.run("tasks", "--all")
    assert code == 0 and len(out.splitlines()) == 1 + 1500 and err == ""
    assert h.fake is not None and h.fake.calls[0][2]["limit"] is None


def test_tasks_json_has_the_rows_and_whether_more_exist(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "task_count", 5))
    code, out, err = h.run("tasks", "--limit", "3", "--json")
    doc = json.loads(out)
    assert code == 0 and err == ""
    assert [t["id"] for t in doc["tasks"]] == [5, 4, 3]
    assert (doc["count"], doc["more"], doc["limit"]) == (3, True, 3)
    doc = json.loads(h.run("tasks", "--all", "--json")[1])
    assert (doc["count"], doc["more"], doc["limit"]) == (5, False, None)


@pytest.mark.parametrize("argv", [["tasks", "--limit", "0"], ["tasks", "--all", "--limit", "5"]])
def test_tasks_bad_limits_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv, scheduler_factory=_no_scheduler) == 2


@pytest.mark.parametrize("command", ["disable", "terminate", "kill"])
def test_dangerous_worker_commands_need_a_target_or_all(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command], scheduler_factory=_no_scheduler) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--all" in err and "every worker" in err
    assert cli.main([command, "--all", "--worker", "w1"], scheduler_factory=_no_scheduler) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_keeps_reaching_every_worker_by_default(h: Harness) -> None:
    code, out, _ = h.run("resume")
    assert code == 0 and out == "w1\n"
    assert h.fake is not None
    assert h.fake.calls == [("kill", (), {"group_names": None, "worker_name": None})]


@pytest.mark.parametrize("command", ["disable", "terminate", "kill"])
@pytest.mark.parametrize("target", [["--worker", "nobody"], ["--group", "nogroup"]])
def test_a_worker_target_that_matches_nobody_exits_3(
    h: Harness, command: str, target: list[str]
) -> None:
    h.setup.append(lambda f: setattr(f, "changed", []))
    code, out, err = h.run(command, *target)
    assert code == 3 and out == "" and err.count("\n") == 1
    assert "no live worker" in err and target[1] in err


@pytest.mark.parametrize("target", [["--worker", "w1"], ["--group", "main"], ["--all"]])
def test_a_target_already_in_that_status_is_not_an_error(h: Harness, target: list[str]) -> None:
    h.setup.append(lambda f: setattr(f, "changed", []))
    code, out, err = h.run("disable", *target)
    assert code == 0 and out == "" and "no worker changed" in err


INTERNALS = ("uuid", "attempt", "lost_count", "stop_requested", "broadcast_parent",
             "target_worker_name", "retry_backoff", "sync_output")


def test_status_shows_what_a_user_needs_by_default(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "task", task(
        status=TaskStatus.COMPLETED, times_run=1, assigned_worker_name="w1",
        last_run_time=T0)))
    code, out, _ = h.run("status", "12")
    fields = _fields(out)
    assert code == 0
    assert {k: fields[k] for k in ("id", "status", "name", "function", "args", "group",
                                   "times run", "times failed", "worker", "result",
                                   "next run")} == {
        "id": "12", "status": "COMPLETED", "name": "add", "function": "add", "args": "[1, 2]",
        "group": "main", "times run": "1", "times failed": "0", "worker": "w1", "result": "3",
        "next run": "-"}  # an ended task has no next run
    assert fields["start time"] == "2024-05-06 07:08:09+00:00"
    for name in INTERNALS:
        assert name not in fields, name
    assert "line 1" not in out  # the output only with --output


def test_status_of_a_queued_task_shows_its_next_run(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "run", None))
    code, out, _ = h.run("status", "12")
    fields = _fields(out)
    assert fields["next run"] == "2024-05-06 07:08:09+00:00" and fields["worker"] == "-"
    assert "result" not in fields and fields["waiting"].startswith("no live worker")


def test_status_of_a_failed_task_shows_the_last_traceback_line(h: Harness) -> None:
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad input\n'
    h.setup.append(lambda f: setattr(f, "task", task(status=TaskStatus.FAILED)))
    h.setup.append(lambda f: setattr(f, "run", run(status=RunStatus.FAILED, run_result=None,
                                                   traceback=tb)))
    code, out, _ = h.run("status", "12")
    assert _fields(out)["error"] == "ValueError: bad input" and "result" not in _fields(out)
    code, out, _ = h.run("status", "12", "--output")
    assert "  traceback:" in out.splitlines() and "    ValueError: bad input" in out


def test_status_verbose_shows_the_internals_and_the_latest_run(h: Harness) -> None:
    code, out, _ = h.run("status", "12", "--verbose")
    fields = _fields(out)
    assert code == 0
    for name in INTERNALS:
        assert name in fields, name
    assert fields["uuid"] == "u-12" and "latest run:" in out.splitlines()


def test_an_unset_retry_delay_reads_unset(h: Harness) -> None:
    code, out, _ = h.run("status", "12", "-v")
    assert _fields(out)["retry_delay"] == "unset"
    h.setup.append(lambda f: setattr(f, "task", task(retry_delay=2.5)))
    code, out, _ = h.run("status", "12", "-v")
    assert _fields(out)["retry_delay"] == "2.5"
    code, out, _ = h.run("status", "12", "--json")
    assert json.loads(out)["task"]["retry_delay"] == 2.5


def test_a_command_task_failure_summary_keeps_its_exit_code(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "run", run(status=RunStatus.FAILED, run_result=None,
                                                   traceback="exit code 4\nbad input\n")))
    assert _fields(h.run("status", "12")[1])["error"] == "exit code 4: bad input"
