"""Conversions between taskgrid.v1 messages and client records, RPC error mapping, and the
Scheduler's handling of answers, all without a socket (stubs are replaced by fakes)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from taskgrid.client import (
    CancelledError,
    CommandSpec,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    JobGraph,
    JobTask,
    NotFoundError,
    OutputChunk,
    PermissionDeniedError,
    ProtocolError,
    QueueResult,
    RunRecord,
    RunStatus,
    Scheduler,
    TaskgridError,
    TaskRecord,
    TaskStatus,
    TaskStatusResult,
    UnauthenticatedError,
    UnavailableError,
    WorkerRecord,
    WorkerStatus,
    _channel,
    _convert,
    _requests,
)
from taskgrid.v1 import admin_pb2, client_pb2, common_pb2

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def make_task(**overrides: Any) -> TaskRecord:
    fields: dict[str, Any] = dict(
        id=7, uuid="u-7", task_name="nightly add", group_name="g1", status=TaskStatus.RUNNING,
        function_name="add", args=[1, "two", {"x": [3]}], vars={"a": 1, "b": None},
        enabled=True, start_time=T0, next_run_time=T0 + timedelta(minutes=1),
        stop_time=T0 + timedelta(days=1), repeats=3, retry_failed=-1, period=90,
        prevent_drift=True, cronline="*/5 * * * *", timeout=30, sync_output=2, times_run=2,
        times_failed=1, last_run_time=T0 + timedelta(seconds=5), assigned_worker_name="w1",
        broadcast=False, priority=-4, discard_results=True, attempt=5, lost_count=1,
        stop_requested=True, retry_delay=2.5, retry_backoff=2.0, retry_delay_max=60.0,
        retry_jitter=0.1, broadcast_parent=3, target_worker_name="w1",
    )
    fields.update(overrides)
    return TaskRecord(**fields)


def make_run(**overrides: Any) -> RunRecord:
    fields: dict[str, Any] = dict(
        id=11, task_id=7, attempt=5, status=RunStatus.COMPLETED, start_time=T0,
        stop_time=T0 + timedelta(seconds=1), run_output="hello\n", run_result='{"sum": 3}',
        traceback="", worker_name="w1",
    )
    fields.update(overrides)
    return RunRecord(**fields)


def make_worker(**overrides: Any) -> WorkerRecord:
    fields: dict[str, Any] = dict(
        worker_name="w1", status=WorkerStatus.DISABLED, first_heartbeat=T0,
        last_heartbeat=T0 + timedelta(seconds=3), group_names=("main", "g1"),
        functions=("add", "mul"), capacity=4, language="python", alive=True, running=(7, 8),
        rss_bytes=123456789, heartbeat=0.5, hostname="box", pid=4242, capabilities=("command",),
    )
    fields.update(overrides)
    return WorkerRecord(**fields)


# -- records <-> protos -----------------------------------------------------------------------


def test_task_round_trips_through_proto() -> None:
    record = make_task()
    message = _convert.task_to_proto(record)
    assert json.loads(message.args) == record.args
    assert message.start_time.ToDatetime(tzinfo=UTC) == T0
    assert _convert.task_from_proto(message) == record
    again = _convert.task_to_proto(_convert.task_from_proto(message))
    assert again == message


def test_task_from_proto_gives_none_for_unset_times_and_empty_cronline() -> None:
    message = common_pb2.Task(id=1, uuid="u", status=common_pb2.TASK_STATUS_QUEUED)
    task = _convert.task_from_proto(message)
    assert task.start_time is None and task.stop_time is None and task.last_run_time is None
    assert task.cronline is None
    assert task.args == [] and task.vars == {}
    assert _convert.task_to_proto(task) == common_pb2.Task(
        id=1, uuid="u", status=common_pb2.TASK_STATUS_QUEUED, args="[]", vars="{}"
    )


def test_task_times_are_aware_utc() -> None:
    message = _convert.task_to_proto(make_task())
    task = _convert.task_from_proto(message)
    assert task.start_time is not None and task.start_time.utcoffset() == timedelta(0)


def test_corrupt_stored_json_falls_back_to_empty_values() -> None:
    message = common_pb2.Task(id=1, status=common_pb2.TASK_STATUS_QUEUED, args="{not json",
                              vars="[1]")
    task = _convert.task_from_proto(message)
    assert task.args == [] and task.vars == {}


def test_unspecified_status_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        _convert.task_from_proto(common_pb2.Task(id=1))
    with pytest.raises(ProtocolError):
        _convert.run_status_from_proto(99)


@pytest.mark.parametrize(
    ("client_enum", "proto_enum", "prefix"),
    [
        (TaskStatus, common_pb2.TaskStatus, "TASK_STATUS_"),
        (RunStatus, common_pb2.RunStatus, "RUN_STATUS_"),
        (WorkerStatus, common_pb2.WorkerStatus, "WORKER_STATUS_"),
    ],
)
def test_status_enums_match_the_proto_names(client_enum: Any, proto_enum: Any, prefix: str) -> None:
    proto_names = {n.removeprefix(prefix) for n in proto_enum.keys()} - {"UNSPECIFIED"}
    assert {m.value for m in client_enum} == proto_names
    to_proto = {
        TaskStatus: _convert.task_status_to_proto,
        RunStatus: _convert.run_status_to_proto,
        WorkerStatus: _convert.worker_status_to_proto,
    }[client_enum]
    from_proto = {
        TaskStatus: _convert.task_status_from_proto,
        RunStatus: _convert.run_status_from_proto,
        WorkerStatus: _convert.worker_status_from_proto,
    }[client_enum]
    for member in client_enum:
        number = to_proto(member)
        assert proto_enum.Name(number) == prefix + member.value
        assert from_proto(number) is member
        assert to_proto(member.value) == number  # plain strings are accepted too


@pytest.mark.parametrize("run_result", ['{"sum": 3}', "null", None])
def test_run_round_trips_through_proto(run_result: str | None) -> None:
    record = make_run(run_result=run_result)
    message = _convert.run_to_proto(record)
    assert message.HasField("run_result") is (run_result is not None)
    assert _convert.run_from_proto(message) == record
    assert _convert.run_to_proto(_convert.run_from_proto(message)) == message


def test_run_result_property_decodes_json() -> None:
    assert make_run().result == {"sum": 3}
    assert make_run(run_result=None).result is None
    assert make_run(run_result="").result is None
    assert make_run(run_result="not json").result == "not json"


def test_running_run_has_no_stop_time() -> None:
    message = _convert.run_to_proto(make_run(status=RunStatus.RUNNING, stop_time=None))
    assert not message.HasField("stop_time")
    assert _convert.run_from_proto(message).stop_time is None


def test_worker_round_trips_through_proto() -> None:
    record = make_worker()
    message = _convert.worker_to_proto(record)
    assert list(message.running) == [7, 8]
    assert _convert.worker_from_proto(message) == record
    assert _convert.worker_to_proto(_convert.worker_from_proto(message)) == message


def test_output_chunk_round_trips_through_proto() -> None:
    record = OutputChunk(task_id=7, attempt=2, run_id=11, seq=3, data="50%\n", clear=True)
    message = _convert.output_to_proto(record)
    assert _convert.output_from_proto(message) == record
    assert _convert.output_to_proto(_convert.output_from_proto(message)) == message


def test_events_become_task_snapshots_or_output_chunks() -> None:
    task = make_task()
    chunk = OutputChunk(task_id=7, attempt=2, run_id=11, seq=1, data="x", clear=False)
    assert _convert.event_from_proto(
        client_pb2.TaskEvent(task=_convert.task_to_proto(task))
    ) == task
    assert _convert.event_from_proto(
        client_pb2.TaskEvent(output=_convert.output_to_proto(chunk))
    ) == chunk
    assert _convert.event_from_proto(client_pb2.TaskEvent()) is None


def test_records_are_frozen() -> None:
    task = make_task()
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.status = TaskStatus.QUEUED  # type: ignore[misc]


# -- queue results and refs -------------------------------------------------------------------


def test_queue_result_success_and_failure() -> None:
    ok = _convert.queue_result_from_proto(client_pb2.QueueTaskResponse(id=3, uuid="u3"))
    assert ok == QueueResult(id=3, uuid="u3", errors={})
    bad = _convert.queue_result_from_proto(
        client_pb2.QueueTaskResponse(
            errors={"timeout": "Enter an integer greater than or equal to 1"}
        )
    )
    assert bad == QueueResult(
        id=None, uuid=None, errors={"timeout": "Enter an integer greater than or equal to 1"}
    )


def test_client_written_errors_replace_the_coordinators_wording() -> None:
    response = client_pb2.QueueTaskResponse(errors={"args": "Not of type list", "x": "invalid"})
    result = _convert.queue_result_from_proto(response, {"args": "cannot be encoded as JSON: .."})
    assert result.errors == {"args": "cannot be encoded as JSON: ..", "x": "invalid"}
    assert result.id is None and result.uuid is None


def test_task_refs() -> None:
    assert _requests.task_ref_to_proto(5) == client_pb2.TaskRef(id=5)
    assert _requests.task_ref_to_proto("abc") == client_pb2.TaskRef(uuid="abc")
    assert _requests.task_ref_to_proto("12") == client_pb2.TaskRef(uuid="12")
    for bad in (True, 1.5, None, [1], b"u"):
        with pytest.raises(TypeError):
            _requests.task_ref_to_proto(bad)


# -- queue_task arguments -> TaskSpec ------------------------------------------------------------


def spec_for(function: Any = "add", pargs: Any = None, pvars: Any = None, **kwargs: Any) -> Any:
    spec, errors = _requests.task_spec_from_call(function, pargs, pvars, kwargs)
    assert errors == {}
    return spec


def errors_for(function: Any = "add", pargs: Any = None, pvars: Any = None,
               **kwargs: Any) -> dict[str, str]:
    """The field errors the client finds itself in a queue_task call (nothing is sent)."""
    return _requests.task_spec_from_call(function, pargs, pvars, kwargs)[1]


def test_spec_field_tables_cover_the_task_spec_exactly() -> None:
    typed = (
        _requests.SPEC_STRING_FIELDS | _requests.SPEC_BOOL_FIELDS | _requests.SPEC_INT_FIELDS
        | _requests.SPEC_FLOAT_FIELDS | _requests.SPEC_TIME_FIELDS
    )
    proto = {f.name for f in common_pb2.TaskSpec.DESCRIPTOR.fields}
    assert typed | {"function_name", "args", "vars", "command", "args_value",
                    "vars_value"} == proto


def test_typed_kwargs_fill_typed_fields() -> None:
    spec = spec_for(
        "add", [1, 2], {"k": "v"}, timeout=30, repeats=0, period=60, retry_failed=-1,
        group_name="g", uuid="u1", task_name="t", cronline="@daily", sync_output=1,
        priority=5, enabled=False, prevent_drift=True, immediate=True, broadcast=False,
        discard_results=True, start_time=T0, next_run_time=T0, stop_time=T0 + timedelta(hours=1),
    )
    assert spec.function_name == "add"
    assert json.loads(spec.args) == [1, 2] and json.loads(spec.vars) == {"k": "v"}
    assert (spec.timeout, spec.repeats, spec.period, spec.retry_failed) == (30, 0, 60, -1)
    assert (spec.group_name, spec.uuid, spec.task_name, spec.cronline) == ("g", "u1", "t", "@daily")
    assert (spec.sync_output, spec.priority) == (1, 5)
    assert spec.HasField("enabled") and spec.enabled is False
    assert spec.prevent_drift and spec.immediate and spec.discard_results
    assert spec.HasField("broadcast") and not spec.broadcast
    assert spec.start_time.ToDatetime(tzinfo=UTC) == T0
    assert spec.stop_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(hours=1)


def test_unset_kwargs_leave_fields_unset_for_coordinator_defaults() -> None:
    spec = spec_for("add")
    for name in ("task_name", "group_name", "uuid", "args", "vars", "enabled", "timeout",
                 "repeats", "period", "start_time", "stop_time", "cronline"):
        assert not spec.HasField(name), name


def test_none_values_mean_default() -> None:
    spec = spec_for("add", uuid=None, task_name=None, start_time=None, stop_time=None,
                    cronline=None, timeout=None)
    assert not any(spec.HasField(n) for n in ("uuid", "task_name", "start_time", "timeout"))


def test_falsy_uuid_and_task_name_mean_default_as_in_web2py() -> None:
    spec = spec_for("add", uuid="", task_name="")
    assert not spec.HasField("uuid") and not spec.HasField("task_name")
    spec = spec_for("add", group_name="")
    assert spec.HasField("group_name") and spec.group_name == ""  # the coordinator judges it


def test_naive_datetimes_are_taken_as_utc_and_aware_ones_converted() -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)
    plus2 = datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    spec = spec_for("add", start_time=naive, stop_time=plus2)
    assert spec.start_time.ToDatetime(tzinfo=UTC) == naive.replace(tzinfo=UTC)
    assert spec.stop_time.ToDatetime(tzinfo=UTC) == naive.replace(tzinfo=UTC)


def test_function_may_be_anything_with_a_name() -> None:
    def nightly() -> None:
        pass

    assert spec_for(nightly).function_name == "nightly"
    assert spec_for(len).function_name == "len"
    assert spec_for(TaskRecord).function_name == "TaskRecord"


def test_function_without_a_name_is_a_client_error() -> None:
    assert errors_for(42) == {"function_name": "must be a string"}


def test_args_and_vars_json_strings_take_precedence_when_truthy() -> None:
    spec = spec_for("add", [9], {"z": 9}, args="[1, 2]", vars='{"a": 1}')
    assert spec.args == "[1, 2]" and spec.vars == '{"a": 1}'
    spec = spec_for("add", [9], {"z": 9}, args="", vars=None)
    assert json.loads(spec.args) == [9] and json.loads(spec.vars) == {"z": 9}


def test_args_strings_are_passed_unjudged() -> None:
    spec = spec_for("add", args="{not json")
    assert spec.args == "{not json"


def test_non_string_args_kwarg_is_a_client_error() -> None:
    spec, errors = _requests.task_spec_from_call("add", None, None, {"args": [1, 2],
                                                                     "vars": {"a": 1}})
    assert not spec.HasField("args") and not spec.HasField("vars")
    assert errors == {"args": "must be JSON text", "vars": "must be JSON text"}


@pytest.mark.parametrize(("name", "message"), [
    ("args_value", "not a queue_task keyword: give pargs (or args= as JSON text)"),
    ("vars_value", "not a queue_task keyword: give pvars (or vars= as JSON text)"),
])
def test_protobuf_value_fields_are_not_queue_task_keywords(name: str, message: str) -> None:
    assert errors_for(**{name: [1]}) == {name: message}


def test_wrongly_shaped_pargs_are_dumped_for_the_coordinator_to_judge() -> None:
    spec = spec_for("add", pargs={"a": 1}, pvars=[1, 2])
    assert json.loads(spec.args) == {"a": 1} and json.loads(spec.vars) == [1, 2]


@pytest.mark.parametrize("pargs", [[object()], [math.nan], [{1, 2}]])
def test_unencodable_pargs_are_a_client_error(pargs: Any) -> None:
    spec, errors = _requests.task_spec_from_call("add", pargs, None, {})
    assert set(errors) == {"args"} and errors["args"].startswith("cannot be encoded as JSON")
    assert not spec.HasField("args")


def test_unencodable_pvars_are_a_client_error() -> None:
    spec, errors = _requests.task_spec_from_call("add", None, {"when": datetime.now()}, {})
    assert set(errors) == {"vars"} and not spec.HasField("vars")


@pytest.mark.parametrize(
    ("name", "message"),
    [*((n, "read-only field: set by the scheduler") for n in (
        "status", "times_run", "times_failed", "last_run_time", "assigned_worker_name",
        "application_name", "id", "attempt", "lost_count", "stop_requested", "created_at",
        "broadcast_parent", "target_worker_name", "finished_at")),
     ("function_name", "must be a string"),  # the function is queue_task's first argument
     ("raw_fields", "unknown field"), ("no_such_field", "unknown field")],
)
def test_unknown_and_read_only_kwargs_are_client_errors(name: str, message: str) -> None:
    assert errors_for(**{name: "QUEUED"}) == {name: message}


def test_read_only_kwargs_are_errors_even_when_none() -> None:
    assert errors_for(status=None) == {"status": "read-only field: set by the scheduler"}


def test_client_errors_word_fields_as_the_coordinator_did() -> None:
    # The wording of protocol 1.0 to 1.2, when the coordinator judged raw_fields.
    assert _convert.spec_field_error("status") == "read-only field: set by the scheduler"
    assert _convert.spec_field_error("nope") == "unknown field"
    assert _convert.spec_field_error("timeout") == "must be an integer"
    assert _convert.spec_field_error("retry_delay") == "must be a number"
    assert _convert.spec_field_error("start_time") == "must be a timestamp"
    assert _convert.spec_field_error("enabled") == "must be a boolean"
    assert _convert.spec_field_error("uuid") == "must be a string"
    assert _convert.spec_field_error("vars") == "must be JSON text"
    assert _convert.spec_field_error("command") == (
        "must be a command: executable, args, env, cwd")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("timeout", "abc", "must be an integer"),
        ("timeout", "30", "must be an integer"),
        ("timeout", 2.5, "must be an integer"),
        ("timeout", True, "must be an integer"),
        ("timeout", 2**63, "must be an integer"),
        ("repeats", [1], "must be an integer"),
        ("enabled", "yes", "must be a boolean"),
        ("enabled", 1, "must be a boolean"),
        ("group_name", 5, "must be a string"),
        ("cronline", 0, "must be a string"),
        ("start_time", "2030-01-01 00:00:00", "must be a timestamp"),
        ("stop_time", 1700000000, "must be a timestamp"),
    ],
)
def test_values_of_the_wrong_type_are_client_errors(name: str, value: Any, message: str) -> None:
    spec, errors = _requests.task_spec_from_call("add", None, None, {name: value})
    assert not spec.HasField(name)
    assert errors == {name: message}


def test_integral_floats_fit_integer_fields() -> None:
    assert spec_for("add", timeout=30.0).timeout == 30


def test_unknown_kwargs_are_errors_whatever_their_value() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for value in (object(), loop):
        assert errors_for(extra=value) == {"extra": "unknown field"}


# -- RPC errors -------------------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__()
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, CancelledError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNKNOWN, InternalError),
    ],
)
def test_rpc_errors_map_to_the_typed_tree(code: grpc.StatusCode, cls: type) -> None:
    error = _channel.to_taskgrid_error(FakeRpcError(code, "details here"))
    assert type(error) is cls
    assert error.code == code.name and str(error) == "details here"


def test_every_status_code_maps_to_a_taskgrid_error() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        error = _channel.to_taskgrid_error(FakeRpcError(code))
        assert isinstance(error, TaskgridError) and not isinstance(error, grpc.RpcError)
        assert error.message  # a message even without details


def test_deadline_exceeded_counts_as_unavailable() -> None:
    assert issubclass(DeadlineExceededError, UnavailableError)


def test_translated_errors_raise_without_chaining_the_rpc_error() -> None:
    with pytest.raises(NotFoundError) as info, _channel.translated_errors():
        raise FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone")
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- Scheduler over fake stubs ----------------------------------------------------------------


class FakeStub:
    """Records requests; answers from a per-method function."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.requests: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        def call(request: Any, timeout: float | None = None) -> Any:
            self.requests.append((method, request))
            answer = self.answers[method]
            return answer(request) if callable(answer) else answer

        return call


