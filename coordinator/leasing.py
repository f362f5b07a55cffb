"""Leases: claim due work (long-poll), start prefetched leases, take leases back unrun.

A lease is the task row's (id, attempt, assigned_worker_name) while it is
ASSIGNED or RUNNING; it is written by the claim transaction and mirrored in
`rt.leases` only once that committed. Commit-and-remember runs shielded from
cancellation: grpc.aio cancels a handler at any await, but a transaction
handed to the store still commits. A Lease whose caller is gone by then (its
deadline passed, its process was killed, its connection reset) hands its
tasks back at once, counting nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from taskgrid import tracing
from taskgrid.coordinator import lifecycle, runs
from taskgrid.coordinator.config import MAX_LEASE_BATCH
from taskgrid.coordinator.lifecycle import TaskStatus, WorkerStatus
from taskgrid.coordinator.runs import after, is_current, no_repeats, publish, settle
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

if TYPE_CHECKING:
    from taskgrid.coordinator.workers import LiveWorker

logger = logging.getLogger(__name__)

Ref = tuple[int, int]

#: a parked Lease asks the database again after this long even if no signal came,
#: so a missed wake-up costs seconds, never a stuck task
SAFETY_POLL_S = 2.0
#: bytes of a Lease reply kept for everything but the tasks' own text
REPLY_OVERHEAD_BYTES = 64 * 1024
#: protobuf framing per lease, on top of its text fields
LEASE_OVERHEAD_BYTES = 256


@dataclasses.dataclass(frozen=True)
class Granted:
    """A lease handed to a worker: the task row after the claim, and its run."""

    task: Row
    run_id: int
    started: bool

    @property
    def ref(self) -> Ref:
        """The lease's (task id, attempt)."""
        return (self.task["id"], self.task["attempt"])


@dataclasses.dataclass(frozen=True)
class LeaseAnswer:
    """What a Lease call returns."""

    leases: list[Granted]
    status: WorkerStatus
    stop: list[Ref]


def lease_bytes(task: Row) -> int:
    """About how many bytes a task takes in a Lease reply."""
    size = LEASE_OVERHEAD_BYTES
    for key in ("args", "vars", "command", "uuid", "task_name", "function_name", "group_name"):
        value = task.get(key)
        if value:
            size += len(value.encode()) if isinstance(value, str) else len(str(value))
    return size


def within_bytes(rows: Sequence[Row], budget: int) -> list[Row]:
    """The longest prefix of rows that fits `budget` bytes (always at least one row)."""
    out: list[Row] = []
    used = 0
    for row in rows:
        size = lease_bytes(row)
        if out and used + size > budget:
            break
        out.append(row)
        used += size
    return out


def _start_runs(tx: Tx, tasks: Sequence[Row], worker_name: str, now: dt.datetime) -> list[int]:
    """Insert the run records of tasks that just started (0 for discard_results)."""
    keep = [t for t in tasks if not t["discard_results"]]
    ids = iter(tx.insert_runs([lifecycle.open_run(t, worker_name, now) for t in keep]))
    return [0 if t["discard_results"] else next(ids) for t in tasks]


async def _claim(rt: Runtime, w: LiveWorker, n: int, prefetch: bool) -> list[Granted]:
    """One claim transaction, then the mirror: run shielded, as one unit."""
    budget = rt.config.max_message_bytes - REPLY_OVERHEAD_BYTES
    shared = rt.cluster.shared
    moved: list[bool] = []

    def claim(tx: Tx) -> tuple[list[Granted], list[Row], dt.datetime | None]:
        if not w.alive:  # declared dead while this claim waited for the store: claim nothing
            return [], [], None
        if shared and not tx.holds_session(w.id, rt.store.node):
            moved.append(True)  # another node took the session, or the leader declared it dead
            return [], [], None
        now = rt.clock.now()
        rows = tx.due_tasks(w.group_names, sorted(w.functions), now, n, w.name,
                            rt.deps_possible)
        # The start is stamped after the rows were read: a run never starts before the
        # report that released it (a dependency) was written, even on PostgreSQL where
        # another transaction may commit between `now` and the read.
        now = max(now, rt.clock.now())
        expired = [lifecycle.expire(r) for r in rows if lifecycle.is_expired(r, now)]
        gone = {tr.task_id for tr in expired}
        picked = within_bytes([r for r in rows if r["id"] not in gone], budget)
        leases = [lifecycle.lease(r, w.name) if prefetch
                  else lifecycle.lease_and_start(r, w.name, now) for r in picked]
        tx.apply(expired + leases)
        rows_after = [after(r, tr) for r, tr in zip(picked, leases, strict=True)]
        run_ids = [0] * len(rows_after) if prefetch else _start_runs(tx, rows_after, w.name, now)
        granted = [Granted(t, rid, not prefetch)
                   for t, rid in zip(rows_after, run_ids, strict=True)]
        by_id = {r["id"]: r for r in rows}
        ended = [after(by_id[tr.task_id], tr) for tr in expired]
        next_due = None if picked else tx.next_due_time(w.group_names, sorted(w.functions),
                                                          w.name, rt.deps_possible)
        return granted, ended, next_due

    # Producers queueing in a crowd: join their lingering inserts' commit.
    granted, ended, next_due = await rt.store.run(claim, rt.producers.joining())
    if moved:
        rt.spawn(rt.registry.check_moved(w.id), "check a moved session")
        return []
    w.next_due = next_due
    now_mono = time.monotonic()
    for g in granted:
        rt.leases.grant(w.id, g.task["id"], g.task["attempt"], g.started, now_mono)
    if rt.metrics is not None and granted:
        rt.metrics.leased([g.task for g in granted], rt.clock.now())
    if tracing.enabled():
        for g in granted:
            tracing.record("taskgrid.lease", g.task.get("trace_context"),
                           {"taskgrid.task_id": g.task["id"], "taskgrid.worker": w.name})
    publish(rt, ended)
    publish(rt, (g.task for g in granted))
    return granted


