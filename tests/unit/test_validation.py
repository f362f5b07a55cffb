"""queue_task field validation: errors are data, nothing raised."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from google.protobuf import struct_pb2

from taskgrid.coordinator.servicers import convert
from taskgrid.coordinator.validation import validate_task
from taskgrid.v1 import common_pb2

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_defaults_follow_web2py():
    row, errors = validate_task({"function_name": "add"}, {}, NOW)
    assert errors == {}
    assert row["task_name"] == "add" and row["group_name"] == "main"
    assert (row["repeats"], row["retry_failed"], row["period"], row["timeout"]) == (1, 0, 60, 60)
    assert row["args"] == "[]" and row["vars"] == "{}" and row["enabled"] is True
    assert row["start_time"] == NOW == row["next_run_time"] and row["status"] == "QUEUED"
    assert len(row["uuid"]) == 36


def test_start_time_only_sets_next_run_time():
    later = NOW + dt.timedelta(hours=1)
    row, _ = validate_task({"function_name": "f", "start_time": later}, {}, NOW)
    assert row["next_run_time"] == later


def test_cron_without_start_time_waits_for_next_match():
    row, _ = validate_task({"function_name": "f", "cronline": "0 * * * *"}, {},
                           NOW + dt.timedelta(minutes=10))
    assert row["next_run_time"] == NOW + dt.timedelta(hours=1)


@pytest.mark.parametrize(("fields", "field"), [
    ({"timeout": 0}, "timeout"), ({"repeats": -1}, "repeats"),
    ({"retry_failed": -2}, "retry_failed"), ({"period": -1}, "period"),
    ({"sync_output": -1}, "sync_output"), ({"args": "{}"}, "args"), ({"args": "[1,"}, "args"),
    ({"vars": "[]"}, "vars"), ({"group_name": " "}, "group_name"), ({"uuid": ""}, "uuid"),
    ({"cronline": "* * *"}, "cronline"), ({"prevent_drift": True, "period": 0}, "prevent_drift"),
    ({"broadcast": True, "period": 0}, "broadcast"), ({"period": 10**12}, "period"),
    ({"task_name": "x" * 600}, "task_name"),
])
def test_bad_values_name_their_field(fields, field):
    row, errors = validate_task({"function_name": "f", **fields}, {}, NOW)
    assert row is None and field in errors and errors[field]


def test_empty_function_name_is_an_error():
    _, errors = validate_task({"function_name": ""}, {}, NOW)
    assert "function_name" in errors


# -- args_value / vars_value: the protobuf forms of args and vars (TaskSpec has no raw_fields)


def _checked(**spec):
    fields, found = convert.spec_fields(common_pb2.TaskSpec(function_name="add", **spec))
    return validate_task(fields, found, NOW, max_args_bytes=1000)


def _list(*items):
    value = struct_pb2.ListValue()
    value.extend(items)
    return value


def _struct(**items):
    value = struct_pb2.Struct()
    value.update(items)
    return value


def test_errors_found_reading_the_request_are_reported_with_the_rest():
    _, errors = validate_task({"function_name": "f", "timeout": 0, "args": "[1,"},
                              {"args": "give args or args_value, not both"}, NOW)
    assert errors == {"timeout": "must be greater than or equal to 1",
                      "args": "give args or args_value, not both"}


def test_args_value_becomes_the_json_text_with_integral_numbers_as_ints():
    row, errors = _checked(args_value=_list(1, 2.0, 2.5, "x", None, True, [3.0], {"k": -4.0}),
                           vars_value=_struct(a=1, b={"c": [1.5]}))
    assert errors == {}
    assert row["args"] == '[1, 2, 2.5, "x", null, true, [3], {"k": -4}]'
    assert json.loads(row["vars"]) == {"a": 1, "b": {"c": [1.5]}}
    assert type(json.loads(row["vars"])["a"]) is int


def test_empty_values_are_empty_args_and_vars():
    args = struct_pb2.ListValue()
    spec = common_pb2.TaskSpec(function_name="add", vars_value=struct_pb2.Struct())
    spec.args_value.CopyFrom(args)
    row, errors = validate_task(*convert.spec_fields(spec), NOW)
    assert errors == {} and (row["args"], row["vars"]) == ("[]", "{}")


def test_integers_beyond_two_to_the_53_stay_doubles():
    # a double is no exact integer there: such numbers must use the JSON text form
    row, _ = _checked(args_value=_list(2.0**53, 2.0**60, 1e300))
    assert json.loads(row["args"]) == [2**53, 2.0**60, 1e300]
    assert [type(v) for v in json.loads(row["args"])] == [int, float, float]


@pytest.mark.parametrize("field", ["args", "vars"])
def test_both_forms_of_one_field_are_a_field_error(field):
    value = {"args_value": _list(1)} if field == "args" else {"vars_value": _struct(a=1)}
    row, errors = _checked(**{field: "[1]" if field == "args" else '{"a": 1}'}, **value)
    assert row is None and errors == {field: f"give {field} or {field}_value, not both"}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_values_are_field_errors(number):
    row, errors = _checked(args_value=_list(1, [number]))
    assert row is None and errors == {"args": "args_value: numbers must be finite"}
    _, errors = _checked(vars_value=_struct(a=number))
    assert errors == {"vars": "vars_value: numbers must be finite"}


def test_nested_values_decode_and_the_depth_guard_names_the_field():
    # protobuf itself refuses messages nested about 50 JSON levels deep; the guard stops the
    # decoder before Python's recursion limit whatever protobuf allows
    value = struct_pb2.ListValue()
    for _ in range(40):
        outer = struct_pb2.ListValue()
        outer.values.add().list_value.CopyFrom(value)
        value = outer
    row, errors = _checked(args_value=value)
    assert errors == {} and row["args"] == _nested(41)
    assert convert._from_list(_list([1]), 100) == (None, "nested more than 100 levels deep")
    assert convert._from_list(_list(1), 100) == ([1], None)


def test_the_args_size_limit_counts_values_as_their_json_text():
    _, errors = _checked(args_value=_list("x" * 600), vars_value=_struct(k="y" * 600))
    assert set(errors) == {"args"} and "--max-args-bytes" in errors["args"]
    row, errors = _checked(args_value=_list("x" * 400), vars_value=_struct(k="y" * 400))
    assert errors == {} and row is not None


def test_nul_characters_in_values_are_escaped_as_in_json_text():
    row, errors = _checked(args_value=_list("a\x00b"))
    assert errors == {} and json.loads(row["args"]) == ["a\x00b"]


def test_nul_characters_are_field_errors():
    _, errors = validate_task({"function_name": "f", "task_name": "a\x00b"}, {}, NOW)
    assert errors == {"task_name": "must not contain NUL characters"}


# -- faults found by the fuzz suite (tests/fuzz) --------------------------------------------------


def _nested(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("text", [_nested(101), _nested(1000), _nested(100_000), "[" * 100_000,
                                  "[" + '{"a":' * 5000 + "1" + "}" * 5000 + "]"])
def test_deeply_nested_args_are_a_field_error_not_a_recursion_error(text):
    row, errors = validate_task({"function_name": "f", "args": text}, {}, NOW)
    assert row is None and "args" in errors
    assert "nested more than 100 levels" in errors["args"] or "invalid JSON" in errors["args"]


def test_deeply_nested_vars_are_a_field_error_and_100_levels_are_fine():
    deep = '{"a":' * 101 + "{}" + "}" * 101
    assert "nested more than 100 levels" in validate_task(
        {"function_name": "f", "vars": deep}, {}, NOW)[1]["vars"]
    row, errors = validate_task({"function_name": "f", "args": _nested(100),
                                 "vars": '{"a":' * 99 + "{}" + "}" * 99}, {}, NOW)
    assert errors == {} and row is not None


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e400]", "[-1e999]"])
def test_nan_infinity_and_out_of_range_numbers_in_args_are_field_errors(text):
    _, errors = validate_task({"function_name": "f", "args": text}, {}, NOW)
    assert errors["args"].startswith("invalid JSON")


@pytest.mark.parametrize("start", [dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC),
                                   dt.datetime(9999, 3, 1, tzinfo=dt.UTC)])
def test_cronline_with_start_time_near_year_9999_is_a_field_error_not_an_overflow(start):
    for line in ("* * * * *", "0 0 29 2 *", "0 0 L 2 *", "@yearly"):
        row, errors = validate_task({"function_name": "f", "cronline": line,
                                     "start_time": start}, {}, NOW)
        if row is None:
            assert "no match after" in errors["start_time"], (line, errors)


def test_cronline_longer_than_its_column_is_a_field_error():
    line = ",".join(str(i % 60) for i in range(200)) + " * * * *"
    _, errors = validate_task({"function_name": "f", "cronline": line}, {}, NOW)
    assert errors == {"cronline": "must be at most 255 characters"}


@pytest.mark.parametrize("command", [
    {"executable": "/bin/true", "args": [], "env": {"A": "x\x00"}, "cwd": ""},
    {"executable": "/bin/true", "args": [], "env": {"A\x00": "x"}, "cwd": ""},
    {"executable": "/bin/true", "args": [], "env": {}, "cwd": "/tmp\x00"},
    {"executable": "/bin/true", "args": [], "env": {"A=B": "x"}, "cwd": ""},
    {"executable": "/bin/true", "args": [], "env": {"": "x"}, "cwd": ""},
])
def test_command_env_and_cwd_that_no_process_can_take_are_field_errors(command):
    _, errors = validate_task({"function_name": "", "command": command}, {}, NOW)
    assert set(errors) == {"command"}


@pytest.mark.parametrize(("fields", "field"), [
    ({"retry_backoff": 2.0}, "retry_backoff"),
    ({"retry_delay_max": 60.0}, "retry_delay_max"),
    ({"retry_jitter": 0.5}, "retry_jitter"),
    ({"retry_failed": -1, "retry_backoff": 1000.0}, "retry_backoff"),
    ({"retry_delay": 10.0, "retry_delay_max": 5.0}, "retry_delay_max"),
])
def test_retry_options_are_validated_together(fields, field):
    row, errors = validate_task({"function_name": "f", **fields}, {}, NOW)
    assert row is None and set(errors) == {field}


def test_retry_options_with_a_delay_are_accepted_whatever_the_backoff():
    row, errors = validate_task({"function_name": "f", "retry_failed": -1, "retry_delay": 1e-9,
                                 "retry_backoff": 1000.0, "retry_jitter": 1.0}, {}, NOW)
    assert errors == {} and row["retry_backoff"] == 1000.0
    _, errors = validate_task({"function_name": "f", "retry_backoff": 1.0, "retry_jitter": 0.0,
                               "retry_delay_max": 0.0}, {}, NOW)
    assert errors == {}  # the defaults, given explicitly


def test_a_command_with_a_long_executable_gets_a_default_name_that_fits_its_column():
    command = {"executable": "/opt/" + "x" * 1000, "args": [], "env": {}, "cwd": ""}
    row, errors = validate_task({"function_name": "", "command": command}, {}, NOW)
    assert errors == {}
    assert row is not None and row["task_name"] == "x" * 512
