"""Time for the coordinator: an injectable clock and database time conversions.

The coordinator owns time. Tests pass a `ManualClock`; production uses
`SystemClock`. The database stores naive UTC datetimes (SQLite has no time
zones); everything above the store works with aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> dt.datetime:
        """The current aware UTC time."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> dt.datetime:
        """The current aware UTC time."""
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that moves only when told to; for tests (cron, long periods) without waiting.

    The coordinator subscribes to it: every move wakes its timers (due tasks,
    expiry, broadcast), as the passing of real time would.
    """

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> dt.datetime:
        """The time last set."""
        with self._lock:
            return self._now

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the mover's thread) after every move."""
        self._listeners.append(listener)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
        self._moved()

    def set(self, when: dt.datetime) -> None:
        """Move the clock to `when` (aware UTC)."""
        with self._lock:
            self._now = when
        self._moved()

    def _moved(self) -> None:
        for listener in list(self._listeners):
            listener()


def to_db(value: dt.datetime | None) -> dt.datetime | None:
    """Aware datetime -> naive UTC for storage."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def from_db(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC from storage -> aware UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
