"""queue_task field validation: errors are data, nothing raised."""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator.validation import validate_task

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


def test_raw_fields_are_reported_by_kind():
    _, errors = validate_task({"function_name": "f"},
                              {"status": '"X"', "nope": "1", "timeout": '"abc"'}, NOW)
    assert errors["status"].startswith("read-only")
    assert errors["nope"] == "unknown field"
    assert errors["timeout"] == "must be an integer"


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
