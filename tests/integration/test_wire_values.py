"""args_value, vars_value and result_value: the protobuf-value forms of a task's JSON text.

What a generated client or grpcurl sends (`json_format.Parse` of the request's JSON) reaches a
real coordinator and a real Python worker; answers carry both forms. The conversions' edge
cases (numbers a double cannot hold, JSON no value can hold, size bounds) are tested on
`convert` directly at the end.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from google.protobuf import json_format, struct_pb2

from taskgrid.coordinator.servicers import convert
from taskgrid.coordinator.validation import validate_task
from taskgrid.v1 import client_pb2, common_pb2
from tests.support.rpc import connect, get
from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until


@pytest.fixture
def stubs(coordinator):
    s = connect(coordinator.address)
    yield s
    s.close()


def parse_queue(text: str) -> client_pb2.QueueTaskRequest:
    """A QueueTaskRequest from its JSON mapping, exactly as grpcurl builds it."""
    return json_format.Parse(text, client_pb2.QueueTaskRequest())


def finished(stubs, task_id: int) -> client_pb2.GetTaskResponse:
    def done():
        view = get(stubs, task_id)
        name = common_pb2.TaskStatus.Name(view.task.status)
        return view if name in ("TASK_STATUS_COMPLETED", "TASK_STATUS_FAILED") else None
    return wait_until(done, timeout=30, desc=f"task {task_id} to finish")


def listed(stubs) -> list[common_pb2.Task]:
    return list(stubs.client.ListTasks(client_pb2.ListTasksRequest()).tasks)


def test_args_value_from_grpcurl_json_runs_add_with_ints(stubs, start_worker):
    start_worker()
    reply = stubs.client.QueueTask(parse_queue(
        '{"task":{"function_name":"add","args_value":[1,2]}}'))
    assert dict(reply.errors) == {} and reply.id > 0
    view = finished(stubs, reply.id)
    assert common_pb2.TaskStatus.Name(view.task.status) == "TASK_STATUS_COMPLETED"
    [run] = view.runs
    assert run.run_result == "3"  # ints reached add: 1.0 + 2.0 would have given "3.0"
    assert run.HasField("result_value") and run.result_value.number_value == 3
    # The task answers both forms: the stored JSON text and the value, round-tripped.
    assert view.task.args == "[1, 2]"
    assert json_format.MessageToDict(view.task.args_value) == [1, 2]
    assert json.loads(json_format.MessageToJson(view.task))["argsValue"] == [1, 2]
    [task] = listed(stubs)
    assert task.args_value == view.task.args_value and task.vars_value == struct_pb2.Struct()
    assert task.HasField("vars_value")  # empty vars: an empty Struct, not unset


def test_vars_value_reaches_the_function_as_keyword_arguments(stubs, start_worker):
    start_worker()
    reply = stubs.client.QueueTask(parse_queue(
        '{"task":{"function_name":"echo","args_value":["a", 1.5, null],'
        '"vars_value":{"k":2,"nested":{"x":[true,3]}}}}'))
    assert dict(reply.errors) == {}
    view = finished(stubs, reply.id)
    [run] = view.runs
    assert json.loads(run.run_result) == [["a", 1.5, None], {"k": 2, "nested": {"x": [True, 3]}}]
    assert '"k": 2' in run.run_result and "2.0" not in run.run_result  # ints, not doubles
    assert json_format.MessageToDict(run.result_value) == json.loads(run.run_result)
    assert json.loads(view.task.vars) == {"k": 2, "nested": {"x": [True, 3]}}
    assert json_format.MessageToDict(view.task.vars_value) == json.loads(view.task.vars)


@pytest.mark.parametrize(("field", "text"), [
    ("args", '{"task":{"function_name":"add","args":"[1, 2]","args_value":[1,2]}}'),
    ("vars", '{"task":{"function_name":"add","vars":"{}","vars_value":{"a":1}}}'),
])
def test_both_forms_of_one_field_are_a_field_error_and_nothing_is_queued(stubs, field, text):
    reply = stubs.client.QueueTask(parse_queue(text))
    assert reply.id == 0 and reply.uuid == ""
    assert dict(reply.errors) == {field: f"give {field} or {field}_value, not both"}
    batch = stubs.client.QueueTasks(client_pb2.QueueTasksRequest(tasks=[
        common_pb2.TaskSpec(function_name="add", args="[1, 2]"), parse_queue(text).task]))
    assert [r.id for r in batch.results] == [0, 0]
    assert dict(batch.results[1].errors) == {field: f"give {field} or {field}_value, not both"}
    assert listed(stubs) == []


def test_values_obey_the_args_limits_as_their_json_text(stubs):
    big = "y" * (1024 * 1024)  # the coordinator's default --max-args-bytes
    reply = stubs.client.QueueTask(client_pb2.QueueTaskRequest(task=common_pb2.TaskSpec(
        function_name="echo", args_value=convert_list([big]))))
    assert reply.id == 0 and "--max-args-bytes" in reply.errors["args"]
    nan = stubs.client.QueueTask(client_pb2.QueueTaskRequest(task=common_pb2.TaskSpec(
        function_name="echo", vars_value=struct_pb2.Struct(
            fields={"a": struct_pb2.Value(number_value=float("nan"))}))))
    assert dict(nan.errors) == {"vars": "vars_value: numbers must be finite"}
    assert listed(stubs) == []


def test_json_text_no_value_holds_exactly_leaves_the_value_unset(stubs):
    huge = "[12345678901234567890, 1]"  # past 2**53: only the JSON text is exact
    reply = stubs.client.QueueTask(client_pb2.QueueTaskRequest(task=common_pb2.TaskSpec(
        function_name="add", args=huge, vars='{"a": 1}')))
    assert dict(reply.errors) == {}
    task = get(stubs, reply.id).task
    assert task.args == huge and not task.HasField("args_value")
    assert json_format.MessageToDict(task.vars_value) == {"a": 1}
    [listed_task] = listed(stubs)
    assert not listed_task.HasField("args_value") and listed_task.args == huge


# -- convert: stored JSON text -> protobuf values ------------------------------------------------


def convert_list(items: list[object]) -> struct_pb2.ListValue:
    value = struct_pb2.ListValue()
    value.extend(items)
    return value


def run_row(result: str | None) -> dict[str, object]:
    return {"id": 1, "task_id": 1, "attempt": 1, "status": "COMPLETED", "run_output": "",
            "traceback": "", "worker_name": "w", "start_time": None, "stop_time": None,
            "run_result": result}


@pytest.mark.parametrize(("text", "expected"), [
    ("3", 3), ('"x"', "x"), ("null", None), ("true", True), ("[1, [2.5]]", [1, [2.5]]),
    ('{"a": {"b": null}}', {"a": {"b": None}}), ("9007199254740992", 2**53),
])
def test_run_results_get_a_value(text, expected):
    run = convert.run_to_proto(run_row(text))
    assert run.HasField("result_value") and run.run_result == text
    assert json_format.MessageToDict(run.result_value) == expected


@pytest.mark.parametrize("text", [
    "9007199254740993", "[1, -12345678901234567890]", '{"a": [NaN]}', "Infinity", "1e400",
    "not json", "[" * 5000 + "]" * 5000, json.dumps(["x" * convert.VALUE_MAX_TEXT]),
])
def test_results_no_value_holds_exactly_leave_it_unset(text):
    run = convert.run_to_proto(run_row(text))
    assert run.run_result == text and not run.HasField("result_value")
    assert not convert.run_to_proto(run_row(None)).HasField("result_value")


def test_values_stay_shallow_enough_for_any_protobuf_decoder():
    depth = convert.VALUE_MAX_DEPTH
    for n, kept in ((depth, True), (depth + 1, False)):
        task = convert.task_to_proto({**task_row(), "args": "[" * n + "]" * n})
        assert task.HasField("args_value") is kept
        reply = client_pb2.GetTaskResponse(task=task, runs=[convert.run_to_proto(
            run_row("[" * n + "]" * n))])
        assert reply.runs[0].HasField("result_value") is kept
        assert client_pb2.GetTaskResponse.FromString(reply.SerializeToString()) == reply


def task_row() -> dict[str, object]:
    row, _ = validate_task({"function_name": "f"}, {}, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert row is not None
    return {**row, "id": 1}


def test_fit_runs_drops_the_value_copies_before_cutting_output():
    run = convert.run_to_proto({**run_row(json.dumps(["r" * 3000])), "run_output": "o" * 3000})
    task = common_pb2.Task(id=1, args=json.dumps(["a" * 3000]))
    task.args_value.extend(["a" * 3000])
    reply = client_pb2.GetTaskResponse(task=task, runs=[run])
    assert convert.fit_runs(reply, reply.ByteSize() - 2000)
    assert not reply.runs[0].HasField("result_value") and reply.task.HasField("args_value")
    assert reply.runs[0].run_output == "o" * 3000  # nothing cut
    assert convert.fit_runs(reply, reply.ByteSize() - 2000)
    assert not reply.task.HasField("args_value") and reply.runs[0].run_output == "o" * 3000
