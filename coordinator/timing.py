"""When a task runs next: period, prevent_drift grid, cron lines. Pure; takes times.

The rules are web2py's (semantics.md §7.2): without drift the next run is due
one period after the run started; with prevent_drift it is the first slot of
the grid anchored at start_time strictly after the run's start; with a cron
line it is the first match strictly after the run's start, at minute
resolution. All datetimes here are aware UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from croniter import croniter


def next_cron_time(cronline: str, after: dt.datetime) -> dt.datetime:
    """First match of `cronline` strictly after `after`, at minute resolution."""
    base = after.replace(second=0, microsecond=0)
    result: dt.datetime = croniter(cronline, base).get_next(dt.datetime)
    return result if result.tzinfo else result.replace(tzinfo=dt.UTC)


def cron_error(cronline: str) -> str | None:
    """The parser's message for a bad cron line, or None when it is valid."""
    try:
        croniter(cronline, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).get_next(dt.datetime)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors derive from ValueError
        return str(exc) or exc.__class__.__name__
    return None


def next_run_time(task: Mapping[str, Any], run_start: dt.datetime) -> dt.datetime:
    """When the task is due again after a run that started at `run_start`."""
    cronline = task.get("cronline")
    if cronline:
        return next_cron_time(cronline, run_start)
    period = dt.timedelta(seconds=task["period"])
    if not task.get("prevent_drift") or not task["period"]:
        return run_start + period
    anchor: dt.datetime = task["start_time"]
    slots = (run_start - anchor) // period + 1
    return anchor + period * slots
