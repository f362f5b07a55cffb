"""The in-memory lease mirror: which worker holds which (task id, attempt).

The truth is the task row: a lease is its (id, attempt, assigned_worker_name)
while the status is ASSIGNED or RUNNING. This module keeps a copy so that a
heartbeat or an output chunk can be checked against the lease its worker
holds without a query. It is the copy's only writer: operations call the
methods below *after* their transaction committed (shielded from
cancellation), and the reaper's reconcile pass (`replace`) rebuilds the copy
from the rows, so any drift lives for one pass at most.

It also keeps, per lease, what only this process can know: when it was
granted, how many heartbeats in a row failed to list it, and whether a stop
request was handed out already.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Ref = tuple[int, int]

#: heartbeats in a row that must leave a lease out before it is taken back
ORPHAN_AFTER_MISSES = 2
#: how long a reported lease is still tolerated in heartbeats built before the report landed
RECENT_GRACE_BEATS = 4.0


@dataclasses.dataclass
class Held:
    """A lease as the coordinator remembers it."""

    worker_id: int
    attempt: int
    started: bool
    granted: float  # monotonic seconds at lease or start
    #: consecutive heartbeats of its worker that did not list it
    missed: int = 0
    #: some heartbeat listed it: the worker really has it
    listed: bool = False
    #: a client asked to stop it (the row's stop_requested)
    stop: bool = False
    #: the stop went out in a Lease reply already (heartbeats re-send it anyway)
    stop_told: bool = False


@dataclasses.dataclass(frozen=True)
class Orphans:
    """Leases a heartbeat showed its worker no longer holds."""

    never_listed: list[int]  # never reached the worker (a lost Lease reply): hand back
    dropped: list[int]  # listed before, gone now (a crashed child): lost


class Leases:
    """Task id -> Held, and worker id -> its task ids."""

    def __init__(self) -> None:
        self._by_task: dict[int, Held] = {}
        self._by_worker: dict[int, set[int]] = {}
        #: (task id, attempt) -> monotonic time the worker reported it
        self._recent: dict[int, dict[Ref, float]] = {}
        #: a counter of writes, and the count at each task's last grant or end: a reconcile
        #: pass must not undo what changed after it read its snapshot of the rows
        self._seq = 0
        self._changed: dict[int, int] = {}

    def mark(self) -> int:
        """The write count now; pass it to `replace` with the rows read after this call."""
        return self._seq

    def _touch(self, task_id: int) -> None:
        self._seq += 1
        self._changed[task_id] = self._seq

    # -- reads -------------------------------------------------------------

    def of_worker(self, worker_id: int) -> dict[int, Held]:
        """The leases a worker holds, by task id (a copy)."""
        return {t: self._by_task[t] for t in self._by_worker.get(worker_id, ())}

    def count_all(self) -> int:
        """How many leases are known."""
        return len(self._by_task)

    def count(self, worker_id: int) -> int:
        """How many leases the worker holds."""
        return len(self._by_worker.get(worker_id, ()))

    def get(self, task_id: int) -> Held | None:
        """The lease on this task, if any."""
        return self._by_task.get(task_id)

    def stale(self, worker_id: int, refs: Iterable[Ref], beat_s: float,
              tolerate_recent: bool = False, now_mono: float | None = None) -> list[Ref]:
        """The refs this worker does not hold.

        With `tolerate_recent` (heartbeats), leases it reported moments ago are
        not stale: a heartbeat built before the report may still be on its way.
        """
        recent = self._recent_of(worker_id, beat_s, now_mono) if tolerate_recent else {}
        out = []
        for task_id, attempt in refs:
            held = self._by_task.get(task_id)
            mine = held is not None and held.worker_id == worker_id and held.attempt == attempt
            if not mine and (task_id, attempt) not in recent:
                out.append((task_id, attempt))
        return sorted(set(out))

    def stops(self, worker_id: int) -> list[Ref]:
        """Leases of this worker a client asked to stop."""
        return sorted((t, h.attempt) for t, h in self.of_worker(worker_id).items() if h.stop)

    def untold_stops(self, worker_id: int) -> bool:
        """True when a stop waits that no Lease reply has carried yet."""
        return any(h.stop and not h.stop_told for h in self.of_worker(worker_id).values())

    # -- writes (after a commit) ---------------------------------------------

    def grant(self, worker_id: int, task_id: int, attempt: int, started: bool,
              now_mono: float | None = None) -> None:
        """A lease committed for this worker."""
        self.end(task_id)
        self._touch(task_id)
        self._by_task[task_id] = Held(worker_id, attempt, started,
                                      time.monotonic() if now_mono is None else now_mono)
        self._by_worker.setdefault(worker_id, set()).add(task_id)

    def start(self, task_id: int, now_mono: float | None = None) -> None:
        """A prefetched lease started (ASSIGNED -> RUNNING committed)."""
        held = self._by_task.get(task_id)
        if held is not None:
            held.started = True
            held.granted = time.monotonic() if now_mono is None else now_mono

    def request_stop(self, task_id: int, attempt: int) -> bool:
        """Mark a lease to be stopped; False when no such lease is held."""
        held = self._by_task.get(task_id)
        if held is None or held.attempt != attempt:
            return False
        held.stop = True
        return True

    def mark_stops_told(self, worker_id: int) -> None:
        """Every pending stop of this worker went out in a Lease reply."""
        for held in self.of_worker(worker_id).values():
            held.stop_told = held.stop_told or held.stop

    def end(self, task_id: int, reported: bool = False, now_mono: float | None = None) -> None:
        """Drop a lease that ended.

        One the worker itself reported stays tolerated for a few beats, since a
        heartbeat built before the report may still be on its way; one the
        coordinator took away (stop, lost, timeout) is stale at once.
        """
        held = self._by_task.pop(task_id, None)
        if held is None:
            return
        self._touch(task_id)
        mine = self._by_worker.get(held.worker_id)
        if mine is not None:
            mine.discard(task_id)
            if not mine:
                del self._by_worker[held.worker_id]
        if reported:
            when = time.monotonic() if now_mono is None else now_mono
            self._recent.setdefault(held.worker_id, {})[(task_id, held.attempt)] = when

    def end_many(self, task_ids: Iterable[int], reported: bool = False) -> None:
        """`end` for several leases."""
        for task_id in task_ids:
            self.end(task_id, reported)

    def drop_worker(self, worker_id: int) -> None:
        """Forget everything about a worker that is gone."""
        for task_id in list(self._by_worker.get(worker_id, ())):
            self.end(task_id)
        self._recent.pop(worker_id, None)

    def listing(self, worker_id: int, refs: Sequence[Ref], beat_s: float,
                now_mono: float | None = None) -> Orphans:
        """Record a heartbeat's list of leases; returns those to take back.

        A lease left out of ORPHAN_AFTER_MISSES heartbeats in a row, and granted
        more than one interval ago (a beat built before the Lease reply arrived
        is no evidence), is orphaned.
        """
        now = time.monotonic() if now_mono is None else now_mono
        listed = {t for t, _ in refs}
        never: list[int] = []
        dropped: list[int] = []
        for task_id in list(self._by_worker.get(worker_id, ())):
            held = self._by_task[task_id]
            if task_id in listed:
                held.missed, held.listed = 0, True
                continue
            if now - held.granted <= beat_s:
                continue
            held.missed += 1
            if held.missed >= ORPHAN_AFTER_MISSES:
                (dropped if held.listed else never).append(task_id)
        return Orphans(never, dropped)

    def replace(self, rows: Sequence[Mapping[str, Any]], worker_ids: Mapping[str, int],
                since: int | None = None, now_mono: float | None = None) -> tuple[int, int]:
        """Rebuild the copy from the leased task rows (the reconcile pass).

        `worker_ids` maps the names of live workers to their ids; rows of other
        workers are left out (the reaper takes those leases back). Entries that
        still match keep their heartbeat bookkeeping. With `since` (from `mark`,
        taken before the rows were read), a lease granted or ended after that
        is left as it is: the rows predate it. Returns (added, removed).
        """
        if since is None:
            since = self._seq
        newer = {t for t, seq in self._changed.items() if seq > since}
        wanted: dict[int, tuple[int, int, bool, bool]] = {}
        for row in rows:
            worker_id = worker_ids.get(row["assigned_worker_name"])
            if worker_id is not None:
                wanted[row["id"]] = (worker_id, row["attempt"], bool(row["started"]),
                                     bool(row["stop_requested"]))
        removed = [t for t, h in self._by_task.items() if t not in newer and (
            t not in wanted or (h.worker_id, h.attempt) != wanted[t][:2])]
        for task_id in removed:
            self.end(task_id)
        added = 0
        for task_id, (worker_id, attempt, started, stop) in wanted.items():
            if task_id in newer:
                continue
            held = self._by_task.get(task_id)
            if held is None:
                self.grant(worker_id, task_id, attempt, started, now_mono)
                held = self._by_task[task_id]
                added += 1
            held.started = held.started or started
            held.stop = held.stop or stop
        self._changed = {t: seq for t, seq in self._changed.items() if seq > since}
        return added, len(removed)

    def _recent_of(self, worker_id: int, beat_s: float,
                   now_mono: float | None = None) -> dict[Ref, float]:
        recent = self._recent.get(worker_id)
        if not recent:
            return {}
        now = time.monotonic() if now_mono is None else now_mono
        grace = RECENT_GRACE_BEATS * beat_s
        fresh = {k: t for k, t in recent.items() if now - t < grace}
        if fresh:
            self._recent[worker_id] = fresh
        else:
            del self._recent[worker_id]
        return fresh
