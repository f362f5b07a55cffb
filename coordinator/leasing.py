"""Leases: claim due work (long-poll), start, report outcomes, lose a worker's leases.

Every path that ends a run goes through `_close_runs`, and lifecycle.finish or
lifecycle.lose_worker decide what the task becomes: a reported failure, a
coordinator-side timeout and a lost worker all decide the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from taskgrid.coordinator import lifecycle, output
from taskgrid.coordinator.config import MAX_LEASE_BATCH
from taskgrid.coordinator.errors import InvalidRequestError, StaleLeaseError
from taskgrid.coordinator.lifecycle import RunStatus, TaskStatus, Transition, WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

if TYPE_CHECKING:
    from taskgrid.coordinator.workers import LiveWorker

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Held:
    """A lease as the coordinator remembers it."""

    attempt: int
    granted: float  # monotonic seconds at lease or start
    started: bool
    limit_s: float  # timeout plus grace: past it the coordinator closes the run TIMEOUT


def held(rt: Runtime, task: Row, now_mono: float, started: bool) -> Held:
    """How the coordinator remembers a lease it granted (or found at start-up)."""
    return Held(task["attempt"], now_mono, started, task["timeout"] + rt.config.timeout_grace_s)


@dataclasses.dataclass(frozen=True)
class Granted:
    """A lease handed to a worker: the task row after the claim, and its run."""

    task: Row
    run_id: int
    started: bool


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A run's end as reported by a worker (or decided by the coordinator)."""

    task_id: int
    attempt: int
    status: RunStatus
    result: str | None = None
    traceback: str = ""
    output: tuple[dict[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class LeaseAnswer:
    """What a Lease call returns."""

    leases: list[Granted]
    status: WorkerStatus
    stop: list[tuple[int, int]]


def _publish(rt: Runtime, rows: Iterable[Row]) -> None:
    for row in rows:
        if rt.feed.is_watched(row["id"]):
            rt.feed.publish(row["id"], row)


def _after(task: Row, tr: Transition) -> Row:
    return {**task, **tr.values, "status": tr.target.value}


def _start_runs(tx: Tx, tasks: Sequence[Row], worker_name: str, now: dt.datetime) -> list[int]:
    """Insert the run records of tasks that just started (0 for discard_results)."""
    keep = [t for t in tasks if not t["discard_results"]]
    ids = iter(tx.insert_runs([lifecycle.open_run(t, worker_name, now) for t in keep]))
    return [0 if t["discard_results"] else next(ids) for t in tasks]


async def _claim(rt: Runtime, w: LiveWorker, n: int, prefetch: bool) -> list[Granted]:
    def claim(tx: Tx) -> tuple[list[Granted], list[Row], dt.datetime | None]:
        now = rt.clock.now()
        rows = tx.due_tasks(w.group_names, sorted(w.functions), now, n, w.name)
        # The start is stamped after the rows were read: a run never starts before the
        # report that released it (a dependency) was written, even on PostgreSQL where
        # another transaction may commit between `now` and the read.
        now = max(now, rt.clock.now())
        expired = [lifecycle.expire(r) for r in rows if lifecycle.is_expired(r, now)]
        gone = {tr.task_id for tr in expired}
        picked = [r for r in rows if r["id"] not in gone]
        leases = [lifecycle.lease(r, w.name) if prefetch
                  else lifecycle.lease_and_start(r, w.name, now) for r in picked]
        tx.apply(expired + leases)
        after = [_after(r, tr) for r, tr in zip(picked, leases, strict=True)]
        run_ids = [0] * len(after) if prefetch else _start_runs(tx, after, w.name, now)
        granted = [Granted(t, rid, not prefetch) for t, rid in zip(after, run_ids, strict=True)]
        by_id = {r["id"]: r for r in rows}
        ended = [_after(by_id[tr.task_id], tr) for tr in expired]
        next_due = None if picked else tx.next_due_time(w.group_names, sorted(w.functions),
                                                          w.name)
        return granted, ended, next_due

    granted, ended, next_due = await rt.store.run(claim)
    w.next_due = next_due
    _publish(rt, ended)
    _publish(rt, (g.task for g in granted))
    now_mono = time.monotonic()
    for g in granted:
        w.leases[g.task["id"]] = held(rt, g.task, now_mono, g.started)
    return granted


async def lease(rt: Runtime, w: LiveWorker, max_tasks: int, wait_s: float,
                prefetch: bool) -> LeaseAnswer:
    """Lease up to `max_tasks` due tasks, waiting up to `wait_s` for some (long-poll).

    The database is asked only when something may have changed since this
    worker last found nothing: the work signal fired, or its next due time came.
    """
    n = max(1, min(max_tasks, MAX_LEASE_BATCH))
    deadline = time.monotonic() + max(0.0, min(wait_s, rt.config.max_lease_wait_s))
    while True:
        if not w.alive or w.status is not WorkerStatus.ACTIVE or w.stop - w.stop_told:
            # A stop is delivered once this way, sooner than the next heartbeat; answering
            # every Lease at once while it is pending would make the worker spin.
            w.stop_told |= w.stop
            return LeaseAnswer([], w.status, sorted(w.stop))
        epoch = rt.signal.epoch
        now = rt.clock.now()
        due = w.next_due is not None and w.next_due <= now
        if w.empty_epoch != epoch or due:
            granted = await _claim(rt, w, n, prefetch)
            if granted:
                return LeaseAnswer(granted, w.status, sorted(w.stop))
            w.empty_epoch = epoch
            continue  # re-check: the signal may have fired during the claim
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return LeaseAnswer([], w.status, sorted(w.stop))
        if w.next_due is not None:
            remaining = min(remaining, max(0.0, (w.next_due - now).total_seconds()) + 0.001)
        w.wake.clear()
        await _wait_any(rt.signal.wait(remaining), w.wake.wait())


async def _wait_any(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def start_runs(rt: Runtime, w: LiveWorker, refs: Sequence[tuple[int, int]]) -> list[Granted]:
    """ASSIGNED -> RUNNING for prefetched leases (EXPIRED if stop_time passed meanwhile)."""
    rt.registry.check_refs(w, refs, "start")

    def start(tx: Tx) -> tuple[list[Granted], list[Row]]:
        now = rt.clock.now()
        tasks = tx.tasks_by_ids([t for t, _ in refs], lock=True)
        _check_db(tasks, refs, w.name, {TaskStatus.ASSIGNED})
        chosen = [tasks[t] for t, _ in refs]
        expired = [lifecycle.expire(t) for t in chosen if lifecycle.is_expired(t, now)]
        gone = {tr.task_id for tr in expired}
        live = [t for t in chosen if t["id"] not in gone]
        starts = [lifecycle.start(t, now) for t in live]
        tx.apply(expired + starts)
        after = [_after(t, tr) for t, tr in zip(live, starts, strict=True)]
        run_ids = _start_runs(tx, after, w.name, now)
        ended = [_after(tasks[tr.task_id], tr) for tr in expired]
        return [Granted(t, r, True) for t, r in zip(after, run_ids, strict=True)], ended

    granted, ended = await rt.store.run(start)
    for row in ended:
        w.forget(row["id"])
    for g in granted:
        held = w.leases[g.task["id"]]
        held.started, held.granted = True, time.monotonic()
    _publish(rt, ended)
    _publish(rt, (g.task for g in granted))
    return granted


def _check_db(tasks: dict[int, Row], refs: Iterable[tuple[int, int]], worker_name: str,
              statuses: set[TaskStatus]) -> None:
    stale = [(t, a) for t, a in refs if (row := tasks.get(t)) is None or row["attempt"] != a
             or row["assigned_worker_name"] != worker_name or row["status"] not in statuses]
    if stale:
        raise StaleLeaseError(stale, "the task has moved on")


def _close_runs(tx: Tx, outcomes: Sequence[Outcome], now: dt.datetime,
                max_output_bytes: int) -> None:
    """Write the runs' ends: each record kept (with its folded output) or removed.

    Live chunks are read (and then dropped) only for runs that have some.
    """
    runs = tx.runs_by_ref([(o.task_id, o.attempt) for o in outcomes])
    chunked = [run_id for run_id, has in runs.values() if has]
    stored = tx.chunks(chunked) if chunked else {}
    updates = []
    for o in outcomes:
        found = runs.get((o.task_id, o.attempt))
        if found is None:
            continue  # discard_results: no run record
        run_id = found[0]
        text = output.cap(output.fold(stored.get(run_id, []) + list(o.output)),
                          max_output_bytes)
        close = lifecycle.close_run(o.status, now, o.result, o.traceback, text)
        if close.delete:
            tx.delete_run(run_id)
        else:
            updates.append((run_id, close.values))
    tx.update_runs(updates)
    if chunked:
        tx.delete_chunks(chunked)


async def report(rt: Runtime, w: LiveWorker, outcomes: Sequence[Outcome]) -> None:
    """Apply reported run outcomes, all or nothing (a stale one rejects the batch)."""
    refs = [(o.task_id, o.attempt) for o in outcomes]
    if len(set(refs)) != len(refs):
        raise InvalidRequestError("reports", "a lease is reported twice in one call")
    rt.registry.check_refs(w, refs, "report")
    limit = rt.config.max_result_bytes
    outcomes = [_result_limited(o, limit) for o in outcomes]
    await finish(rt, w, outcomes, reported=True)


def _result_limited(o: Outcome, limit: int) -> Outcome:
    """A success whose result is over the limit ends FAILED, saying so (never a silent cut)."""
    if o.result is None or len(o.result.encode()) <= limit:
        return o
    size = len(o.result.encode())
    return dataclasses.replace(
        o, status=RunStatus.FAILED, result=None,
        traceback=f"ResultTooLarge: the result is {size} bytes of JSON; the limit is {limit} "
                  "bytes (--max-result-bytes)")


async def finish(rt: Runtime, w: LiveWorker, outcomes: Sequence[Outcome],
                 reported: bool) -> list[Row]:
    """End runs with these outcomes through lifecycle.finish; returns the task rows after."""
    refs = [(o.task_id, o.attempt) for o in outcomes]

    def apply(tx: Tx) -> list[Row]:
        now = rt.clock.now()
        tasks = tx.tasks_by_ids([t for t, _ in refs], lock=True)
        _check_db(tasks, refs, w.name, {TaskStatus.RUNNING})
        trs = [lifecycle.finish(tasks[o.task_id], o.status, tasks[o.task_id]["last_run_time"],
                                now) for o in outcomes]
        tx.apply(trs)
        _close_runs(tx, outcomes, now, rt.config.max_output_bytes)
        tx.release_dependents([tr.task_id for tr in trs if tr.target is TaskStatus.COMPLETED])
        return [_after(tasks[tr.task_id], tr) for tr in trs]

    rows = await rt.store.run(apply)
    _settle(rt, w, rows, reported)
    return rows


def _settle(rt: Runtime, w: LiveWorker, rows: Sequence[Row], reported: bool = False) -> None:
    """Memory and signals after runs ended: forget leases, wake leasers, tell watchers."""
    for row in rows:
        w.forget(row["id"], reported)
        logger.debug("run ended task=%s status=%s worker=%s", row["id"], row["status"], w.name)
    requeued = [r for r in rows if r["status"] == TaskStatus.QUEUED]
    if requeued:
        rt.signal.fire(min(r["next_run_time"] for r in requeued))
        rt.timers.note(requeued)
    if any(r["status"] == TaskStatus.COMPLETED for r in rows):
        rt.signal.fire()  # dependents may have become due
    _publish(rt, rows)


async def lose(rt: Runtime, w: LiveWorker, reason: str, task_ids: Sequence[int] | None = None
               ) -> list[Row]:
    """Give back leases of a lost worker (all of them, or just `task_ids`).

    Started runs are closed FAILED with a traceback naming the worker; the task
    goes back to QUEUED with its counters untouched, or ends FAILED once it has
    lost too many workers (lifecycle.lose_worker).
    """
    whole = task_ids is None
    wanted = set(task_ids or ())
    held = {t: h.attempt for t, h in w.leases.items() if whole or t in wanted}
    now = rt.clock.now()
    text = f"WorkerLost: worker {w.name} {reason}"

    def apply(tx: Tx) -> list[Row]:
        tasks = tx.tasks_by_ids(held, lock=True)
        mine = [t for t in tasks.values() if t["attempt"] == held[t["id"]]
                and t["assigned_worker_name"] == w.name
                and t["status"] in lifecycle.LEASED_TASK_STATUSES]
        trs = [lifecycle.lose_worker(t, rt.config.max_lost_requeues) for t in mine]
        tx.apply(trs)
        _close_runs(tx, [Outcome(t["id"], t["attempt"], RunStatus.FAILED, None, text)
                         for t in mine if t["status"] == TaskStatus.RUNNING], now,
                    rt.config.max_output_bytes)
        if whole:
            tx.update_workers([(w.id, {"alive": False, "lost_at": now,
                                       "last_heartbeat": w.last_heartbeat})])
        return [_after(t, tr) for t, tr in zip(mine, trs, strict=True)]

    rows = await rt.store.run(apply)
    for t in held:
        w.forget(t)
    if whole:
        w.alive = False
        w.notify()
        rt.timers.note_lost_worker(now)
        logger.info("worker gone worker=%s reason=%s", w.name, reason)
    if rows:
        logger.warning("leases given back worker=%s reason=%s tasks=%s", w.name, reason,
                       ",".join(str(r["id"]) for r in rows))
    _settle(rt, w, rows)
    rt.signal.fire()
    return rows


async def release(rt: Runtime, w: LiveWorker, refs: Sequence[tuple[int, int]]) -> None:
    """Leases handed back unrun: QUEUED again at once, no counter moves, run records removed."""
    rt.registry.check_refs(w, refs, "release")

    def apply(tx: Tx) -> list[Row]:
        tasks = tx.tasks_by_ids([t for t, _ in refs], lock=True)
        _check_db(tasks, refs, w.name, set(lifecycle.LEASED_TASK_STATUSES))
        trs = [lifecycle.release(tasks[t]) for t, _ in refs]
        tx.apply(trs)
        for run_id, _ in tx.runs_by_ref(refs).values():
            tx.delete_run(run_id)
        return [_after(tasks[tr.task_id], tr) for tr in trs]

    rows = await rt.store.run(apply)
    logger.info("leases released worker=%s tasks=%s", w.name, ",".join(str(t) for t, _ in refs))
    _settle(rt, w, rows)
