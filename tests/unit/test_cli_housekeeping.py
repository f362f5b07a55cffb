"""The client command line's wait, update, requeue, enable-task, disable-task and delete,
driven through main() with a fake Scheduler (no coordinator, no sockets)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskgrid.client import (
    ChangedResult,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RunStatus,
    TaskStatus,
    TaskStatusResult,
    UpdateResult,
    WaitTimeoutError,
    cli,
)
from taskgrid.client._cli_parse import parse_duration
from tests.unit.test_cli_parse import FakeScheduler, run, task
from tests.unit.test_cli_parse import Harness as BaseHarness


class Fake(FakeScheduler):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.final = TaskStatusResult(task(status=TaskStatus.COMPLETED), run(), 3)
        self.update_answer: UpdateResult | None = None
        self.changed_answer = ChangedResult(count=2, task_ids=(3, 4))

    def wait(self, ref: Any, timeout: float | None = None) -> TaskStatusResult:
        self._call("wait", ref, timeout=timeout)
        return self.final

    def update_task(self, ref: Any, **fields: Any) -> UpdateResult:
        self._call("update_task", ref, **fields)
        if self.update_answer is not None:
            return self.update_answer
        return UpdateResult(task=task(**{k: (0.0 if k == "retry_delay" else v)
                                         for k, v in fields.items() if v is not None}))

    def _changed(self, name: str, *refs: Any, **kwargs: Any) -> ChangedResult:
        self._call(name, *refs, **kwargs)
        return self.changed_answer

    def requeue(self, *refs: Any, **kwargs: Any) -> ChangedResult:
        return self._changed("requeue", *refs, **kwargs)

    def enable_tasks(self, *refs: Any, **kwargs: Any) -> ChangedResult:
        return self._changed("enable_tasks", *refs, **kwargs)

    def disable_tasks(self, *refs: Any, **kwargs: Any) -> ChangedResult:
        return self._changed("disable_tasks", *refs, **kwargs)

    def delete_tasks(self, *refs: Any, **kwargs: Any) -> ChangedResult:
        return self._changed("delete_tasks", *refs, **kwargs)


class Harness(BaseHarness):
    fake: Fake | None

    def __init__(self) -> None:
        super().__init__(Fake)

    @property
    def calls(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        assert self.fake is not None
        return self.fake.calls


@pytest.fixture
def h() -> Harness:
    return Harness()


def _no_scheduler(target: str) -> Any:
    raise AssertionError("no scheduler should be built")


# -- wait ------------------------------------------------------------------------------------------


def test_wait_prints_the_final_status_and_result(h: Harness) -> None:
    code, out, err = h.run("wait", "12", "--timeout", "30")
    assert code == 0 and err == ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["status"] == "COMPLETED" and fields["result"] == "3"
    assert h.calls == [("wait", (12,), {"timeout": 30.0})]
    code, out, _ = h.run("wait", "u-12", "--json")
    doc = json.loads(out)
    assert doc["task"]["status"] == "COMPLETED" and doc["result"] == 3 and doc["exit_code"] == 0
    assert h.calls == [("wait", ("u-12",), {"timeout": None})]


@pytest.mark.parametrize(("status", "code"), [
    (TaskStatus.FAILED, 10), (TaskStatus.TIMEOUT, 11), (TaskStatus.STOPPED, 12),
    (TaskStatus.EXPIRED, 13),
])
def test_wait_exit_code_says_how_the_task_ended(h: Harness, status: TaskStatus, code: int
                                                ) -> None:
    tb = "Traceback (most recent call last):\nValueError: nope\n"
    final = TaskStatusResult(task(status=status),
                             run(status=RunStatus.FAILED, run_result=None, traceback=tb), None)
    h.setup.append(lambda f: setattr(f, "final", final))
    got, out, _ = h.run("wait", "12")
    assert got == code
    assert "error:" in out and "ValueError: nope" in out and "  traceback:" in out
    got, out, _ = h.run("wait", "12", "--json")
    assert got == code and json.loads(out)["exit_code"] == code


def test_wait_of_a_task_that_never_ran(h: Harness) -> None:
    final = TaskStatusResult(task(status=TaskStatus.EXPIRED), None, None)
    h.setup.append(lambda f: setattr(f, "final", final))
    code, out, _ = h.run("wait", "12")
    assert code == 13 and "EXPIRED" in out and "result" not in out


@pytest.mark.parametrize(("error", "code"), [
    (WaitTimeoutError("task 12 has not ended after 1 s (it is RUNNING)"), 14),
    (NotFoundError("task 12 not found"), 3),
])
def test_wait_errors(h: Harness, error: Exception, code: int) -> None:
    h.setup.append(lambda f: setattr(f, "fail", error))
    got, out, err = h.run("wait", "12", "--timeout", "1")
    assert got == code and out == "" and err == f"taskgrid: {error}\n"


@pytest.mark.parametrize("timeout", ["-1", "nan"])
def test_wait_refuses_a_bad_timeout_before_calling(timeout: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wait", "1", "--timeout", timeout], scheduler_factory=_no_scheduler) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_exit_codes_of_wait_are_distinct_from_the_others() -> None:
    codes = [cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_INVALID, cli.EXIT_NOT_FOUND,
             cli.EXIT_UNAVAILABLE, cli.EXIT_AUTH, cli.EXIT_FAILED, cli.EXIT_TIMEOUT,
             cli.EXIT_STOPPED, cli.EXIT_EXPIRED, cli.EXIT_WAIT_TIMEOUT]
    assert codes == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14]
    assert cli.exit_code_for(WaitTimeoutError("x")) == 14


# -- update ----------------------------------------------------------------------------------------


def test_update_sends_only_the_fields_given(h: Harness) -> None:
    code, out, err = h.run("update", "12", "--priority", "5", "--stop-time", "none",
                           "--retry-delay", "unset", "--no-prevent-drift",
                           "--start-time", "2030-01-02T03:04:05", "--period", "30",
                           "--retry-jitter", "0.2")
    assert code == 0 and err == ""
    assert h.calls == [("update_task", (12,), {
        "priority": 5, "stop_time": None, "retry_delay": None, "prevent_drift": False,
        "start_time": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "period": 30,
        "retry_jitter": 0.2})]
    lines = out.splitlines()
    assert lines[0] == "task 12 updated:"
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert fields["priority"] == "5" and fields["retry_delay"] == "unset"
    assert fields["stop_time"] == "-" and fields["prevent_drift"] == "no"


@pytest.mark.parametrize(("flag", "value", "field", "sent"), [
    ("--next-run-time", "2030-01-01T00:00:00+00:00", "next_run_time",
     datetime(2030, 1, 1, tzinfo=UTC)),
    ("--repeats", "0", "repeats", 0), ("--timeout", "9", "timeout", 9),
    ("--retry-failed", "-1", "retry_failed", -1), ("--retry-delay", "2.5", "retry_delay", 2.5),
    ("--retry-backoff", "2", "retry_backoff", 2.0),
    ("--retry-delay-max", "unset", "retry_delay_max", None),
    ("--prevent-drift", None, "prevent_drift", True),
])
def test_update_maps_every_field(h: Harness, flag: str, value: str | None, field: str,
                                 sent: Any) -> None:
    code, _, _ = h.run("update", "u-1", flag, *([value] if value is not None else []))
    assert code == 0 and h.calls == [("update_task", ("u-1",), {field: sent})]


def test_update_field_errors_print_like_queue_and_exit_2(h: Harness) -> None:
    errors = {"timeout": "Enter an integer greater than or equal to 1",
              "period": "must be at least 1"}
    h.setup.append(lambda f: setattr(f, "update_answer", UpdateResult(None, errors)))
    code, out, err = h.run("update", "12", "--timeout", "0", "--period", "0")
    assert code == 2 and out == ""
    assert err.splitlines() == ["taskgrid: not updated: period: must be at least 1",
                                "taskgrid: not updated: timeout: Enter an integer greater "
                                "than or equal to 1"]
    code, out, _ = h.run("update", "12", "--timeout", "0", "--json")
    assert code == 2 and json.loads(out) == {"task": None, "errors": errors}


def test_update_json_has_the_task(h: Harness) -> None:
    code, out, _ = h.run("update", "12", "--priority", "3", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["errors"] == {} and doc["task"]["priority"] == 3


@pytest.mark.parametrize("argv", [["update", "12"], ["update", "12", "--priority", "x"],
                                  ["update", "12", "--stop-time", "tomorrow"], ["update"]])
def test_update_bad_usage_exits_2_before_calling(argv: list[str]) -> None:
    assert cli.main(argv, scheduler_factory=_no_scheduler, stderr=io.StringIO()) == 2


def test_update_of_a_running_task_is_an_error(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "fail", FailedPreconditionError(
        "task 12 is RUNNING: only a QUEUED task can be updated")))
    code, out, err = h.run("update", "12", "--priority", "1")
    assert code == 1 and out == "" and "only a QUEUED task" in err


# -- requeue, enable-task, disable-task, delete ----------------------------------------------------

BULK = [("requeue", "requeue", "requeued"), ("enable-task", "enable_tasks", "enabled"),
        ("disable-task", "disable_tasks", "disabled"), ("delete", "delete_tasks", "deleted")]


@pytest.mark.parametrize(("command", "method", "done"), BULK)
def test_bulk_commands_by_ref(h: Harness, command: str, method: str, done: str) -> None:
    code, out, err = h.run(command, "3", "u-4")
    assert code == 0 and err == "" and out == f"{done} 2 tasks: 3, 4\n"
    assert h.calls == [(method, (3, "u-4"), {})]
    code, out, _ = h.run(command, "3", "--json")
    assert code == 0 and json.loads(out) == {"count": 2, "task_ids": [3, 4]}


@pytest.mark.parametrize(("command", "method", "done"), BULK)
def test_bulk_commands_by_filter(h: Harness, command: str, method: str, done: str) -> None:
    code, _, _ = h.run(command, "--status", "failed", "--status", "TIMEOUT", "--group", "g",
                       "--function", "f", "--name", "n")
    assert code == 0
    assert h.calls == [(method, (), {"status": ["FAILED", "TIMEOUT"], "group_name": "g",
                                     "function_name": "f", "task_name": "n"})]
    code, _, _ = h.run(command, "--all")
    assert code == 0 and h.calls == [(method, (), {"all": True})]
    code, _, _ = h.run(command, "--all", "--group", "g")
    assert code == 0 and h.calls == [(method, (), {"group_name": "g", "all": True})]


@pytest.mark.parametrize("command", ["requeue", "delete"])
def test_finished_before_and_older_than(h: Harness, command: str) -> None:
    code, _, _ = h.run(command, "--finished-before", "2030-01-02T00:00:00")
    assert code == 0 and h.calls[0][2] == {"finished_before": datetime(2030, 1, 2, tzinfo=UTC)}
    before = datetime.now(UTC)
    code, _, _ = h.run(command, "--older-than", "7d")
    after = datetime.now(UTC)
    sent = h.calls[0][2]["finished_before"]
    assert code == 0 and before - timedelta(days=7) <= sent <= after - timedelta(days=7)


@pytest.mark.parametrize("command", ["enable-task", "disable-task"])
def test_enabling_takes_no_finished_filter(command: str) -> None:
    assert cli.main([command, "--older-than", "1d"], scheduler_factory=_no_scheduler,
                    stderr=io.StringIO()) == 2


def test_requeue_keep_counters(h: Harness) -> None:
    code, _, _ = h.run("requeue", "--status", "FAILED", "--keep-counters")
    assert code == 0 and h.calls == [("requeue", (), {"status": ["FAILED"],
                                                      "keep_counters": True})]


@pytest.mark.parametrize("command", ["requeue", "enable-task", "disable-task", "delete"])
@pytest.mark.parametrize("extra", [[], ["--keep-counters"]])
def test_bulk_without_ref_filter_or_all_exits_2_before_calling(
    command: str, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if extra and command != "requeue":
        return
    assert cli.main([command, *extra], scheduler_factory=_no_scheduler) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--all" in err and err.startswith("taskgrid: ")


@pytest.mark.parametrize("extra", [["--all"], ["--status", "FAILED"]])
def test_bulk_refs_and_filters_together_exit_2(extra: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["delete", "3", *extra], scheduler_factory=_no_scheduler) == 2
    assert "not both" in capsys.readouterr().err


def test_bulk_counts_read_naturally(h: Harness) -> None:
    h.setup.append(lambda f: setattr(f, "changed_answer", ChangedResult(1, (7,))))
    assert h.run("delete", "7")[1] == "deleted 1 task: 7\n"
    h.setup.append(lambda f: setattr(f, "changed_answer", ChangedResult(0, ())))
    assert h.run("requeue", "--all")[1] == "requeued 0 tasks\n"
    many = ChangedResult(12, tuple(range(1, 13)))
    h.setup.append(lambda f: setattr(f, "changed_answer", many))
    assert h.run("requeue", "--all")[1] == "requeued 12 tasks\n"
    code, out, _ = h.run("requeue", "--all", "--json")
    assert json.loads(out) == {"count": 12, "task_ids": list(range(1, 13))}


@pytest.mark.parametrize(("error", "code"), [
    (NotFoundError("task 99 not found"), 3),
    (FailedPreconditionError("task 3 has not ended"), 1),
    (PermissionDeniedError("changing tasks by filter needs the admin role"), 5),
    (InvalidArgumentError("give task refs or filters, not both"), 2),
])
def test_bulk_errors(h: Harness, error: Exception, code: int) -> None:
    h.setup.append(lambda f: setattr(f, "fail", error))
    got, out, err = h.run("requeue", "--status", "FAILED")
    assert got == code and out == "" and err.count("\n") == 1 and str(error) in err


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("1.5h", 5400), ("7D", 604800),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "7y", "-1d", "1 day"])
def test_bad_durations_exit_2(text: str) -> None:
    assert cli.main(["delete", "--older-than", text], scheduler_factory=_no_scheduler,
                    stderr=io.StringIO()) == 2
