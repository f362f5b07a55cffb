"""When a task runs next: period, prevent_drift grid, cron lines. Pure; takes times.

The rules are web2py's (semantics.md §7.2): without drift the next run is due
one period after the run started; with prevent_drift it is the first slot of
the grid anchored at start_time strictly after the run's start; with a cron
line it is the first match strictly after the run's start, at minute
resolution. All datetimes here are aware UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from croniter import croniter

#: a computed retry delay never exceeds this (ten years), whatever the backoff
MAX_DELAY_S = 10 * 365 * 24 * 3600.0


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


def retry_time(task: Mapping[str, Any], failed_at: dt.datetime, rng: Callable[[], float]
               ) -> dt.datetime:
    """When a retry is due under the retry_delay options (retry_delay > 0).

    The n-th consecutive retry waits retry_delay * retry_backoff**(n-1), capped at
    retry_delay_max (when set), spread uniformly by +/- retry_jitter of itself.
    """
    failures = task["times_failed"]  # consecutive failures before this one
    delay = task["retry_delay"] * task["retry_backoff"] ** min(failures, 1000)
    if task["retry_delay_max"]:
        delay = min(delay, task["retry_delay_max"])
    delay = min(delay, MAX_DELAY_S)
    if task["retry_jitter"]:
        delay *= 1 + task["retry_jitter"] * (2 * rng() - 1)
    return failed_at + dt.timedelta(seconds=max(0.0, delay))


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
