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

With several coordinators on PostgreSQL (cluster.py) only the leader does the
repairs, each fenced by its epoch: it declares dead its own silent sessions
(memory) and the workers whose rows no node has refreshed for dead_after
(their coordinator died or lost them), takes back leases of workers whose rows
are dead, closes overdue runs of every node, ends orphaned broadcast children,
and runs the timers. Every node rebuilds the mirror of its own sessions' leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from taskgrid.coordinator import lifecycle, runs
from taskgrid.coordinator.cluster import NODE_BEAT_S
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
        #: (worker id, last heartbeat) of rows already judged silent (each judged once)
        self._judged: set[tuple[int, dt.datetime]] = set()

    async def run_once(self, now: dt.datetime | None = None,
                       now_mono: float | None = None) -> None:
        """One tick: timers due now, silent workers, and the reconcile pass when due."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        cluster = self.rt.cluster
        if cluster.is_leader(now_mono):
            with cluster.fenced():
                await self.rt.timers.run_once()
                await self._silent_sessions(now_mono)
                await self._silent_rows(now_mono)
        if now_mono >= self.next_reconcile and self._has_sessions():
            if not self._quiet(now_mono):
                await self.reconcile(now, now_mono)
            self.next_reconcile = now_mono + RECONCILE_INTERVAL_S

    async def _silent_sessions(self, now_mono: float) -> None:
        registry = self.rt.registry
        for w in registry.dead(now_mono):
            silent = now_mono - w.last_seen
            logger.warning("worker lost worker=%s silent_s=%.1f", w.name, silent)
            try:  # each worker alone: one failing never keeps the others
                await registry.declare_dead(w, f"lost: no heartbeat for {silent:.1f} s")
            except Exception:
                logger.exception("declaring worker dead failed worker=%s", w.name)

    async def _silent_rows(self, now_mono: float) -> None:
        """PostgreSQL: workers of other nodes whose rows nobody refreshed for dead_after."""
        cluster = self.rt.cluster
        if not cluster.shared or not cluster.rows:
            return
        now = self.rt.clock.now()
        mine = self.rt.registry.by_id
        # Rows judged before and since refreshed or gone need no memory of it.
        self._judged &= {(r["id"], r["last_heartbeat"]) for r in cluster.rows}
        for row in silent_rows(cluster.rows, mine, now, now_mono - cluster.healthy_since,
                               self.rt.config.dead_after_s, cluster.node):
            key = (row["id"], row["last_heartbeat"])
            if key in self._judged:
                continue
            self._judged.add(key)
            silent = (now - row["last_heartbeat"]).total_seconds()
            logger.warning("worker lost worker=%s silent_s=%.1f coordinator=%s",
                           row["worker_name"], silent, row["node_name"] or "none")
            try:
                await runs.lose(self.rt, row["worker_name"],
                                f"lost: no heartbeat for {silent:.1f} s", mark_dead=row["id"],
                                silent_since=row["last_heartbeat"])
                self.rt.timers.note_lost_worker(now)
            except Exception:
                logger.exception("declaring worker dead failed worker=%s", row["worker_name"])

    async def elected(self) -> None:
        """This node just became the leader: read the timers and repair at once."""
        self._judged.clear()
        self.next_reconcile = 0.0
        with self.rt.cluster.fenced():
            await self.rt.timers.load()
        self.rt.wake_reaper.set()

    def _quiet(self, now_mono: float) -> bool:
        """Nothing a pass could repair: no lease known, none granted or ended, same sessions.

        Leases are written only by this coordinator's claims, and a claim's grant
        reaches the mirror (moving its write count) right after its commit, so with
        an empty, unchanged mirror and unchanged sessions the rows hold no lease
        and no session-less alive row. A pass still runs every QUIET_RECONCILE_S.
        """
        if self.rt.cluster.shared and self.rt.cluster.is_leader(now_mono):
            return False  # other nodes lease without telling this one's mirror
        seen = (self.rt.leases.mark(), self.rt.registry.live_ids())
        return (self._seen == seen and self.rt.leases.count_all() == 0
                and now_mono - self._last_pass < QUIET_RECONCILE_S)

    def _has_sessions(self) -> bool:
        cluster = self.rt.cluster
        if cluster.shared and cluster.is_leader():
            return True  # other nodes' leases are the leader's to repair
        return bool(self.rt.registry.live_ids()) or self.passes == 0 or bool(
            self.rt.leases.count_all())

    async def reconcile(self, now: dt.datetime | None = None,
                        now_mono: float | None = None) -> Findings:
        """Compare the rows with the live sessions and repair both (see the module doc)."""
        self.passes += 1
        cluster = self.rt.cluster
        leader = cluster.is_leader(now_mono)
        beats = self.rt.registry.unflushed_beats()
        live = self.rt.registry.live_ids()
        since = self.rt.leases.mark()  # leases granted or ended from here on are newer
        self._last_pass = time.monotonic() if now_mono is None else now_mono

        def read(tx: Tx) -> tuple[list[Row], list[Row], int]:
            tx.touch_workers(beats)
            leased = tx.leased_tasks()
            alive_rows = tx.workers(alive_only=True)
            if not leader:
                return leased, alive_rows, 0
            owners = [r["worker_name"] for r in alive_rows] if cluster.shared else live
            children = tx.orphaned_children(sorted(owners))
            trs = [lifecycle.orphan_child(c) for c in children]
            tx.apply(trs)
            return leased, alive_rows, len(trs)

        with cluster.fenced() if leader else contextlib.nullcontext():
            leased, alive_rows, orphans = await self.rt.store.run(read)
        # Sessions that registered while the rows were read hold some of those leases.
        live = self.rt.registry.live_ids()
        now = self.rt.clock.now() if now is None else now
        if leader:
            with cluster.fenced():
                found = await self._repair(leased, alive_rows, live, now, orphans)
        else:
            found = Findings({}, [], [], 0)
        added, removed = self.rt.leases.replace(
            [r for r in leased if r["assigned_worker_name"] in live], live, since, now_mono)
        if added or removed:
            logger.warning("lease mirror repaired from the rows added=%d removed=%d", added,
                           removed)
        if orphans:
            logger.info("broadcast children of gone workers expired count=%d", orphans)
        self._seen = (self.rt.leases.mark(), self.rt.registry.live_ids())
        return found

    async def _repair(self, leased: list[Row], alive_rows: list[Row], live: dict[str, int],
                      now: dt.datetime, orphans: int) -> Findings:
        """The leader's repairs from one read of the rows."""
        if self.rt.cluster.shared:
            # Workers of every node: a lease is lost when its worker's row is dead, and an
            # alive row with no session anywhere is found by its silence (_silent_rows).
            owners = {r["worker_name"]: r["id"] for r in alive_rows}
            dead_after = self.rt.config.dead_after_s
            unheard = frozenset(r["worker_name"] for r in alive_rows if (
                now - r["last_heartbeat"]).total_seconds() > dead_after(r["heartbeat"]))
            found = find(leased, [], owners, now, self.rt.config.timeout_grace_s, orphans,
                         unheard)
        else:
            unheard = frozenset(w.name for w in self.rt.registry.by_id.values()
                                if w.alive and not w.heard)
            found = find(leased, alive_rows, live, now, self.rt.config.timeout_grace_s, orphans,
                         unheard)
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


