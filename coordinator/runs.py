"""Ending runs: reported outcomes, the coordinator's timeout backstop, lost workers.

Every path that ends a run goes through `_close_runs`, and lifecycle.finish,
lifecycle.lose_worker or lifecycle.abandon decide what the task becomes: a
reported failure, a coordinator-side timeout and a lost worker all decide the
same way.

Batches are isolated: a batch is applied in one transaction; when that fails
for any reason but an outage, each item is applied alone, and an item that
still fails is ended FAILED with the reason recorded (lifecycle.abandon), so
one poisoned item never blocks the rest. What is read to decide comes from
the rows, locked in the same transaction: memory is only told afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from taskgrid import tracing
from taskgrid.coordinator import lifecycle, output
from taskgrid.coordinator.errors import InvalidRequestError, StoreUnavailableError
from taskgrid.coordinator.events import announce
from taskgrid.coordinator.lifecycle import RunStatus, TaskStatus, Transition
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

if TYPE_CHECKING:
    from taskgrid.coordinator.workers import LiveWorker

logger = logging.getLogger(__name__)

Ref = tuple[int, int]
T = TypeVar("T")
#: the output kept of a run whose outcome could not be applied
ABANDONED_OUTPUT = "[taskgrid: output not kept: the run's outcome could not be applied]\n"
#: a transaction body that returns the task rows after, and the stale refs
Apply = Callable[[Tx], tuple[list[Row], list[Ref]]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A run's end as reported by a worker (or decided by the coordinator)."""

    task_id: int
    attempt: int
    status: RunStatus
    result: str | None = None
    traceback: str = ""
    output: tuple[dict[str, Any], ...] = ()

    @property
    def ref(self) -> Ref:
        """The lease this outcome is about."""
        return (self.task_id, self.attempt)


def no_repeats(refs: Sequence[Ref], field: str) -> None:
    """Raise InvalidRequestError when a call names one lease twice."""
    if len(set(refs)) != len(refs):
        raise InvalidRequestError(field, "a lease is listed twice in one call")


def after(task: Row, tr: Transition) -> Row:
    """The task row as the transition leaves it."""
    return {**task, **tr.values, "status": tr.target.value}


def is_current(task: Row | None, attempt: int, worker_name: str,
               statuses: Iterable[TaskStatus]) -> bool:
    """True when the row still holds this worker's lease at this attempt."""
    return (task is not None and task["attempt"] == attempt
            and task["assigned_worker_name"] == worker_name and task["status"] in statuses)


def publish(rt: Runtime, rows: Iterable[Row]) -> None:
    """Tell WatchTask streams about task rows that changed."""
    for row in rows:
        if rt.feed.is_watched(row["id"]):
            rt.feed.publish(row["id"], row)


def _close_runs(tx: Tx, outcomes: Sequence[Outcome], now: dt.datetime,
                max_output_bytes: int) -> None:
    """Write the runs' ends: each record kept (with its folded output) or removed.

    Live chunks are read (and then dropped) only for runs that have some.
    """
    if not outcomes:
        return
    runs = tx.runs_by_ref([o.ref for o in outcomes])
    chunked = [run_id for run_id, has in runs.values() if has]
    stored = tx.chunks(chunked) if chunked else {}
    updates, deleted = [], []
    for o in outcomes:
        found = runs.get(o.ref)
        if found is None:
            continue  # discard_results: no run record
        run_id = found[0]
        text = output.cap(output.fold(stored.get(run_id, []) + list(o.output)),
                          max_output_bytes)
        close = lifecycle.close_run(o.status, now, o.result, o.traceback, text)
        if close.delete:
            deleted.append(run_id)
        else:
            updates.append((run_id, close.values))
    tx.update_runs(updates)
    if deleted:
        tx.delete_runs(deleted)  # their chunks with them
    gone = set(deleted)
    kept_chunked = [run_id for run_id in chunked if run_id not in gone]
    if kept_chunked:
        tx.delete_chunks(kept_chunked)


