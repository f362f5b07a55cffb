"""Time-driven work the coordinator does itself: expiry and broadcast fan-out.

The coordinator owns time (no worker holds a future task). Two passes run
from the reaper's tick, each only when its moment has come, so an idle
coordinator asks the database nothing:

- expiry: QUEUED or ASSIGNED tasks past stop_time become EXPIRED without running;
- broadcast: a due broadcast task puts one child per ACTIVE worker of its group
  that offers its function (vars and timeout kept), then waits for its next
  period or cron match;
- purge: tasks that ended longer than --task-retention ago are deleted with their
  runs and output, in batches (housekeeping.purge). Its moment is the oldest
  finished task's end plus the retention (or, with none, now plus the retention:
  a task ending later is due later still), so no task ending lowers it.

The earliest moment of each is kept in memory, loaded at start and lowered
whenever a task is queued. A moment read back from the database is merged with
the moments noted while the read was under way: a task queued meanwhile may
be missing from the read's snapshot, and its moment must not be lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from taskgrid.coordinator import housekeeping, lifecycle
from taskgrid.coordinator.lifecycle import TaskStatus, WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

logger = logging.getLogger(__name__)

#: how long to wait before looking again at a due broadcast no worker can take
NO_WORKER_RETRY_S = 1.0


@dataclasses.dataclass
class _Noted:
    """The moments noted while one database read of them was under way."""

    expiry: dt.datetime | None = None
    broadcast: dt.datetime | None = None
    purge: dt.datetime | None = None


@dataclasses.dataclass
class Timers:
    """The next moments the passes must run; None = nothing pending."""

    rt: Runtime
    next_expiry: dt.datetime | None = None
    next_broadcast: dt.datetime | None = None
    next_purge: dt.datetime | None = None
    next_task_purge: dt.datetime | None = None
    #: one entry per database read of the moments under way (see the module doc)
    _reads: list[_Noted] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Noted]:
        noted = _Noted()
        self._reads.append(noted)
        try:
            yield noted
        finally:
            self._reads.remove(noted)

    async def load(self) -> None:
        """Read the moments from the database (at start, and when elected leader)."""
        def read(tx: Tx) -> tuple[Any, Any, Any, Any]:
            return (tx.earliest_stop_time(), tx.earliest_broadcast(), tx.earliest_lost_worker(),
                    tx.earliest_finished())
        with self._reading() as noted:
            expiry, broadcast, lost, finished = await self.rt.store.run(read)
        self._plan_task_purge(finished)
        self.next_expiry = _min(expiry, noted.expiry)
        self.next_broadcast = _min(broadcast, noted.broadcast)
        self.next_purge = noted.purge
        self.note_lost_worker(lost)
        self.rt.wake_reaper.set()

    def _plan_task_purge(self, oldest_end: dt.datetime | None) -> None:
        retention = self.rt.config.task_retention_s
        if retention <= 0:
            self.next_task_purge = None
            return
        base = oldest_end if oldest_end is not None else self.rt.clock.now()
        self.next_task_purge = base + dt.timedelta(seconds=retention)

    def note_lost_worker(self, lost_at: dt.datetime | None) -> None:
        """Schedule the removal of a dead worker's row after the retention period."""
        if lost_at is not None:
            at = lost_at + dt.timedelta(seconds=self.rt.config.worker_retention_s)
            self.next_purge = _earliest(self.next_purge, at)
            for noted in self._reads:
                noted.purge = _earliest(noted.purge, at)

    def note(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Lower the moments for newly queued (or requeued) tasks."""
        before = (self.next_expiry, self.next_broadcast)
        for row in rows:
            if row.get("stop_time") is not None:
                self.next_expiry = _earliest(self.next_expiry, row["stop_time"])
                for noted in self._reads:
                    noted.expiry = _earliest(noted.expiry, row["stop_time"])
            if row.get("broadcast"):
                self.next_broadcast = _earliest(self.next_broadcast, row["next_run_time"])
                for noted in self._reads:
                    noted.broadcast = _earliest(noted.broadcast, row["next_run_time"])
        if (self.next_expiry, self.next_broadcast) != before:
            self.rt.wake_reaper.set()

    def seconds_to_next(self) -> float | None:
        """Seconds until the earliest pending moment (by the coordinator's clock)."""
        moments = [m for m in (self.next_expiry, self.next_broadcast, self.next_purge,
                               self.next_task_purge) if m is not None]
        if not moments:
            return None
        return max(0.0, (min(moments) - self.rt.clock.now()).total_seconds())

    async def run_once(self) -> None:
        """Run whichever pass is due now."""
        now = self.rt.clock.now()
        if self.next_expiry is not None and self.next_expiry <= now:
            await self._expire(now)
        if self.next_broadcast is not None and self.next_broadcast <= now:
            await self._broadcast(now)
        if self.next_purge is not None and self.next_purge <= now:
            await self._purge(now)
        if self.next_task_purge is not None and self.next_task_purge <= now:
            await self._purge_tasks(now)

    async def _purge_tasks(self, now: dt.datetime) -> None:
        cutoff = now - dt.timedelta(seconds=self.rt.config.task_retention_s)
        _, oldest = await housekeeping.purge(self.rt, cutoff)
        self._plan_task_purge(oldest)

    async def _purge(self, now: dt.datetime) -> None:
        cutoff = now - dt.timedelta(seconds=self.rt.config.worker_retention_s)

        def apply(tx: Tx) -> tuple[list[str], Any]:
            return tx.delete_lost_workers(cutoff), tx.earliest_lost_worker()

        with self._reading() as noted:
            names, lost = await self.rt.store.run(apply)
        self.next_purge = noted.purge
        self.note_lost_worker(lost)
        gone = set(names)
        for worker_id in [i for i, w in self.rt.registry.by_id.items()
                          if not w.alive and w.name in gone]:
            del self.rt.registry.by_id[worker_id]
        if names:
            logger.info("dead workers removed after retention workers=%s", ",".join(names))

    async def _expire(self, now: dt.datetime) -> None:
        def apply(tx: Tx) -> tuple[list[Row], Any]:
            rows = tx.overdue_for_expiry(now)
            trs = [lifecycle.expire(r) for r in rows]
            tx.apply(trs)
            after = [{**r, **tr.values, "status": tr.target.value}
                     for r, tr in zip(rows, trs, strict=True)]
            return after, tx.earliest_stop_time()

        with self._reading() as noted:
            expired, later = await self.rt.store.run(apply)
        self.next_expiry = _min(later, noted.expiry)
        for row in expired:
            logger.info("task expired task=%s stop_time=%s", row["id"], row["stop_time"])
            self.rt.leases.end(row["id"])
            if self.rt.feed.is_watched(row["id"]):
                self.rt.feed.publish(row["id"], row)

    async def _broadcast(self, now: dt.datetime) -> None:
        def apply(tx: Tx) -> tuple[int, Any]:
            # Who can take a child: the rows, so workers of every coordinator count.
            active = [(r["worker_name"], frozenset(json.loads(r["group_names"])),
                       frozenset(json.loads(r["functions"])))
                      for r in tx.workers(alive_only=True)
                      if r["status"] == WorkerStatus.ACTIVE.value]
            children: list[dict[str, Any]] = []
            trs = []
            waiting = False
            for parent in tx.due_broadcasts(now):
                takers = sorted(name for name, groups, functions in active
                                if parent["group_name"] in groups
                                and parent["function_name"] in functions)
                if not takers:
                    waiting = True
                    continue
                children += [child_row(parent, name, now) for name in takers]
                trs.append(lifecycle.fan_out(parent, now))
            tx.apply(trs)
            if children:
                tx.insert_tasks(children)
            later = tx.earliest_broadcast()
            if waiting:
                retry = now + dt.timedelta(seconds=NO_WORKER_RETRY_S)
                later = retry if later is None or later <= now else min(later, retry)
            return len(children), later

        with self._reading() as noted:
            count, later = await self.rt.store.run(apply)
        self.next_broadcast = _min(later, noted.broadcast)
        if count:
            logger.info("broadcast children queued count=%d", count)
            self.rt.signal.fire()


def child_row(parent: Mapping[str, Any], worker_name: str, now: dt.datetime) -> dict[str, Any]:
    """One broadcast child: the parent's work for one worker, run once."""
    keep = ("task_name", "group_name", "function_name", "args", "vars", "timeout",
            "sync_output", "retry_failed", "priority", "discard_results", "retry_delay",
            "retry_backoff", "retry_delay_max", "retry_jitter", "period", "prevent_drift")
    row = {k: parent[k] for k in keep}
    row.update(
        uuid=str(uuidlib.uuid4()), status=TaskStatus.QUEUED.value, enabled=True,
        start_time=now, next_run_time=now, stop_time=parent["stop_time"], repeats=1,
        cronline=None, times_run=0, times_failed=0, last_run_time=None,
        assigned_worker_name="", broadcast=False, attempt=0, lost_count=0,
        stop_requested=False, created_at=now, broadcast_parent=parent["id"],
        target_worker_name=worker_name)
    return row


def _earliest(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b < a else a


def _min(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return a if b is None else _earliest(a, b)
