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