def _decide_finish(task: Row, o: Outcome, now: dt.datetime) -> tuple[Transition, Outcome]:
    """lifecycle.finish, or lifecycle.abandon when the decision itself fails."""
    try:
        return lifecycle.finish(task, o.status, task["last_run_time"], now), o
    except Exception as exc:  # a decision bug must not block the batch
        reason = f"CoordinatorError: the outcome {o.status} could not be applied: {exc!r}"
        logger.error("outcome abandoned task=%s attempt=%s error=%r", o.task_id, o.attempt, exc)
        return lifecycle.abandon(task, reason), dataclasses.replace(
            o, status=RunStatus.FAILED, result=None,
            traceback=(o.traceback + "\n" if o.traceback else "") + reason)


def _finish_tx(rt: Runtime, worker_name: str, outcomes: Sequence[Outcome]
               ) -> Apply:
    def apply(tx: Tx) -> tuple[list[Row], list[Ref]]:
        now = rt.clock.now()
        tasks = tx.tasks_by_ids([o.task_id for o in outcomes], lock=True)
        fresh, stale = [], []
        for o in outcomes:
            task = tasks.get(o.task_id)
            if is_current(task, o.attempt, worker_name, (TaskStatus.RUNNING,)):
                fresh.append(o)
            else:
                stale.append(o.ref)
        decided = [_decide_finish(tasks[o.task_id], o, now) for o in fresh]
        trs = [tr for tr, _ in decided]
        tx.apply(trs)
        _close_runs(tx, [o for _, o in decided], now, rt.config.max_output_bytes)
        done = [tr.task_id for tr in trs if tr.target is TaskStatus.COMPLETED]
        if done and rt.deps_possible:
            tx.release_dependents(done)
        return [after(tasks[tr.task_id], tr) for tr in trs], stale
    return apply


def _abandon_tx(rt: Runtime, worker_name: str, o: Outcome, error: BaseException
                ) -> Apply:
    def apply(tx: Tx) -> tuple[list[Row], list[Ref]]:
        now = rt.clock.now()
        task = tx.tasks_by_ids([o.task_id], lock=True).get(o.task_id)
        if not is_current(task, o.attempt, worker_name, (TaskStatus.RUNNING,)):
            return [], [o.ref]
        assert task is not None
        reason = f"CoordinatorError: the outcome {o.status} could not be applied: {error!r}"
        tr = lifecycle.abandon(task, reason)
        tx.apply([tr])
        # No folding here: whatever failed may lie in the output itself. Its chunks go.
        found = tx.runs_by_ref([o.ref]).get(o.ref)
        if found is not None:
            close = lifecycle.close_run(RunStatus.FAILED, now, None, reason,
                                        ABANDONED_OUTPUT, discard_empty=False)
            tx.update_runs([(found[0], close.values)])
            tx.delete_chunks([found[0]])
        return [after(task, tr)], []
    return apply


async def isolated(rt: Runtime, items: Sequence[T],
                   batch: Callable[[Sequence[T]], Apply],
                   last_resort: Callable[[T, BaseException], Apply] | None,
                   what: str) -> tuple[list[Row], list[Ref], list[T]]:
    """Apply `items` as one transaction, or one by one when that fails.

    Returns (rows after, stale refs, items that could not be applied at all).
    An outage (StoreUnavailableError) is raised at once: retrying item by item
    would only fail the same way.
    """
    try:
        rows, stale = await rt.store.run(batch(items))
        return rows, stale, []
    except StoreUnavailableError:
        raise
    except Exception as exc:
        if len(items) == 1 and last_resort is None:
            logger.error("%s failed items=1 error=%r", what, exc)
            return [], [], list(items)
        logger.warning("%s batch failed; applying its %d items one by one error=%r", what,
                       len(items), exc)
    rows, stale, failed = [], [], []
    for item in items:
        try:
            got, gone = await rt.store.run(batch([item]))
        except StoreUnavailableError:
            raise
        except Exception as exc:
            if last_resort is None:
                logger.error("%s item failed item=%r error=%r", what, item, exc)
                failed.append(item)
                continue
            try:
                got, gone = await rt.store.run(last_resort(item, exc))
            except StoreUnavailableError:
                raise
            except Exception as again:
                logger.error("%s item failed twice item=%r error=%r", what, item, again)
                failed.append(item)
                continue
        rows += got
        stale += gone
    return rows, stale, failed


