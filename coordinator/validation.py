"""queue_task field checks: typed fields in, a task row or {field: message} out. Pure.

Bad values never raise: they come back as errors and nothing is written
(contract §1). The uuid's uniqueness needs the database and is checked by
tasks.py in the same transaction as the insert.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from taskgrid.coordinator import timing
from taskgrid.coordinator.lifecycle import TaskStatus

DEFAULT_GROUP = "main"
DEFAULT_REPEATS = 1
DEFAULT_RETRY_FAILED = 0
DEFAULT_PERIOD_S = 60
DEFAULT_TIMEOUT_S = 60
DEFAULT_SYNC_OUTPUT_S = 0
#: ten years: larger periods or timeouts are typos and overflow date arithmetic
MAX_SECONDS = 10 * 365 * 24 * 3600
MAX_NAME = 512
MAX_KEY = 255
#: cron lines are stored in a 255-character column
MAX_CRONLINE = 255
#: args and vars may nest lists and objects this deep (a worker must decode them)
MAX_JSON_DEPTH = 100
INT64 = 2**63 - 1
#: the function name of command tasks; workers with the "command" capability offer it
COMMAND_FUNCTION = "@command"

#: field -> (minimum, maximum) for integers
_RANGES: Mapping[str, tuple[int, int]] = {
    "repeats": (0, INT64), "retry_failed": (-1, INT64), "period": (0, MAX_SECONDS),
    "timeout": (1, MAX_SECONDS), "sync_output": (0, MAX_SECONDS), "priority": (-INT64, INT64),
    "retry_delay": (0, MAX_SECONDS), "retry_backoff": (1, 1000),
    "retry_delay_max": (0, MAX_SECONDS), "retry_jitter": (0, 1),
}
#: web2py's cron shortcuts (semantics.md §7.5); croniter knows a few more we do not accept
CRON_SHORTCUTS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                            "@hourly"})


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (a scalar is 0)."""
    depth, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth = max(depth, d)
            level.extend((x, d + 1) for x in item if isinstance(x, list | dict))
    return depth


def _json_of(kind: type, text: str, what: str) -> tuple[Any, str | None]:
    """Decode args or vars: plain JSON (no NaN or Infinity), finite numbers, bounded depth.

    Every worker must be able to decode what it leases, whatever its language: Python's
    decoder gives up past about 1000 levels (RecursionError), Go's at 10000.
    """
    deep = f"nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        return None, deep
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"
    if not isinstance(value, kind):
        return None, f"must be a JSON {what}"
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        return None, deep
    return value, None


def _check_command(f: Mapping[str, Any], errors: dict[str, str]) -> None:
    command = f.get("command")
    name = f.get("function_name", "")
    if command is None:
        if name == COMMAND_FUNCTION:
            errors["command"] = f"required when function_name is {COMMAND_FUNCTION!r}"
        return
    if name not in ("", COMMAND_FUNCTION):
        errors["function_name"] = f"a command task has no function (leave it empty or "\
            f"{COMMAND_FUNCTION!r})"
    env = command["env"]
    texts = [command["executable"], command["cwd"], *command["args"], *env, *env.values()]
    if not command["executable"].strip():
        errors["command"] = "executable must not be empty"
    elif any("\0" in t for t in texts):
        errors["command"] = "must not contain NUL characters"
    elif any(not k or "=" in k for k in env):
        errors["command"] = "env names must be non-empty and contain no '='"


def _check_strings(f: Mapping[str, Any], errors: dict[str, str]) -> None:
    name = f.get("function_name", "")
    if f.get("command") is not None:
        pass  # checked by _check_command
    elif not name or not name.strip():
        errors["function_name"] = "must not be empty"
    elif len(name) > MAX_NAME:
        errors["function_name"] = f"must be at most {MAX_NAME} characters"
    if len(f.get("task_name") or "") > MAX_NAME:
        errors["task_name"] = f"must be at most {MAX_NAME} characters"
    for key in ("group_name", "uuid"):
        if key in f:
            value = f[key]
            if not value.strip():
                errors[key] = "must not be empty"
            elif len(value) > MAX_KEY:
                errors[key] = f"must be at most {MAX_KEY} characters"
    if f.get("cronline"):
        problem = (f"must be at most {MAX_CRONLINE} characters"
                   if len(f["cronline"].strip()) > MAX_CRONLINE else cron_problem(f["cronline"]))
        if problem:
            errors["cronline"] = problem


def cron_problem(line: str) -> str | None:
    """web2py's cron syntax: 5 fields or a shortcut; other errors are the parser's message."""
    text = line.strip()
    if text.startswith("@"):
        if text.lower() not in CRON_SHORTCUTS:
            return f"Invalid cron line (unknown shortcut {text})"
    else:
        fields = text.split()
        if len(fields) < 5:
            return "Invalid cron line (too short)"
        if len(fields) > 5:
            return "Invalid cron line (too long)"
    return timing.cron_error(text)


def _check_ints(f: Mapping[str, Any], errors: dict[str, str]) -> None:
    for key, (low, high) in _RANGES.items():
        if key in f:
            value = f[key]
            if value != value or value in (float("inf"), float("-inf")):
                errors[key] = "must be a finite number"
            elif value < low:
                errors[key] = f"must be greater than or equal to {low}"
            elif value > high:
                errors[key] = f"must be less than or equal to {high}"