def silent_rows(rows: list[Row], sessions: Mapping[int, object], now: dt.datetime,
                healthy_s: float, dead_after: Callable[[float], float], node: str) -> list[Row]:
    """Pure: alive worker rows not refreshed for their dead_after, but this node's sessions.

    Silence counts for `healthy_s` at most (how long this node has been able to see
    the rows being refreshed); a node beat's lag (NODE_BEAT_S) is added to dead_after.
    """
    out = []
    for row in rows:
        if row["id"] in sessions and row["node_name"] == node:
            continue  # judged from memory, more precisely
        silent = min((now - row["last_heartbeat"]).total_seconds(), healthy_s)
        if silent > dead_after(row["heartbeat"]) + NODE_BEAT_S:
            out.append(row)
    return out


def find(leased: list[Row], alive_rows: list[Row], live: dict[str, int], now: dt.datetime,
         grace_s: float, orphan_children: int = 0,
         unheard: frozenset[str] = frozenset()) -> Findings:
    """Pure: what the rows say must be repaired, given the live sessions and `now`.

    Runs of `unheard` workers (silent since a restart, or by their rows: about to be
    judged dead or to come back) are not overdue yet: if their worker is dead, the run
    is lost, not timed out.
    """
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
        if (row["status"] == TaskStatus.RUNNING and start is not None and name not in unheard
                and (now - start).total_seconds() > row["timeout"] + grace_s):
            overdue.append(row)
    return Findings(lost, dead_rows, overdue, orphan_children)