async def report(rt: Runtime, w: LiveWorker, outcomes: Sequence[Outcome]) -> list[Ref]:
    """Apply reported run outcomes; returns the stale leases (the rest applied).

    A report sent again after its first reply was lost is stale: it was applied
    once, and the worker drops it.
    """
    refs = [o.ref for o in outcomes]
    no_repeats(refs, "reports")
    stale = set(rt.leases.stale(w.id, refs, w.heartbeat_s))
    limit = rt.config.max_result_bytes
    fresh = [_result_checked(o, limit) for o in outcomes if o.ref not in stale]
    if fresh:
        _, gone = await asyncio.shield(finish(rt, w, fresh, reported=True))
        stale.update(gone)
    if rt.metrics is not None and stale:
        rt.metrics.stale_reports.inc(len(stale))
    return sorted(stale)


def _result_checked(o: Outcome, limit: int) -> Outcome:
    """A success whose result is over the limit, or not JSON, ends FAILED saying so.

    Never a silent cut, and never a stored result that clients cannot decode.
    """
    if o.result is None:
        return o
    size = len(o.result.encode())
    if size > limit:
        why = (f"ResultTooLarge: the result is {size} bytes of JSON; the limit is {limit} "
               "bytes (--max-result-bytes)")
    elif (problem := _json_problem(o.result)) is not None:
        why = f"ResultNotJSON: the worker reported a result that is not JSON ({problem})"
    else:
        return o
    return dataclasses.replace(o, status=RunStatus.FAILED, result=None, traceback=why)