def _check_retry(f: Mapping[str, Any], errors: dict[str, str]) -> None:
    """The retry_delay options together: the others shape retry_delay, so need it.

    Each value alone was range-checked by _check_ints; timing.retry_delay_s computes any
    accepted combination without overflow (capped at retry_delay_max and ten years).
    """
    keys = ("retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter")
    if any(k in errors for k in keys):
        return
    delay = f.get("retry_delay", 0.0)
    if not delay:
        unused = {"retry_backoff": f.get("retry_backoff", 1.0) != 1,
                  "retry_delay_max": f.get("retry_delay_max", 0.0) != 0,
                  "retry_jitter": f.get("retry_jitter", 0.0) != 0}
        for key, given in unused.items():
            if given:
                errors[key] = ("needs retry_delay > 0 (without it a retry is due one period "
                               "after the failed run started)")
        return
    delay_max = f.get("retry_delay_max", 0.0)
    if delay_max and delay_max < delay:
        errors["retry_delay_max"] = f"must be at least retry_delay ({delay:g}) or 0 (no cap)"


def validate_task(
    fields: Mapping[str, Any], found: Mapping[str, str], now: dt.datetime,
    max_args_bytes: int | None = None,
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Check one queue_task request and build the row to insert.

    Args:
        fields: the typed fields the client set (absent = default); times are aware UTC.
        found: field errors found while reading the request (e.g. args given both as
            JSON text and as args_value), reported with the rest.
        now: the coordinator's current time (default start_time).
        max_args_bytes: the largest args plus vars JSON text accepted (None: no limit).

    Returns:
        (row, {}) when valid, else (None, {field: message}).
    """
    errors: dict[str, str] = {}
    for key, value in fields.items():
        if isinstance(value, str) and "\x00" in value:
            errors[key] = "must not contain NUL characters"
    _check_command(fields, errors)
    _check_strings(fields, errors)
    _check_ints(fields, errors)
    _args, problem = _json_of(list, fields.get("args", "[]"), "list")
    if problem:
        errors["args"] = problem
    _kwargs, problem = _json_of(dict, fields.get("vars", "{}"), "object")
    if problem:
        errors["vars"] = problem
    size = len(fields.get("args", "").encode()) + len(fields.get("vars", "").encode())
    if max_args_bytes is not None and size > max_args_bytes:
        errors["args"] = (f"args and vars are {size} bytes of JSON; the limit is "
                          f"{max_args_bytes} (--max-args-bytes)")
    period = fields.get("period", DEFAULT_PERIOD_S)
    cronline = fields.get("cronline") or None
    if fields.get("prevent_drift") and period == 0 and not cronline:
        errors["prevent_drift"] = "needs a period > 0 or a cronline"
    if fields.get("broadcast") and period == 0 and not cronline:
        errors["broadcast"] = "needs a period > 0 or a cronline"
    _check_retry(fields, errors)
    errors.update(found)  # e.g. "give args or args_value, not both" over its text's verdict
    if errors:
        return None, errors
    start_time = fields.get("start_time", now)
    next_run_time = fields.get("next_run_time")
    if next_run_time is None and cronline:
        # A cron task first runs at its next match, never at once (contract §2.3).
        try:
            next_run_time = timing.next_cron_time(cronline, start_time)
        except timing.NoCronMatchError:
            key = "start_time" if "start_time" in fields else "cronline"
            return None, {key: f"the cronline has no match after {start_time.isoformat()} "
                               "before the end of year 9999"}
    if next_run_time is None:
        next_run_time = start_time
    command = fields.get("command")
    function_name = COMMAND_FUNCTION if command is not None else fields["function_name"]
    # A long executable path must not make the default name overflow its column.
    default_name = (command["executable"].rsplit("/", 1)[-1][:MAX_NAME] if command
                    else function_name)
    row = {
        "uuid": fields.get("uuid") or str(uuidlib.uuid4()),
        "task_name": fields.get("task_name") or default_name,
        "group_name": fields.get("group_name", DEFAULT_GROUP),
        "status": TaskStatus.QUEUED.value,
        "function_name": function_name,
        "args": fields.get("args", "[]"),
        "vars": fields.get("vars", "{}"),
        "enabled": fields.get("enabled", True),
        "start_time": start_time,
        "next_run_time": next_run_time,
        "stop_time": fields.get("stop_time"),
        "repeats": fields.get("repeats", DEFAULT_REPEATS),
        "retry_failed": fields.get("retry_failed", DEFAULT_RETRY_FAILED),
        "period": period,
        "prevent_drift": fields.get("prevent_drift", False),
        "cronline": cronline.strip() if cronline else None,
        "timeout": fields.get("timeout", DEFAULT_TIMEOUT_S),
        "sync_output": fields.get("sync_output", DEFAULT_SYNC_OUTPUT_S),
        "times_run": 0,
        "times_failed": 0,
        "last_run_time": None,
        "assigned_worker_name": "",
        "broadcast": fields.get("broadcast", False),
        "priority": fields.get("priority", 0),
        "discard_results": fields.get("discard_results", False),
        "attempt": 0,
        "lost_count": 0,
        "stop_requested": False,
        "created_at": now,
        "retry_delay": fields.get("retry_delay", 0.0),
        "retry_backoff": fields.get("retry_backoff", 1.0),
        "retry_delay_max": fields.get("retry_delay_max", 0.0),
        "retry_jitter": fields.get("retry_jitter", 0.0),
        "broadcast_parent": 0,
        "target_worker_name": "",
        "command": json.dumps(command) if command is not None else None,
    }
    return row, {}