async def _claim_or_hand_back(rt: Runtime, w: LiveWorker, n: int, prefetch: bool
                              ) -> list[Granted]:
    job = asyncio.ensure_future(_claim(rt, w, n, prefetch))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        rt.spawn(_hand_back_when_claimed(rt, w, job), f"hand back leases of worker {w.name}")
        raise


async def _hand_back_when_claimed(rt: Runtime, w: LiveWorker,
                                  job: asyncio.Future[list[Granted]]) -> None:
    granted = await job
    if granted:
        await hand_back(rt, w, [g.ref for g in granted], "its Lease call was cancelled")


async def lease(rt: Runtime, w: LiveWorker, max_tasks: int, wait_s: float,
                prefetch: bool) -> LeaseAnswer:
    """Lease up to `max_tasks` due tasks, waiting up to `wait_s` for some (long-poll).

    The database is asked only when something may have changed since this
    worker last found nothing: the work signal fired, its next due time came,
    or SAFETY_POLL_S passed (a missed signal is repaired within seconds).
    """
    n = max(1, min(max_tasks, MAX_LEASE_BATCH))
    deadline = time.monotonic() + max(0.0, min(wait_s, rt.config.max_lease_wait_s))
    while True:
        if not w.alive or w.status is not WorkerStatus.ACTIVE or rt.leases.untold_stops(w.id):
            # A stop is delivered once this way, sooner than the next heartbeat; answering
            # every Lease at once while it is pending would make the worker spin.
            rt.leases.mark_stops_told(w.id)
            return LeaseAnswer([], w.status, rt.leases.stops(w.id))
        epoch = rt.signal.epoch
        now = rt.clock.now()
        due = w.next_due is not None and w.next_due <= now
        # The safety poll counts across calls: short long-polls must not skip it forever.
        polled = time.monotonic() - w.empty_at > SAFETY_POLL_S
        if w.empty_epoch != epoch or due or polled:
            granted = await _claim_or_hand_back(rt, w, n, prefetch)
            if granted:
                return LeaseAnswer(granted, w.status, rt.leases.stops(w.id))
            w.empty_epoch = epoch
            w.empty_at = time.monotonic()
            continue  # re-check: the signal may have fired during the claim
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return LeaseAnswer([], w.status, rt.leases.stops(w.id))
        safety = remaining > SAFETY_POLL_S
        remaining = min(remaining, SAFETY_POLL_S)
        if w.next_due is not None:
            remaining = min(remaining, max(0.0, (w.next_due - now).total_seconds()) + 0.001)
        woken = await _park(rt, w, n, remaining)
        if not woken and safety and rt.signal.epoch == epoch:
            w.empty_epoch = -1  # the safety poll: ask the database once more


async def report_and_lease(rt: Runtime, w: LiveWorker, outcomes: Sequence[runs.Outcome],
                           max_tasks: int, wait_s: float, prefetch: bool
                           ) -> tuple[LeaseAnswer, list[Ref]]:
    """A Lease that carries finished runs (ACK+FETCH); returns (answer, stale reports).

    The reports and the claim run side by side, as a Report and a Lease call
    would: on SQLite they share a commit, on PostgreSQL they take two
    connections at once. If the reports fail, leases granted meanwhile are
    handed back (the worker resends its reports with Report) and the error is
    raised; if the lease fails, its error is raised (the reports were applied
    or not, and a resend sorts that out).
    """
    if not outcomes:
        return await lease(rt, w, max_tasks, wait_s, prefetch), []
    reported = asyncio.ensure_future(runs.report(rt, w, outcomes))
    leased = asyncio.ensure_future(lease(rt, w, max_tasks, wait_s, prefetch))
    stale, answer = await asyncio.gather(reported, leased, return_exceptions=True)
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(stale, BaseException):
        if answer.leases:
            await asyncio.shield(hand_back(rt, w, [g.ref for g in answer.leases],
                                           "the reports on its Lease call failed"))
        raise stale
    return answer, stale


