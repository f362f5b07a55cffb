"""When a task runs next: period, prevent_drift grid, cron lines. Pure; takes times.

The rules are web2py's (semantics.md §7.2): without drift the next run is due
one period after the run started; with prevent_drift it is the first slot of
the grid anchored at start_time strictly after the run's start; with a cron
line it is the first match strictly after the run's start, at minute
resolution. All datetimes here are aware UTC, and no function here raises for a time
before the end of year 9999: a next run that would fall past it is END_OF_TIME (never due).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from typing import Any

from croniter import croniter

#: a computed retry delay never exceeds this (ten years), whatever the backoff
MAX_DELAY_S = 10 * 365 * 24 * 3600.0
#: the last representable instant: a task due then never runs (the calendar ends first)
END_OF_TIME = dt.datetime.max.replace(tzinfo=dt.UTC)


class NoCronMatchError(ValueError):
    """A cron line has no match after the given time before the calendar ends (year 9999)."""


def later(when: dt.datetime, seconds: float) -> dt.datetime:
    """`when` plus `seconds`, or END_OF_TIME when that is past year 9999."""
    try:
        return when + dt.timedelta(seconds=seconds)
    except OverflowError:
        return END_OF_TIME


def next_cron_time(cronline: str, after: dt.datetime) -> dt.datetime:
    """First match of `cronline` strictly after `after`, at minute resolution.

    Raises:
        NoCronMatchError: no match before the end of year 9999 (croniter overflows there).
    """
    base = after.replace(second=0, microsecond=0)
    try:
        result: dt.datetime = croniter(cronline, base).get_next(dt.datetime)
    except (OverflowError, ValueError) as exc:  # year 10000, or croniter's search gave up
        raise NoCronMatchError(f"no match of {cronline!r} after {after.isoformat()} before "
                               f"the end of year 9999 ({exc})") from exc
    return result if result.tzinfo else result.replace(tzinfo=dt.UTC)


#: the names a range bound may use in the month and day-of-week fields (web2py: sun = 0)
_MONTHS = {name: n for n, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DAYS = {name: n for n, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELD_NAMES: tuple[Mapping[str, int], ...] = ({}, {}, {}, _MONTHS, _DAYS)


def reversed_range(cronline: str) -> str | None:
    """The first field of a 5-field line holding a range whose start is past its end, or None.

    `5-1`, `30-5/2`, `fri-mon`, `sat-sun` (Sunday is 0), `dec-jan`, also inside a list
    (`1,5-1`). croniter wraps such a range round the field's end; web2py's parser expands
    it to nothing and rejects the line, and so do we. Case-insensitive; a bound that is
    neither a number nor a name of its field is left to croniter.
    """
    fields = cronline.lower().split()
    if len(fields) != len(_FIELD_NAMES):
        return None
    for field, names in zip(fields, _FIELD_NAMES, strict=True):
        for item in field.split(","):
            bounds = item.split("/", 1)[0].split("-")
            if len(bounds) != 2:
                continue
            low, high = (int(b) if b.isascii() and b.isdigit() else names.get(b) for b in bounds)
            if low is not None and high is not None and low > high:
                return field
    return None


def cron_error(cronline: str) -> str | None:
    """The parser's message for a bad cron line, or None when it is valid."""
    backwards = reversed_range(cronline)
    if backwards is not None:
        return f"Invalid cron value ({backwards})"  # web2py's message, naming the field
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
    delay = retry_delay_s(task["retry_delay"], task["retry_backoff"], task["retry_delay_max"],
                          task["times_failed"])  # consecutive failures before this one
    if task["retry_jitter"]:
        delay *= 1 + task["retry_jitter"] * (2 * rng() - 1)
    return later(failed_at, max(0.0, delay))


def retry_delay_s(delay: float, backoff: float, delay_max: float, failures: int) -> float:
    """The delay after `failures` consecutive failures: delay * backoff**failures, capped.

    The caps are delay_max (when set) and MAX_DELAY_S.

    Never overflows: it is computed in logarithms and only below the cap (a backoff of 1000
    passes ten years after three failures, and 1000.0**103 would raise OverflowError).
    """
    cap = min(delay_max, MAX_DELAY_S) if delay_max > 0 else MAX_DELAY_S
    if not delay > 0:
        return 0.0
    if delay >= cap:
        return cap
    if backoff <= 1 or failures <= 0:
        return delay
    # in logarithms, so that neither the power nor cap / delay (a tiny delay) can overflow
    exponent = math.log(delay) + failures * math.log(backoff)
    if exponent >= math.log(cap):
        return cap
    try:
        return min(delay * backoff ** failures, cap)  # exact where it can be (10, 20, 40 s)
    except OverflowError:  # a subnormal delay times a power past the largest double
        return min(math.exp(exponent), cap)


def next_run_time(task: Mapping[str, Any], run_start: dt.datetime) -> dt.datetime:
    """When the task is due again after a run that started at `run_start`."""
    cronline = task.get("cronline")
    if cronline:
        try:
            return next_cron_time(cronline, run_start)
        except NoCronMatchError:
            return END_OF_TIME
    period = dt.timedelta(seconds=task["period"])
    if not task.get("prevent_drift") or not task["period"]:
        return later(run_start, task["period"])
    anchor: dt.datetime = task["start_time"]
    slots = (run_start - anchor) // period + 1
    try:
        return anchor + period * slots
    except OverflowError:
        return END_OF_TIME