def _json_problem(text: str) -> str | None:
    """Why `text` is not strict JSON (NaN and Infinity are not JSON), or None."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    try:
        json.loads(text, parse_constant=refuse)
    except RecursionError:
        return "nested too deeply"
    except ValueError as exc:
        return str(exc)[:200]
    return None


async def finish(rt: Runtime, w: LiveWorker, outcomes: Sequence[Outcome],
                 reported: bool) -> tuple[list[Row], list[Ref]]:
    """End runs with these outcomes; returns (task rows after, stale refs)."""
    rows, stale, _failed = await isolated(
        rt, outcomes, lambda items: _finish_tx(rt, w.name, items),
        lambda item, exc: _abandon_tx(rt, w.name, item, exc), "report")
    settle(rt, rows, reported)
    rt.leases.end_many(t for t, _ in stale)
    if rt.metrics is not None:
        rt.metrics.ended(rows, {o.task_id: o.status.value for o in outcomes}, rt.clock.now())
    if tracing.enabled():
        for row in rows:
            tracing.record("taskgrid.report", row.get("trace_context"),
                           {"taskgrid.task_id": row["id"], "taskgrid.status": row["status"]})
    return rows, stale


def settle(rt: Runtime, rows: Sequence[Row], reported: bool = False) -> None:
    """Memory and signals after runs ended: end leases, wake leasers, tell watchers."""
    for row in rows:
        rt.leases.end(row["id"], reported)
        logger.debug("run ended task=%s status=%s", row["id"], row["status"])
    requeued = [r for r in rows if r["status"] == TaskStatus.QUEUED]
    if requeued:
        announce(rt.signal, requeued, rt.clock.now())
        rt.timers.note(requeued)
    if rt.deps_possible and any(r["status"] == TaskStatus.COMPLETED for r in rows):
        rt.signal.fire()  # dependents may have become due (else no one needs waking)
    publish(rt, rows)


# -- the coordinator's own endings ---------------------------------------------


async def time_out(rt: Runtime, overdue: Sequence[Row]) -> list[Row]:
    """Close RUNNING runs past timeout plus grace with no report (the backstop).

    `overdue` are lease rows (id, attempt, assigned_worker_name, timeout); each
    worker's batch is isolated from the others'.
    """
    by_worker: dict[str, list[Outcome]] = {}
    for row in overdue:
        limit = row["timeout"] + rt.config.timeout_grace_s
        by_worker.setdefault(row["assigned_worker_name"], []).append(Outcome(
            row["id"], row["attempt"], RunStatus.TIMEOUT, None,
            f"TimeoutError: no report from worker {row['assigned_worker_name']} within "
            f"{limit:.0f} s (timeout plus grace)"))
    ended: list[Row] = []
    for name, outcomes in by_worker.items():
        logger.warning("runs closed TIMEOUT by the coordinator worker=%s tasks=%s", name,
                       ",".join(str(o.task_id) for o in outcomes))
        rows, stale, _failed = await isolated(
            rt, outcomes, functools.partial(_finish_tx, rt, name),
            functools.partial(_abandon_tx, rt, name), "timeout backstop")
        rt.leases.end_many(t for t, _ in stale)
        settle(rt, rows)
        if rt.metrics is not None:
            rt.metrics.ended(rows, {o.task_id: o.status.value for o in outcomes},
                             rt.clock.now())
        ended += rows
    return ended


def _lose_tx(rt: Runtime, name: str, refs: Sequence[Ref] | None, reason: str,
             mark_dead: int | None, now: dt.datetime,
             silent_since: dt.datetime | None = None) -> Apply:
    """Give back leases of `name` (every one it holds, when refs is None) as a lost worker's.

    With `mark_dead` (a worker id) the worker row is marked dead in the same
    transaction, and its QUEUED broadcast children end EXPIRED.
    """
    text = f"WorkerLost: worker {name} {reason}"

    def apply(tx: Tx) -> tuple[list[Row], list[Ref]]:
        if mark_dead is not None and silent_since is not None and not tx.mark_worker_dead(
                mark_dead, now, silent_since):
            return [], []  # heard from since it was judged: not dead
        if refs is None:
            mine = tx.leased_by(name)
        else:
            tasks = tx.tasks_by_ids([t for t, _ in refs], lock=True)
            mine = [tasks[t] for t, a in refs
                    if is_current(tasks.get(t), a, name, lifecycle.LEASED_TASK_STATUSES)]
        trs = [lifecycle.lose_worker(t, rt.config.max_lost_requeues) for t in mine]
        children: list[Row] = []
        if mark_dead is not None:
            children = tx.queued_children_of(name)
            trs += [lifecycle.orphan_child(c) for c in children]
        tx.apply(trs)
        _close_runs(tx, [Outcome(t["id"], t["attempt"], RunStatus.FAILED, None, text)
                         for t in mine if t["status"] == TaskStatus.RUNNING], now,
                    rt.config.max_output_bytes)
        if mark_dead is not None and silent_since is None:
            tx.mark_worker_dead(mark_dead, now)
        return [after(t, tr) for t, tr in zip([*mine, *children], trs, strict=True)], []
    return apply


async def lose(rt: Runtime, name: str, reason: str, refs: Sequence[Ref] | None = None,
               mark_dead: int | None = None, now: dt.datetime | None = None,
               silent_since: dt.datetime | None = None) -> list[Row]:
    """Give back leases of a lost worker, read from the rows (all, or just `refs`).

    Started runs are closed FAILED with a traceback naming the worker; the task
    goes back to QUEUED with its counters untouched, or ends FAILED once it has
    lost too many workers in a row (lifecycle.lose_worker). `now` is the worker row's
    lost_at when `mark_dead` is given. With `silent_since` (a judgment from the rows),
    nothing is done unless the worker's row still has that last heartbeat.
    """
    now = rt.clock.now() if now is None else now
    try:
        rows, _ = await rt.store.run(_lose_tx(rt, name, refs, reason, mark_dead, now,
                                              silent_since))
    except StoreUnavailableError:
        raise
    except Exception as exc:
        # One poisoned row must not keep the rest: give back lease by lease.
        logger.warning("giving back the leases of worker %s one by one error=%r", name, exc)
        leased = refs if refs is not None else await rt.store.run(
            lambda tx: [(t["id"], t["attempt"]) for t in tx.leased_by(name)])
        rows, _, bad = await isolated(
            rt, list(leased), lambda items: _lose_tx(rt, name, items, reason, None, now), None,
            f"lose worker {name}")
        if mark_dead is not None:
            await rt.store.run(lambda tx: tx.mark_worker_dead(mark_dead, now, silent_since))
        if bad:
            logger.error("leases not given back worker=%s tasks=%s", name,
                         ",".join(str(t) for t, _ in bad))
    if rows:
        logger.warning("leases given back worker=%s reason=%s tasks=%s", name, reason,
                       ",".join(str(r["id"]) for r in rows))
        if rt.metrics is not None:
            rt.metrics.ended(rows, {}, now)
    settle(rt, rows)
    rt.signal.fire()
    return rows