async def _park(rt: Runtime, w: LiveWorker, n: int, timeout_s: float) -> bool:
    """Wait for work this worker can run, or its own wake-up (a command); False on timeout."""
    if timeout_s <= 0:
        return False
    groups, functions, name = set(w.group_names), w.functions, w.name

    def can_run(kind: tuple[str, str, str]) -> bool:
        return kind[0] in groups and kind[1] in functions and kind[2] in ("", name)

    future = rt.signal.park(can_run, n, w.runs) if rt.cluster.shared else rt.signal.park(
        can_run, n)
    w.parked = future
    logger.debug("lease parked worker=%s", w.name)
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        return False
    finally:
        rt.signal.unpark(future)
        w.parked = None


async def start_runs(rt: Runtime, w: LiveWorker, refs: Sequence[Ref]
                     ) -> tuple[list[Granted], list[Ref]]:
    """ASSIGNED -> RUNNING for prefetched leases (EXPIRED if stop_time passed meanwhile).

    Returns (started leases, stale refs).
    """
    no_repeats(refs, "leases")
    stale = set(rt.leases.stale(w.id, refs, w.heartbeat_s))
    wanted = [r for r in refs if r not in stale]

    def start(tx: Tx) -> tuple[list[Granted], list[Row], list[Ref]]:
        now = rt.clock.now()
        tasks = tx.tasks_by_ids([t for t, _ in wanted], lock=True)
        fresh = [tasks[t] for t, a in wanted
                 if is_current(tasks.get(t), a, w.name, (TaskStatus.ASSIGNED,))]
        gone = [(t, a) for t, a in wanted
                if not is_current(tasks.get(t), a, w.name, (TaskStatus.ASSIGNED,))]
        expired = [lifecycle.expire(t) for t in fresh if lifecycle.is_expired(t, now)]
        out = {tr.task_id for tr in expired}
        live = [t for t in fresh if t["id"] not in out]
        starts = [lifecycle.start(t, now) for t in live]
        tx.apply(expired + starts)
        rows = [after(t, tr) for t, tr in zip(live, starts, strict=True)]
        run_ids = _start_runs(tx, rows, w.name, now)
        ended = [after(tasks[tr.task_id], tr) for tr in expired]
        return [Granted(t, r, True) for t, r in zip(rows, run_ids, strict=True)], ended, gone

    async def commit_and_remember() -> tuple[list[Granted], list[Ref]]:
        granted, ended, gone = await rt.store.run(start)
        for row in ended:
            rt.leases.end(row["id"])
        rt.leases.end_many(t for t, _ in gone)
        for g in granted:
            rt.leases.start(g.task["id"])
        publish(rt, ended)
        publish(rt, (g.task for g in granted))
        return granted, sorted(stale | set(gone) | {(r["id"], r["attempt"]) for r in ended})

    if not wanted:
        return [], sorted(stale)
    return await asyncio.shield(commit_and_remember())


async def release(rt: Runtime, w: LiveWorker, refs: Sequence[Ref]) -> list[Ref]:
    """Leases handed back unrun by their worker; returns the stale refs (the rest queued)."""
    no_repeats(refs, "leases")
    stale = set(rt.leases.stale(w.id, refs, w.heartbeat_s))
    wanted = [r for r in refs if r not in stale]
    if not wanted:
        return sorted(stale)
    gone = await asyncio.shield(hand_back(rt, w, wanted, "released by the worker"))
    return sorted(stale | set(gone))


async def hand_back(rt: Runtime, w: LiveWorker, refs: Sequence[Ref], why: str) -> list[Ref]:
    """QUEUED again at once, no counter moved, run records removed; returns stale refs."""
    def apply(tx: Tx) -> tuple[list[Row], list[Ref]]:
        tasks = tx.tasks_by_ids([t for t, _ in refs], lock=True)
        mine = [(t, a) for t, a in refs
                if is_current(tasks.get(t), a, w.name, lifecycle.LEASED_TASK_STATUSES)]
        trs = [lifecycle.release(tasks[t]) for t, _ in mine]
        tx.apply(trs)
        tx.delete_runs([run_id for run_id, _ in tx.runs_by_ref(mine).values()])
        held = set(mine)
        gone = [r for r in refs if r not in held]
        return [after(tasks[tr.task_id], tr) for tr in trs], gone

    rows, gone = await rt.store.run(apply)
    if rows:
        logger.info("leases handed back worker=%s why=%s tasks=%s", w.name, why,
                    ",".join(str(r["id"]) for r in rows))
    rt.leases.end_many(t for t, _ in gone)
    settle(rt, rows)
    return gone
