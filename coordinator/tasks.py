"""Client operations on tasks: queue (one or many), read, list, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from taskgrid.coordinator import lifecycle, output
from taskgrid.coordinator.errors import (
    DuplicateUuidError,
    TaskNotFoundError,
    TransitionConflictError,
)
from taskgrid.coordinator.events import announce
from taskgrid.coordinator.lifecycle import TaskStatus, WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx
from taskgrid.coordinator.validation import validate_task

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_QUEUE_BATCH = 10_000


@dataclasses.dataclass(frozen=True)
class Queued:
    """The answer for one queued task: id and uuid, or errors (and nothing written)."""

    id: int = 0
    uuid: str = ""
    errors: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TaskView:
    """A task with its runs and, when it waits, why."""

    task: Row
    runs: list[Row]
    waiting_reason: str
    waiting_for: list[int] = dataclasses.field(default_factory=list)


Ref = tuple[int | None, str | None]


def validated(rt: Runtime, specs: Sequence[tuple[Mapping[str, Any], Mapping[str, str]]]
              ) -> tuple[list[dict[str, Any]] | None, list[Queued]]:
    """Check every task of a request: (rows, answers) or (None, answers with errors)."""
    now = rt.clock.now()
    limit = rt.config.max_args_bytes
    checked = [validate_task(fields, found, now, limit) for fields, found in specs]
    errors = [dict(errs) for _, errs in checked]
    rows = [row for row, _ in checked]
    counts = Counter(r["uuid"] for r in rows if r is not None)
    for i, row in enumerate(rows):
        if row is not None and counts[row["uuid"]] > 1:
            errors[i]["uuid"] = "duplicate uuid in this batch"
    answers = [Queued(errors=e) for e in errors]
    if any(errors):
        return None, answers
    return [r for r in rows if r is not None], answers


async def queue(rt: Runtime, specs: Sequence[tuple[Mapping[str, Any], Mapping[str, str]]],
                source: str = "", trace: str | None = None) -> list[Queued]:
    """Validate and insert tasks in one transaction: all are queued, or none.

    Args:
        rt: the coordinator runtime.
        specs: per task, (typed fields the client set, field errors found reading them).
        source: the caller's connection (its gRPC peer), to tell producers apart.
        trace: the traceparent of the queueing call's span, kept with each task.
    """
    ready, answers = validated(rt, specs)
    if ready is None:
        return answers
    if trace:
        for row in ready:
            row["trace_context"] = trace

    result: list[int] | set[str] = set()
    linger = rt.producers.arrive(source)  # in a crowd of producers: share their commit
    for _ in range(2):
        try:  # the unique index is the check: no SELECT on the usual path
            with rt.producers.waiting():
                result = await rt.store.run(lambda tx: tx.insert_tasks(ready), linger)
            break
        except DuplicateUuidError:
            # Say which uuids are taken (nothing was written); none means the clashing
            # insert rolled back meanwhile: try once more.
            result = await rt.store.run(lambda tx: tx.existing_uuids(r["uuid"] for r in ready))
            if result:
                break
    if not result:
        raise TransitionConflictError("a concurrent call kept taking and releasing a uuid of "
                                      "this request; try again")
    if isinstance(result, set):
        return [Queued(errors={"uuid": "already in use"} if r["uuid"] in result else {})
                for r in ready]
    announce(rt.signal, ready, rt.clock.now())
    rt.timers.note(ready)
    logger.debug("queued tasks=%d", len(ready))
    return [Queued(id=i, uuid=r["uuid"]) for i, r in zip(result, ready, strict=True)]


def _live_output(tx: Tx, runs: list[Row]) -> None:
    """Fill run_output of RUNNING runs from their live chunks."""
    running = [r for r in runs if r["status"] == lifecycle.RunStatus.RUNNING]
    if running:
        chunks = tx.chunks(r["id"] for r in running)
        for r in running:
            r["run_output"] = output.fold(chunks[r["id"]])


async def get(rt: Runtime, ref: Ref, all_runs: bool) -> TaskView:
    """One task with its latest run (or all runs), live output included."""
    def read(tx: Tx) -> tuple[Row | None, list[Row], list[int]]:
        task = tx.task_by_ref(*ref)
        if task is None:
            return None, [], []
        runs = tx.runs_of(task["id"], latest_only=not all_runs)
        _live_output(tx, runs)
        waits = tx.unmet_prerequisites(task["id"]) if task["status"] == TaskStatus.QUEUED else []
        return task, runs, waits

    task, runs, waits = await rt.store.run(read)
    if task is None:
        raise TaskNotFoundError(f"no task with {_ref_text(ref)}")
    reason = waiting_reason(rt, task)
    if waits:
        listed = ", ".join(str(t) for t in waits)
        reason = f"waiting for task(s) {listed} to complete"
    return TaskView(task, runs, reason, waits)


def _ref_text(ref: Ref) -> str:
    return f"id {ref[0]}" if ref[0] is not None else f"uuid {ref[1]!r}"


def waiting_reason(rt: Runtime, task: Row) -> str:
    """Why a QUEUED or ASSIGNED task is not running, from what the coordinator knows now."""
    status = task["status"]
    if status == TaskStatus.ASSIGNED:
        return f"leased to worker {task['assigned_worker_name']}, not started yet"
    if status != TaskStatus.QUEUED:
        return ""
    if not task["enabled"]:
        return "disabled (enabled=false)"
    if task["broadcast"]:
        return "a broadcast task: the coordinator queues one child per worker when it is due"
    now = rt.clock.now()
    if task["next_run_time"] > now:
        return f"not due until {task['next_run_time'].isoformat()}"
    group, function = task["group_name"], task["function_name"]
    live = [w for w in rt.registry.by_id.values() if w.alive and group in w.group_names]
    if not live:
        return f"no live worker serves group {group!r}"
    active = [w for w in live if w.status is WorkerStatus.ACTIVE]
    if not active:
        return f"no ACTIVE worker in group {group!r} (all disabled or stopping)"
    if not any(function in w.functions for w in active):
        return f"no live ACTIVE worker of group {group!r} offers function {function!r}"
    return "due; waiting for a free worker slot"


async def list_tasks(rt: Runtime, statuses: Sequence[str], filters: Mapping[str, str],
                     page_size: int, page_token: str, created: tuple[Any, Any] = (None, None),
                     oldest_first: bool = False) -> tuple[list[Row], str]:
    """A page of tasks, newest (or oldest) first, and the next page's token ('' at the end)."""
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    before = int(page_token) if page_token else None
    rows = await rt.store.run(lambda tx: tx.list_tasks(statuses, filters, before, limit + 1,
                                                       created, oldest_first))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(rows[-1]["id"]) if more else ""


