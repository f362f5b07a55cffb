"""Background upkeep: dead workers, the timeout backstop, lease reconciliation, timers.

Like River's maintenance services: a `run_once(now, now_mono)` step (time is
a parameter, so tests drive it without sleeping) and a thin loop around it.

Two cadences:
- every tick (a fraction of the fastest heartbeat): timers that are due, and
  workers this process has heard nothing from for dead_after, which are
  declared dead at once (memory says who is silent; the rows say what they held);
- every RECONCILE_INTERVAL_S while any worker is connected or any lease is
  known: one read of the leased rows and the alive worker rows, which
  * writes the heartbeats heard since the last pass in one batch,
  * takes back leases whose worker is not a live session of this coordinator
    (a claim that raced the reaper, leases found after a restart),
  * declares dead the rows still marked alive that have no live session,
  * closes RUNNING runs past timeout plus grace with no report (durable
    time: the row's last_run_time against the coordinator clock),
  * ends QUEUED broadcast children whose target worker is gone,
  * and rebuilds the lease mirror from the rows;
  while quiet (no lease known, none granted or ended since the last pass, the
  same sessions) the pass is skipped, and runs once per QUIET_RECONCILE_S only.
An idle coordinator does no database work but that one pass a minute (none at
all with no worker connected).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable

from taskgrid.coordinator import lifecycle, runs
from taskgrid.coordinator.lifecycle import TaskStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

logger = logging.getLogger(__name__)

#: ticks per heartbeat interval of the fastest worker
TICKS_PER_BEAT = 4
MIN_TICK_S = 0.05
#: how often the leased rows are read back (the backstop and the mirror's repair)
RECONCILE_INTERVAL_S = 3.0
#: while quiet (no lease anywhere, none granted or ended, the same sessions) a pass runs only
#: this often, to write the heartbeat times: an idle system stays off the database
QUIET_RECONCILE_S = 60.0


@dataclasses.dataclass(frozen=True)
class Findings:
    """What one reconcile pass found in the rows."""

    lost_leases: dict[str, list[tuple[int, int]]]  # worker name -> leases of no live session
    dead_rows: list[tuple[int, str]]  # (id, name) alive rows with no live session
    overdue: list[Row]  # RUNNING past timeout plus grace
    orphan_children: int  # broadcast children ended


class Reaper:
    """Finds dead workers, overdue runs and leases that memory does not know."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.next_reconcile = 0.0  # monotonic: the first pass runs at once
        self.passes = 0
        #: what the last pass saw: the lease mirror's write count, the sessions, its time
        self._seen: tuple[int, dict[str, int]] | None = None
        self._last_pass = 0.0

    async def run_once(self, now: dt.datetime | None = None,
                       now_mono: float | None = None) -> None:
        """One tick: timers due now, silent workers, and the reconcile pass when due."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        await self.rt.timers.run_once()
        registry = self.rt.registry
        for w in registry.dead(now_mono):
            silent = now_mono - w.last_seen
            logger.warning("worker lost worker=%s silent_s=%.1f", w.name, silent)
            try:  # each worker alone: one failing never keeps the others
                await registry.declare_dead(w, f"lost: no heartbeat for {silent:.1f} s")
            except Exception:
                logger.exception("declaring worker dead failed worker=%s", w.name)
        if now_mono >= self.next_reconcile and self._has_sessions():
            if not self._quiet(now_mono):
                await self.reconcile(now, now_mono)
            self.next_reconcile = now_mono + RECONCILE_INTERVAL_S

    def _quiet(self, now_mono: float) -> bool:
        """Nothing a pass could repair: no lease known, none granted or ended, same sessions.

        Leases are written only by this coordinator's claims, and a claim's grant
        reaches the mirror (moving its write count) right after its commit, so with
        an empty, unchanged mirror and unchanged sessions the rows hold no lease
        and no session-less alive row. A pass still runs every QUIET_RECONCILE_S.
        """
        seen = (self.rt.leases.mark(), self.rt.registry.live_ids())
        return (self._seen == seen and self.rt.leases.count_all() == 0
                and now_mono - self._last_pass < QUIET_RECONCILE_S)

    def _has_sessions(self) -> bool:
        return bool(self.rt.registry.live_ids()) or self.passes == 0 or bool(
            self.rt.leases.count_all())

    async def reconcile(self, now: dt.datetime | None = None,
                        now_mono: float | None = None) -> Findings:
        """Compare the rows with the live sessions and repair both (see the module doc)."""
        self.passes += 1
        beats = self.rt.registry.unflushed_beats()
        live = self.rt.registry.live_ids()
        since = self.rt.leases.mark()  # leases granted or ended from here on are newer
        self._last_pass = time.monotonic() if now_mono is None else now_mono

        def read(tx: Tx) -> tuple[list[Row], list[Row], int]:
            tx.touch_workers(beats)
            leased = tx.leased_tasks()
            alive_rows = tx.workers(alive_only=True)
            children = tx.orphaned_children(sorted(live))
            trs = [lifecycle.orphan_child(c) for c in children]
            tx.apply(trs)
            return leased, alive_rows, len(trs)

        leased, alive_rows, orphans = await self.rt.store.run(read)
        # Sessions that registered while the rows were read hold some of those leases.
        live = self.rt.registry.live_ids()
        now = self.rt.clock.now() if now is None else now
        found = find(leased, alive_rows, live, now, self.rt.config.timeout_grace_s, orphans)
        for worker_id, name in found.dead_rows:
            logger.warning("worker row alive with no session; declared dead worker=%s", name)
            await self._each(runs.lose(self.rt, name, "lost: no session on this coordinator",
                                       mark_dead=worker_id), name)
        for name, refs in found.lost_leases.items():
            if name in {n for _, n in found.dead_rows}:
                continue  # given back with the row above
            await self._each(runs.lose(self.rt, name, "lost: no live session", refs), name)
        if found.overdue:
            await runs.time_out(self.rt, found.overdue)
        added, removed = self.rt.leases.replace(
            [r for r in leased if r["assigned_worker_name"] in live], live, since, now_mono)
        if added or removed:
            logger.warning("lease mirror repaired from the rows added=%d removed=%d", added,
                           removed)
        if orphans:
            logger.info("broadcast children of gone workers expired count=%d", orphans)
        self._seen = (self.rt.leases.mark(), self.rt.registry.live_ids())
        return found

    async def _each(self, job: Awaitable[object], name: str) -> None:
        try:
            await job
        except Exception:
            logger.exception("reaper step failed worker=%s", name)

    def interval_s(self) -> float:
        """How long to sleep between ticks: a fraction of the fastest heartbeat."""
        beats = [w.heartbeat_s for w in self.rt.registry.by_id.values() if w.alive]
        fastest = min(beats, default=self.rt.config.heartbeat_s)
        tick = fastest / TICKS_PER_BEAT
        timer = self.rt.timers.seconds_to_next()
        if timer is not None:
            tick = min(tick, timer + 0.001)
        return max(MIN_TICK_S, tick)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Run ticks until `stopping` is set; errors are logged, never fatal."""
        while not stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("reaper pass failed")
            self.rt.wake_reaper.clear()
            stop = asyncio.ensure_future(stopping.wait())
            wake = asyncio.ensure_future(self.rt.wake_reaper.wait())
            await asyncio.wait([stop, wake], timeout=self.interval_s(),
                               return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            wake.cancel()


def find(leased: list[Row], alive_rows: list[Row], live: dict[str, int], now: dt.datetime,
         grace_s: float, orphan_children: int = 0) -> Findings:
    """Pure: what the rows say must be repaired, given the live sessions and `now`."""
    dead_rows = [(r["id"], r["worker_name"]) for r in alive_rows
                 if live.get(r["worker_name"]) != r["id"]]
    lost: dict[str, list[tuple[int, int]]] = {}
    overdue = []
    for row in leased:
        name = row["assigned_worker_name"]
        if name not in live:
            lost.setdefault(name, []).append((row["id"], row["attempt"]))
            continue
        start = row["last_run_time"]
        if (row["status"] == TaskStatus.RUNNING and start is not None
                and (now - start).total_seconds() > row["timeout"] + grace_s):
            overdue.append(row)
    return Findings(lost, dead_rows, overdue, orphan_children)