class FakeStream:
    def __init__(self, messages: list[Any], error: grpc.RpcError | None = None) -> None:
        self.messages, self.error, self.cancelled = messages, error, False

    def __iter__(self) -> Iterator[Any]:
        yield from self.messages
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled = True


def raise_(error: Exception) -> Any:
    def answer(request: Any) -> Any:
        raise error

    return answer


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    s = Scheduler("127.0.0.1:1")  # channels connect lazily; the stubs are replaced below
    yield s
    s.close()


def test_task_status_maps_not_found_to_none(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(GetTask=raise_(FakeRpcError(grpc.StatusCode.NOT_FOUND)))
    assert scheduler.task_status(5) is None
    assert scheduler.task_status("u", output=True) is None


def test_task_status_with_output_gives_latest_run_and_result(scheduler: Scheduler) -> None:
    task, run = make_task(), make_run()
    stub = FakeStub(GetTask=client_pb2.GetTaskResponse(
        task=_convert.task_to_proto(task), runs=[_convert.run_to_proto(run)]
    ))
    scheduler._tasks = stub
    assert scheduler.task_status(7) == task
    assert scheduler.task_status("u-7", output=True) == TaskStatusResult(task, run, {"sum": 3})
    assert stub.requests[0][1].ref.id == 7 and not stub.requests[0][1].all_runs
    assert stub.requests[1][1].ref.uuid == "u-7"


def test_task_status_without_runs(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(GetTask=client_pb2.GetTaskResponse(
        task=_convert.task_to_proto(make_task())
    ))
    status = scheduler.task_status(7, output=True)
    assert status is not None and status.run is None and status.result is None


def test_other_errors_are_raised_typed(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(GetTask=raise_(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")))
    with pytest.raises(UnavailableError, match="down"):
        scheduler.task_status(1)
    with pytest.raises(TypeError):
        scheduler.task_status(1.0)  # type: ignore[call-overload]


def test_runs_and_explain(scheduler: Scheduler) -> None:
    runs = [make_run(id=1, attempt=1, status=RunStatus.FAILED), make_run(id=2, attempt=2)]
    scheduler._tasks = FakeStub(GetTask=client_pb2.GetTaskResponse(
        task=_convert.task_to_proto(make_task()), runs=[_convert.run_to_proto(r) for r in runs],
        waiting_reason="no live worker of group g1 offers add",
    ))
    assert scheduler.runs(7) == runs
    assert scheduler._tasks.requests[0][1].all_runs
    assert scheduler.explain(7) == "no live worker of group g1 offers add"
    scheduler._tasks = FakeStub(GetTask=raise_(FakeRpcError(grpc.StatusCode.NOT_FOUND)))
    with pytest.raises(NotFoundError):
        scheduler.runs(7)


def test_queue_task_never_raises_on_bad_values(scheduler: Scheduler) -> None:
    stub = FakeStub()
    scheduler._tasks = stub
    result = scheduler.queue_task("add", timeout="abc", status="QUEUED")
    assert result == QueueResult(None, None, {"timeout": "must be an integer",
                                               "status": "read-only field: set by the scheduler"})
    assert stub.requests == []  # the client's own errors: nothing was sent
    with pytest.raises(TypeError):
        scheduler.queue_task()  # type: ignore[call-arg]


def test_queue_tasks_is_all_or_nothing(scheduler: Scheduler) -> None:
    def answer(request: Any) -> Any:
        return client_pb2.QueueTasksResponse(results=[
            client_pb2.QueueTaskResponse(id=1, uuid="a"),
            client_pb2.QueueTaskResponse(errors={"timeout": "too small"}),
        ])

    stub = FakeStub(QueueTasks=answer)
    scheduler._tasks = stub
    results = scheduler.queue_tasks([
        {"function": "add", "pargs": [1, 2], "timeout": 5},
        {"function": "add", "timeout": 0, "pvars": {"a": 1}},
    ])
    assert results == [
        QueueResult(None, None, {}),
        QueueResult(None, None, {"timeout": "too small"}),
    ]
    (method, request), = stub.requests
    assert method == "QueueTasks" and len(request.tasks) == 2
    assert json.loads(request.tasks[0].args) == [1, 2] and request.tasks[0].timeout == 5
    assert json.loads(request.tasks[1].vars) == {"a": 1}
    with pytest.raises(TypeError):
        scheduler.queue_tasks([{"pargs": [1]}])
    assert scheduler.queue_tasks([]) == []


def test_queue_tasks_with_client_errors_sends_nothing(scheduler: Scheduler) -> None:
    stub = FakeStub()
    scheduler._tasks = stub
    results = scheduler.queue_tasks([
        {"function": "add", "pargs": [1, 2]},
        {"function": "add", "timeout": "soon", "bogus": 1},
    ])
    assert results == [
        QueueResult(None, None, {}),
        QueueResult(None, None, {"timeout": "must be an integer", "bogus": "unknown field"}),
    ]
    assert stub.requests == []


def test_list_tasks_pages_until_the_limit(scheduler: Scheduler) -> None:
    all_tasks = [make_task(id=i) for i in range(250, 0, -1)]

    def answer(request: Any) -> Any:
        start = int(request.page_token or 0)
        page = all_tasks[start:start + request.page_size]
        more = start + request.page_size < len(all_tasks)
        return client_pb2.ListTasksResponse(
            tasks=[_convert.task_to_proto(t) for t in page],
            next_page_token=str(start + request.page_size) if more else "",
        )

    stub = FakeStub(ListTasks=answer)
    scheduler._tasks = stub
    assert scheduler.list_tasks(limit=5) == all_tasks[:5]
    assert scheduler.list_tasks(limit=None) == all_tasks
    got = scheduler.list_tasks(status=[TaskStatus.RUNNING, "QUEUED"], group_name="g1", limit=120)
    assert got == all_tasks[:120]
    request = stub.requests[-1][1]
    assert list(request.statuses) == [common_pb2.TASK_STATUS_RUNNING, common_pb2.TASK_STATUS_QUEUED]
    assert request.group_name == "g1" and request.function_name == ""
    with pytest.raises(ValueError):
        scheduler.list_tasks(status="NOPE")


def test_watch_yields_records_and_cancels_the_stream(scheduler: Scheduler) -> None:
    chunk = OutputChunk(task_id=7, attempt=5, run_id=11, seq=1, data="hi", clear=False)
    stream = FakeStream([
        client_pb2.TaskEvent(task=_convert.task_to_proto(make_task())),
        client_pb2.TaskEvent(output=_convert.output_to_proto(chunk)),
        client_pb2.TaskEvent(task=_convert.task_to_proto(make_task(status=TaskStatus.COMPLETED))),
    ])
    scheduler._tasks = FakeStub(WatchTask=stream)
    events = scheduler.watch(7)
    first = next(events)
    assert isinstance(first, TaskRecord)
    assert next(events) == chunk
    events.close()
    assert stream.cancelled
    stream = FakeStream([], FakeRpcError(grpc.StatusCode.NOT_FOUND, "no task 7"))
    scheduler._tasks = FakeStub(WatchTask=stream)
    with pytest.raises(NotFoundError):
        list(scheduler.watch(7))
    with pytest.raises(TypeError):
        scheduler.watch(None)  # type: ignore[arg-type]


def test_stop_task(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(StopTask=client_pb2.StopTaskResponse(stopped=True))
    assert scheduler.stop_task(3) is True
    scheduler._tasks = FakeStub(StopTask=client_pb2.StopTaskResponse(
        stopped=False, status=common_pb2.TASK_STATUS_COMPLETED, message="already COMPLETED"
    ))
    assert scheduler.stop_task("u") is False
    scheduler._tasks = FakeStub(StopTask=raise_(FakeRpcError(grpc.StatusCode.NOT_FOUND)))
    assert scheduler.stop_task(3) is False


def test_worker_commands_and_listing(scheduler: Scheduler) -> None:
    worker = make_worker()
    stub = FakeStub(
        SetWorkerStatus=lambda r: admin_pb2.SetWorkerStatusResponse(worker_names=["w1", "w2"]),
        ListWorkers=admin_pb2.ListWorkersResponse(workers=[_convert.worker_to_proto(worker)]),
    )
    scheduler._admin = stub
    assert scheduler.kill("main") == ["w1", "w2"]
    assert scheduler.resume(["a", "b"]) == ["w1", "w2"]
    assert scheduler.disable(worker_name="w9") == ["w1", "w2"]
    assert scheduler.terminate() == ["w1", "w2"]
    sent = [r for _, r in stub.requests]
    assert [(r.status, list(r.group_names), r.worker_name) for r in sent] == [
        (common_pb2.WORKER_STATUS_KILL, ["main"], ""),
        (common_pb2.WORKER_STATUS_ACTIVE, ["a", "b"], ""),
        (common_pb2.WORKER_STATUS_DISABLED, [], "w9"),
        (common_pb2.WORKER_STATUS_TERMINATE, [], ""),
    ]
    assert scheduler.get_workers() == {"w1": worker}
    assert stub.requests[-1][1].include_dead is False
    scheduler.get_workers(include_dead=True)
    assert stub.requests[-1][1].include_dead is True


def test_token_and_tls_open_lazily_without_a_call() -> None:
    # tests/integration/test_tls.py covers them end to end
    with Scheduler("127.0.0.1:1", token="secret") as s:
        assert "secret" not in repr(s)
    Scheduler("127.0.0.1:1", tls=True).close()


# -- retry delay fields ---------------------------------------------------------------------


def test_retry_delay_kwargs_fill_the_float_fields() -> None:
    spec = spec_for("add", retry_delay=2.5, retry_backoff=2, retry_delay_max=60,
                    retry_jitter=0.25)
    assert (spec.retry_delay, spec.retry_backoff, spec.retry_delay_max, spec.retry_jitter) == (
        2.5, 2.0, 60.0, 0.25)
    assert not spec_for("add").HasField("retry_delay")
    assert not spec_for("add", retry_delay=None).HasField("retry_delay")


def test_zero_and_negative_delays_are_sent_for_the_coordinator_to_judge() -> None:
    spec = spec_for("add", retry_delay=0, retry_backoff=-1.5)
    assert spec.HasField("retry_delay") and spec.retry_delay == 0.0
    assert spec.retry_backoff == -1.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("retry_delay", "5"), ("retry_delay", True), ("retry_backoff", [2]),
     ("retry_delay_max", 10**400), ("retry_jitter", {"x": 1})],
)
def test_retry_values_of_the_wrong_type_are_client_errors(name: str, value: Any) -> None:
    spec, errors = _requests.task_spec_from_call("add", None, None, {name: value})
    assert not spec.HasField(name)
    assert errors == {name: "must be a number"}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_delays_are_client_errors(value: float) -> None:
    spec, errors = _requests.task_spec_from_call("add", None, None, {"retry_delay": value})
    assert not spec.HasField("retry_delay") and errors == {"retry_delay": "must be a number"}


def test_new_task_fields_reach_the_record() -> None:
    message = common_pb2.Task(
        id=4, status=common_pb2.TASK_STATUS_QUEUED, retry_delay=1.5, retry_backoff=3.0,
        retry_delay_max=30.0, retry_jitter=0.2, broadcast_parent=2, target_worker_name="w2",
    )
    task = _convert.task_from_proto(message)
    assert (task.retry_delay, task.retry_backoff, task.retry_delay_max, task.retry_jitter) == (
        1.5, 3.0, 30.0, 0.2)
    assert task.broadcast_parent == 2 and task.target_worker_name == "w2"
    plain = _convert.task_from_proto(common_pb2.Task(id=5, status=common_pb2.TASK_STATUS_QUEUED))
    assert plain.retry_delay == 0.0 and plain.broadcast_parent == 0
    assert plain.target_worker_name == ""


def test_task_record_covers_every_task_field() -> None:
    # args_value and vars_value are protobuf copies of args and vars, which the record holds
    # decoded exactly (JSON text keeps integers of any size); finished_at is not read yet.
    proto = {f.name for f in common_pb2.Task.DESCRIPTOR.fields}
    record = {f.name for f in dataclasses.fields(TaskRecord)}
    assert record | {"args_value", "vars_value", "finished_at"} == proto


# -- waiting_for ----------------------------------------------------------------------------


def test_task_status_and_waiting_for_report_unmet_prerequisites(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(GetTask=client_pb2.GetTaskResponse(
        task=_convert.task_to_proto(make_task(status=TaskStatus.QUEUED)), waiting_for=[3, 5],
        waiting_reason="waiting for tasks 3, 5",
    ))
    status = scheduler.task_status(7, output=True)
    assert status is not None and status.waiting_for == (3, 5) and status.run is None
    assert isinstance(scheduler.task_status(7), TaskRecord)  # the contract shape is kept
    assert scheduler.waiting_for(7) == (3, 5)
    scheduler._tasks = FakeStub(GetTask=client_pb2.GetTaskResponse(
        task=_convert.task_to_proto(make_task())
    ))
    assert scheduler.waiting_for("u-7") == ()
    status = scheduler.task_status(7, output=True)
    assert status is not None and status.waiting_for == ()
    scheduler._tasks = FakeStub(GetTask=raise_(FakeRpcError(grpc.StatusCode.NOT_FOUND)))
    with pytest.raises(NotFoundError):
        scheduler.waiting_for(7)


# -- JobGraph -------------------------------------------------------------------------------


def job_ok(ids: list[int], layers: list[list[int]]) -> Any:
    """A QueueJob answer writing the request's tasks as `ids`."""
    def answer(request: Any) -> Any:
        assert len(request.tasks) == len(ids)
        return client_pb2.QueueJobResponse(
            results=[client_pb2.QueueTaskResponse(id=i, uuid=f"u{i}") for i in ids],
            layers=[client_pb2.JobLayer(task_ids=layer) for layer in layers],
        )

    return answer


def edges_of(request: Any) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    def node(ref: Any) -> tuple[str, int]:
        kind = ref.WhichOneof("ref")
        return kind, getattr(ref, kind)

    return [(node(e.task), node(e.waits_for)) for e in request.edges]


def test_job_graph_sends_one_request_and_fills_ids(scheduler: Scheduler) -> None:
    stub = FakeStub(QueueJob=job_ok([10, 11, 12], [[10], [11], [12]]))
    scheduler._tasks = stub
    job = JobGraph(scheduler, "nightly")
    a = job.queue_task("extract", pargs=[1], timeout=5)
    b = job.queue_task("load", pvars={"k": 1}, retry_delay=1.5)
    c = job.queue_task(len)
    assert isinstance(a, JobTask) and (a.index, b.index, c.index) == (0, 1, 2)
    assert a.id is None and a.uuid is None and a.job is job and c.function_name == "len"
    job.add_deps(b, a)
    job.add_deps(c, b)
    job.add_deps(a, 42)  # an existing task
    assert stub.requests == []  # nothing is sent before validate
    layers = job.validate()
    assert layers == [{10}, {11}, {12}]
    (method, request), = stub.requests
    assert method == "QueueJob" and request.job_name == "nightly"
    assert [t.function_name for t in request.tasks] == ["extract", "load", "len"]
    assert json.loads(request.tasks[0].args) == [1] and request.tasks[0].timeout == 5
    assert json.loads(request.tasks[1].vars) == {"k": 1} and request.tasks[1].retry_delay == 1.5
    assert edges_of(request) == [
        (("index", 1), ("index", 0)), (("index", 2), ("index", 1)), (("index", 0), ("task_id", 42)),
    ]
    assert (a.id, b.id, c.id) == (10, 11, 12) and b.uuid == "u11"
    assert job.errors == {} and job.validated and job.tasks == (a, b, c)


def test_job_graph_default_name_and_arguments_snapshot(scheduler: Scheduler) -> None:
    stub = FakeStub(QueueJob=job_ok([1], [[1]]))
    scheduler._tasks = stub
    job = JobGraph(scheduler)
    pargs = [1]
    job.queue_task("add", pargs)
    pargs.append(2)  # encoded at queue_task time, as queue_task sends at once
    assert job.validate() == [{1}]
    request = stub.requests[0][1]
    assert request.job_name == "job_0" and json.loads(request.tasks[0].args) == [1]
    assert list(request.edges) == []


def test_job_graph_failure_returns_none_and_keys_errors(scheduler: Scheduler) -> None:
    def answer(request: Any) -> Any:
        return client_pb2.QueueJobResponse(
            results=[client_pb2.QueueTaskResponse(),
                     client_pb2.QueueTaskResponse(errors={"timeout": "too small"})],
            errors={"edges": "cycle: tasks[0] -> tasks[1] -> tasks[0]"},
        )

    scheduler._tasks = FakeStub(QueueJob=answer)
    job = JobGraph(scheduler, "j")
    a = job.queue_task("add")
    b = job.queue_task("add", timeout=0)
    job.add_deps(a, b)
    job.add_deps(b, a)
    assert job.validate() is None
    assert job.errors == {
        "edges": "cycle: tasks[0] -> tasks[1] -> tasks[0]", "tasks[1].timeout": "too small",
    }
    assert a.id is None and b.id is None and b.uuid is None


def test_job_graph_client_written_errors_are_keyed_by_task(scheduler: Scheduler) -> None:
    stub = FakeStub()
    scheduler._tasks = stub
    job = JobGraph(scheduler)
    a = job.queue_task("add")
    job.queue_task("add", pargs=[object()], bogus=1)
    assert job.validate() is None and job.validated
    assert set(job.errors) == {"tasks[1].args", "tasks[1].bogus"}
    assert job.errors["tasks[1].args"].startswith("cannot be encoded as JSON")
    assert job.errors["tasks[1].bogus"] == "unknown field"
    assert stub.requests == [] and a.id is None  # nothing was sent


def test_job_graph_graph_errors_without_results(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(QueueJob=client_pb2.QueueJobResponse(
        errors={"edges": "task 99 does not exist"}
    ))
    job = JobGraph(scheduler)
    t = job.queue_task("add")
    job.add_deps(t, 99)
    assert job.validate() is None and job.errors == {"edges": "task 99 does not exist"}


def test_job_graph_is_validated_once(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(QueueJob=job_ok([1], [[1]]))
    job = JobGraph(scheduler, "once")
    t = job.queue_task("add")
    assert job.validate() == [{1}]
    with pytest.raises(RuntimeError, match="validated already"):
        job.validate()
    with pytest.raises(RuntimeError):
        job.queue_task("add")
    with pytest.raises(RuntimeError):
        job.add_deps(t, 1)
    failed = JobGraph(scheduler)
    scheduler._tasks = FakeStub(QueueJob=client_pb2.QueueJobResponse(errors={"edges": "cycle"}))
    assert failed.validate() is None
    with pytest.raises(RuntimeError):
        failed.validate()


def test_job_graph_stays_open_when_the_call_fails(scheduler: Scheduler) -> None:
    scheduler._tasks = FakeStub(QueueJob=raise_(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")))
    job = JobGraph(scheduler)
    job.queue_task("add")
    with pytest.raises(UnavailableError):
        job.validate()
    assert not job.validated
    scheduler._tasks = FakeStub(QueueJob=job_ok([3], [[3]]))
    assert job.validate() == [{3}] and job.tasks[0].id == 3


def test_add_deps_checks_its_arguments_at_once(scheduler: Scheduler) -> None:
    job, other = JobGraph(scheduler), JobGraph(scheduler)
    t = job.queue_task("add")
    stranger = other.queue_task("add")
    with pytest.raises(ValueError, match="another JobGraph"):
        job.add_deps(t, stranger)
    for bad in ("12", 1.0, True, None, [1]):
        with pytest.raises(TypeError):
            job.add_deps(t, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            job.add_deps(bad, t)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        job.queue_task()  # type: ignore[call-arg]
    assert "tasks=1" in repr(job) and "index=0" in repr(t)


@pytest.mark.parametrize(
    "response",
    [
        client_pb2.QueueJobResponse(results=[client_pb2.QueueTaskResponse(id=1, uuid="a")]),
        client_pb2.QueueJobResponse(),
        client_pb2.QueueJobResponse(results=[client_pb2.QueueTaskResponse(),
                                             client_pb2.QueueTaskResponse(id=2, uuid="b")]),
    ],
)
def test_job_answers_that_do_not_match_are_protocol_errors(
    scheduler: Scheduler, response: Any
) -> None:
    scheduler._tasks = FakeStub(QueueJob=response)
    job = JobGraph(scheduler)
    job.queue_task("add")
    job.queue_task("add")
    with pytest.raises(ProtocolError):
        job.validate()
    assert job.validated  # an answer arrived: the job may have been written


def test_job_answer_conversion() -> None:
    response = client_pb2.QueueJobResponse(
        results=[client_pb2.QueueTaskResponse(id=4, uuid="d")],
        layers=[client_pb2.JobLayer(task_ids=[4, 2]), client_pb2.JobLayer(task_ids=[])],
    )
    results, errors, layers = _convert.job_answer_from_proto(response, [{}])
    assert results == [QueueResult(4, "d", {})] and errors == {} and layers == [{2, 4}, set()]
    empty = _convert.job_answer_from_proto(client_pb2.QueueJobResponse(), [])
    assert empty == ([], {}, [])


# -- command tasks --------------------------------------------------------------------------


def test_task_command_round_trips_through_proto() -> None:
    command = CommandSpec("/bin/sh", ("-c", "echo hi"), {"B": "2", "A": "1"}, "/tmp")
    record = make_task(function_name="@command", command=command)
    message = _convert.task_to_proto(record)
    assert message.command == common_pb2.Command(
        executable="/bin/sh", args=["-c", "echo hi"], env={"A": "1", "B": "2"}, cwd="/tmp")
    assert _convert.task_from_proto(message) == record
    assert command.argv == ("/bin/sh", "-c", "echo hi")
    plain = _convert.task_from_proto(_convert.task_to_proto(make_task()))
    assert plain.command is None and not _convert.task_to_proto(plain).HasField("command")


def test_a_command_without_cwd_has_none() -> None:
    message = common_pb2.Task(id=1, status=common_pb2.TASK_STATUS_QUEUED,
                              command=common_pb2.Command(executable="ls"))
    assert _convert.task_from_proto(message).command == CommandSpec("ls", (), {}, None)


@pytest.mark.parametrize("value", [
    {"executable": "ls", "args": ["-l"], "env": {"K": "V"}, "cwd": "/tmp"},
    {"executable": "ls", "args": ("-l",), "env": {"K": "V"}, "cwd": "/tmp"},
    CommandSpec("ls", ("-l",), {"K": "V"}, "/tmp"),
])
def test_command_kwarg_fills_the_spec(value: Any) -> None:
    spec = spec_for("@command", command=value)
    assert spec.function_name == "@command"
    assert spec.command == common_pb2.Command(executable="ls", args=["-l"], env={"K": "V"},
                                              cwd="/tmp")


def test_command_kwarg_optional_keys() -> None:
    spec = spec_for("@command", command={"executable": "true", "env": None, "cwd": None})
    assert spec.command == common_pb2.Command(executable="true")
    assert not spec_for("add", command=None).HasField("command")


@pytest.mark.parametrize("value", [
    "ls -l", ["ls", "-l"], {"args": ["x"]}, {"executable": 3}, {"executable": "ls", "args": "-l"},
    {"executable": "ls", "args": [1]}, {"executable": "ls", "env": {"K": 1}},
    {"executable": "ls", "env": ["K=V"]}, {"executable": "ls", "cwd": 5},
    {"executable": "ls", "shell": True},
])
def test_misshapen_commands_are_client_errors(value: Any) -> None:
    spec, errors = _requests.task_spec_from_call("@command", None, None, {"command": value})
    assert not spec.HasField("command")
    assert errors == {"command": "must be a command: executable, args, env, cwd"}


def test_queue_command_builds_the_command_task(scheduler: Scheduler) -> None:
    stub = FakeStub(QueueTask=client_pb2.QueueTaskResponse(id=5, uuid="u5"))
    scheduler._tasks = stub
    result = scheduler.queue_command(["/bin/echo", "a b", "c"], env={"K": "V"}, cwd="/srv",
                                     timeout=5, retry_failed=2, group_name="g")
    assert result == QueueResult(5, "u5")
    spec = stub.requests[0][1].task
    assert spec.function_name == "@command" and spec.timeout == 5 and spec.retry_failed == 2
    assert spec.group_name == "g"
    assert spec.command == common_pb2.Command(executable="/bin/echo", args=["a b", "c"],
                                              env={"K": "V"}, cwd="/srv")
    scheduler.queue_command(("true",))
    assert stub.requests[1][1].task.command == common_pb2.Command(executable="true")


@pytest.mark.parametrize(("argv", "env"), [("ls -l", None), (["ls", 3], None),
                                           (["ls"], {"K": 1})])
def test_queue_command_never_raises_on_bad_values(
    scheduler: Scheduler, argv: Any, env: Any
) -> None:
    stub = FakeStub()
    scheduler._tasks = stub
    result = scheduler.queue_command(argv, env=env, timeout="soon")
    assert result == QueueResult(None, None, {
        "command": "must be a command: executable, args, env, cwd",
        "timeout": "must be an integer"})
    assert stub.requests == []


def test_queue_command_with_an_empty_argv_leaves_the_verdict_to_the_coordinator(
    scheduler: Scheduler,
) -> None:
    stub = FakeStub(QueueTask=client_pb2.QueueTaskResponse(
        errors={"command": "executable must not be empty"}))
    scheduler._tasks = stub
    assert scheduler.queue_command([]).errors == {"command": "executable must not be empty"}
    assert stub.requests[0][1].task.command == common_pb2.Command(executable="")


def test_job_graph_takes_command_tasks(scheduler: Scheduler) -> None:
    stub = FakeStub(QueueJob=job_ok([10, 11], [[10], [11]]))
    scheduler._tasks = stub
    job = JobGraph(scheduler)
    fetch = job.queue_command(["curl", "-O", "http://x"], cwd="/data", timeout=9)
    load = job.queue_task("load")
    job.add_deps(load, fetch)
    assert job.validate() == [{10}, {11}]
    assert fetch.function_name == "@command" and fetch.id == 10
    spec = stub.requests[0][1].tasks[0]
    assert spec.command == common_pb2.Command(executable="curl", args=["-O", "http://x"],
                                              cwd="/data")
    assert spec.timeout == 9


# -- faults found by the fuzz suite (tests/fuzz) --------------------------------------------------


def _deep_list(n: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("where", ["pargs", "pvars", "args"])
def test_deeply_nested_args_are_errors_not_a_recursion_error(where: str) -> None:
    deep = _deep_list(100_000)
    given: dict[str, Any] = {"pargs": None, "pvars": None}
    kwargs: dict[str, Any] = {}
    if where == "args":
        kwargs["args"] = deep  # not a JSON string: a client error
    else:
        given[where] = deep if where == "pargs" else {"a": deep}
    spec, errors = _requests.task_spec_from_call("add", given["pargs"], given["pvars"], kwargs)
    field = {"pargs": "args", "pvars": "vars", "args": "args"}[where]
    assert not spec.HasField(field)
    if where == "args":
        assert errors == {"args": "must be JSON text"}
    else:
        assert errors == {field: "cannot be encoded as JSON: nested too deeply"}


def test_bad_values_nested_too_deeply_or_holding_themselves_are_plain_errors() -> None:
    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    circular: list[Any] = [1]
    circular.append(circular)
    for value in (_deep_list(100_000), circular, {"k": _deep_list(5000)}, Odd()):
        assert errors_for(bogus=value, timeout=value) == {
            "bogus": "unknown field", "timeout": "must be an integer"}


@pytest.mark.parametrize("when", [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=5))),
])
def test_a_time_outside_the_utc_calendar_is_a_client_error_not_an_overflow(
    when: datetime,
) -> None:
    spec, errors = _requests.task_spec_from_call("add", None, None, {"start_time": when})
    assert not spec.HasField("start_time") and errors == {"start_time": "must be a timestamp"}


def test_a_deeply_nested_stored_result_or_args_is_read_without_raising() -> None:
    from taskgrid.client.records import decode_result

    deep = "[" * 100_000 + "]" * 100_000
    assert decode_result(deep) == deep
    assert _convert._decode_json(deep, [], list) == []