async def stop(rt: Runtime, ref: Ref) -> tuple[bool, TaskStatus, str]:
    """Stop a task: QUEUED/ASSIGNED at once, RUNNING through its worker (contract §2.1).

    Returns (stopped or stop sent, status after, message).
    """
    now = rt.clock.now()

    def apply(tx: Tx) -> tuple[Row | None, str]:
        task = tx.task_by_ref(*ref, lock=True)
        if task is None:
            return None, ""
        status = task["status"]
        if status in (TaskStatus.QUEUED, TaskStatus.ASSIGNED):
            tr = lifecycle.stop_waiting(task, now)
            tx.apply([tr])
            return {**task, **tr.values, "status": tr.target.value}, "stopped"
        if status == TaskStatus.RUNNING:
            tx.set_stop_requested(task["id"], task["attempt"])
            return task, "stop sent to worker"
        return task, f"already {status}; nothing to stop"

    task, what = await asyncio.shield(rt.store.run(apply))
    if task is None:
        raise TaskNotFoundError(f"no task with {_ref_text(ref)}")
    owner = rt.registry.by_name(task["assigned_worker_name"])
    if what == "stopped":
        rt.leases.end(task["id"])
    elif what == "stop sent to worker" and rt.leases.request_stop(task["id"], task["attempt"]):
        if owner is not None:
            owner.notify()
    if what == "stopped" and rt.feed.is_watched(task["id"]):
        rt.feed.publish(task["id"], task)
    logger.info("stop task=%s result=%s", task["id"], what)
    return not what.startswith("already"), TaskStatus(task["status"]), what
