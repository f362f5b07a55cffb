"""GetStats: counts for dashboards, computed at most every CACHE_S and shared meanwhile.

Counting every task by status and group reads the whole claim index (a covering
index scan), so however many dashboards poll, the coordinator computes it once per
CACHE_S; callers inside that window get the same answer (with its computed_at).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import Any

from taskgrid.coordinator.lifecycle import TaskStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

#: an answer is reused this long
CACHE_S = 2.0
#: minutes of the throughput series
MINUTES = 60

_FAILED = {TaskStatus.FAILED.value, TaskStatus.TIMEOUT.value}
_OTHER = {TaskStatus.STOPPED.value, TaskStatus.EXPIRED.value}


@dataclasses.dataclass(frozen=True)
class Minute:
    """Tasks that ended in one minute."""

    start: dt.datetime
    completed: int = 0
    failed: int = 0
    other: int = 0


@dataclasses.dataclass(frozen=True)
class Stats:
    """One GetStats answer."""

    counts: list[tuple[str, str, int]]
    last_hour: list[Minute]
    oldest_due: Row | None
    computed_at: dt.datetime


class StatsCache:
    """The latest Stats and when it was computed (monotonic); one computation at a time."""

    def __init__(self) -> None:
        self._stats: Stats | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, rt: Runtime) -> Stats:
        """The cached answer if fresh, else a new one (concurrent callers share it)."""
        async with self._lock:
            if self._stats is None or time.monotonic() - self._at >= CACHE_S:
                self._stats = await compute(rt)
                self._at = time.monotonic()
            return self._stats


async def compute(rt: Runtime) -> Stats:
    """Read the counts, the last hour's ends per minute and the oldest due task."""
    now = rt.clock.now()
    first = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=MINUTES - 1)

    def read(tx: Tx) -> tuple[Any, Any, Any]:
        return (tx.count_by_status_and_group(), tx.ended_per_minute(first),
                tx.oldest_due_task(now))
    counts, per_minute, oldest = await rt.store.run(read)
    buckets: dict[str, dict[str, int]] = {}
    for minute, status, n in per_minute:
        buckets.setdefault(minute, {}).setdefault(status, 0)
        buckets[minute][status] += n
    series = []
    for i in range(MINUTES):
        start = first + dt.timedelta(minutes=i)
        got = buckets.get(start.strftime("%Y-%m-%d %H:%M"), {})
        series.append(Minute(start, got.get(TaskStatus.COMPLETED.value, 0),
                             sum(n for s, n in got.items() if s in _FAILED),
                             sum(n for s, n in got.items() if s in _OTHER)))
    return Stats(sorted(counts), series, oldest, now)
