"""taskgrid/logs.py: the JSON formatter's schema and fields, and setup()."""

from __future__ import annotations

import io
import json
import logging
import re

from taskgrid import logs


def record(msg: str, *args: object, level: int = logging.WARNING, **extra: object
           ) -> logging.LogRecord:
    rec = logging.LogRecord("taskgrid.test", level, __file__, 1, msg, args or None, None)
    rec.created = 1767225600.1234  # 2026-01-01T00:00:00.123Z
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_the_schema_and_the_message_fields():
    line = logs.JsonFormatter().format(
        record("worker lost worker=%s silent_s=%.1f task_id=%d", "w1", 9.04, 12))
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[:4] == list(logs.SCHEMA_KEYS)
    assert data["time"] == "2026-01-01T00:00:00.123Z"
    assert data["level"] == "WARNING" and data["logger"] == "taskgrid.test"
    assert data["message"] == "worker lost worker=w1 silent_s=9.0 task_id=12"
    assert data["worker"] == "w1" and data["silent_s"] == 9.0 and data["task_id"] == 12


def test_fields_from_extra_and_no_clobbering_of_the_schema():
    data = json.loads(logs.JsonFormatter().format(
        record("run done run_id=5 message=oops level=x", run_id_extra=1, task="t")))
    assert data["message"] == "run done run_id=5 message=oops level=x"
    assert data["level"] == "WARNING"
    assert data["run_id"] == 5 and data["task"] == "t" and data["run_id_extra"] == 1


def test_message_fields_rules():
    assert logs.message_fields("a=1 b=2.5 c=x,y d=True e=some words") == {
        "a": 1, "b": 2.5, "c": "x,y", "d": True, "e": "some"}
    assert logs.message_fields("url=http://h/?q=1 id(loop)=3") == {"url": "http://h/?q=1"}
    assert logs.message_fields("no pairs here") == {}


def test_multiline_messages_and_exceptions_stay_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        rec = record("failed:\n%s", "details")
        rec.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert "ValueError: bad" in data["exc_info"] and data["message"] == "failed:\ndetails"


def test_rfc3339_is_utc_with_milliseconds():
    assert logs.rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", logs.rfc3339(1.9999))


def test_setup_switches_format_and_keeps_foreign_handlers():
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    saved_level = root.level
    try:
        text, js = io.StringIO(), io.StringIO()
        logs.setup("DEBUG", "text", text)
        logs.setup("info", "json", js)  # replaces the first one
        logging.getLogger("taskgrid.x").debug("hidden")
        logging.getLogger("taskgrid.x").info("shown worker=w9")
        assert text.getvalue() == ""
        data = json.loads(js.getvalue())
        assert data["worker"] == "w9" and data["logger"] == "taskgrid.x"
        assert foreign in root.handlers
    finally:
        for h in [h for h in root.handlers if getattr(h, "_taskgrid_logs", False)]:
            root.removeHandler(h)
        root.removeHandler(foreign)
        root.setLevel(saved_level)
        logging.captureWarnings(False)


def test_unknown_format_is_refused():
    try:
        logs.formatter("xml")
    except ValueError as exc:
        assert "xml" in str(exc)
    else:
        raise AssertionError("xml accepted")


def test_grpc_verbosity_defaults_to_error(monkeypatch):
    import os

    assert os.environ.get(logs.GRPC_VERBOSITY_ENV)  # set on import unless the user had set it
