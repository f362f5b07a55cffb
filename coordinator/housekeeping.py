"""Housekeeping on tasks: requeue, enable/disable, edit, delete, and the purge by age.

Every change is a named transition of the lifecycle module (requeue, set_enabled,
edit, may_delete), applied as a compare-and-set like any other. A call selects
tasks by reference (each must be in a status the call applies to, else
FailedPreconditionError and nothing changes) or by filter (tasks in other
statuses are skipped). A filter call works in batches of BATCH tasks, one
transaction each, so a bulk call never holds the database for long; it is not
atomic as a whole, and says how many tasks it changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from taskgrid.coordinator import lifecycle, validation
from taskgrid.coordinator.errors import (
    FailedPreconditionError,
    InvalidRequestError,
    TaskNotFoundError,
)
from taskgrid.coordinator.events import announce
from taskgrid.coordinator.lifecycle import TERMINAL_TASK_STATUSES, TaskStatus, Transition
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx

logger = logging.getLogger(__name__)

#: tasks per transaction of a filter call or of the purge
BATCH = 500
#: ids a response lists at most (the count is always exact)
MAX_IDS = 1000
#: tasks one call may name by reference (all of them in one transaction)
MAX_REFS = 1000

Ref = int | str  # an id or a uuid


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which tasks a call touches: `refs`, or every task matching all the filters."""

    refs: tuple[Ref, ...] = ()
    statuses: tuple[str, ...] = ()
    filters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    finished_before: dt.datetime | None = None
    all: bool = False

    @property
    def by_filter(self) -> bool:
        """True when tasks are chosen by filter (the admin role's bulk operations)."""
        return not self.refs

    def check(self) -> None:
        """A filter call must set a filter or say `all` (no accidental 'everything')."""
        if self.refs and (self.statuses or any(self.filters.values())
                          or self.finished_before is not None or self.all):
            raise InvalidRequestError("select", "give refs or filters, not both")
        if not self.refs and not self.all and not self.statuses and not any(
                self.filters.values()) and self.finished_before is None:
            raise InvalidRequestError("select", "give task refs, a filter, or all=true")


@dataclasses.dataclass(frozen=True)
class Changed:
    """What a housekeeping call did."""

    count: int
    task_ids: list[int]


Decide = Callable[[Row], Transition]


async def _change(rt: Runtime, sel: Selector, allowed: frozenset[TaskStatus], what: str,
                  decide: Decide | None, after: Callable[[list[Row]], None]) -> Changed:
    """Apply `decide` (or delete, when None) to the selected tasks in `allowed` statuses."""
    sel.check()
    statuses = sorted(s.value for s in allowed if not sel.statuses or s.value in sel.statuses)

    def body(after_id: int) -> Callable[[Tx], tuple[list[Row], int]]:
        def run(tx: Tx) -> tuple[list[Row], int]:
            rows = tx.select_tasks(sel.refs, statuses, sel.filters, sel.finished_before,
                                   len(sel.refs) or BATCH, after_id)
            if sel.refs:
                _check_refs(sel.refs, rows, allowed, what)
            else:
                rows = [r for r in rows if TaskStatus(r["status"]) in allowed]
            if decide is None:
                tx.delete_tasks([r["id"] for r in rows])
                if tx.notes is not None:
                    tx.notes.changed(r["id"] for r in rows)
                return rows, len(rows)
            trs = [decide(r) for r in rows]
            tx.apply(trs)
            if tx.notes is not None and any(tr.values.get("stop_time") for tr in trs):
                tx.notes.timers = True
            return [{**r, **tr.values, "status": tr.target.value}
                    for r, tr in zip(rows, trs, strict=True)], len(rows)
        return run

    changed: list[Row] = []
    count, after_id = 0, 0
    while True:
        rows, seen = await rt.store.run(body(after_id))
        count += len(rows)
        changed += rows[:max(0, MAX_IDS - len(changed))]
        after(rows)
        if sel.refs or seen < BATCH:
            break
        after_id = rows[-1]["id"]
    if count:
        logger.info("%s tasks count=%d by_filter=%s", what, count, sel.by_filter)
    return Changed(count, [r["id"] for r in changed])


def _check_refs(refs: Sequence[Ref], rows: list[Row], allowed: frozenset[TaskStatus],
                what: str) -> None:
    found = {r["id"] for r in rows} | {r["uuid"] for r in rows}
    missing = [str(r) for r in refs if r not in found]
    if missing:
        raise TaskNotFoundError(f"no task with id or uuid {', '.join(missing)}")
    wrong = [r for r in rows if TaskStatus(r["status"]) not in allowed]
    if wrong:
        names = ", ".join(sorted(s.value for s in allowed))
        listed = ", ".join(f"{r['id']} is {r['status']}" for r in wrong[:10])
        raise FailedPreconditionError(f"cannot {what} task(s): {listed}; only {names} tasks")


def _tell(rt: Runtime, rows: Iterable[Row], work: bool) -> None:
    """After a commit: wake Lease calls and timers for the new state, and the watchers."""
    rows = list(rows)
    if not rows:
        return
    if work:
        announce(rt.signal, rows, rt.clock.now())
        rt.timers.note(rows)
    for row in rows:
        if rt.feed.is_watched(row["id"]):
            rt.feed.publish(row["id"], row)


async def requeue(rt: Runtime, sel: Selector, keep_counters: bool) -> Changed:
    """Queue finished tasks again, due now."""
    now = rt.clock.now()
    return await _change(rt, sel, TERMINAL_TASK_STATUSES, "requeue",
                         lambda r: lifecycle.requeue(r, now, keep_counters),
                         lambda rows: _tell(rt, rows, work=True))


async def set_enabled(rt: Runtime, sel: Selector, enabled: bool) -> Changed:
    """Enable or disable QUEUED tasks."""
    return await _change(rt, sel, frozenset({TaskStatus.QUEUED}),
                         "enable" if enabled else "disable",
                         lambda r: lifecycle.set_enabled(r, enabled),
                         lambda rows: _tell(rt, rows, work=enabled))


async def delete(rt: Runtime, sel: Selector) -> Changed:
    """Delete finished tasks with their runs, output and dependency edges."""
    def gone(rows: list[Row]) -> None:
        for row in rows:
            if rt.feed.is_watched(row["id"]):
                rt.feed.publish(row["id"], {"recheck": True})  # the watch ends: NOT_FOUND
    deletable = frozenset(s for s in TaskStatus if lifecycle.is_legal(s, lifecycle.Event.DELETE))
    return await _change(rt, sel, deletable, "delete", None, gone)


@dataclasses.dataclass(frozen=True)
class Edited:
    """UpdateTask's answer: the task after the call, or field errors (nothing changed)."""

    task: Row | None
    errors: dict[str, str]


#: fields a task row carries into the re-validation of an edit (besides the edited ones)
_CONTEXT = ("function_name", "cronline", "broadcast", "start_time", "period", "prevent_drift",
            "repeats", "retry_failed", "timeout", "priority", "stop_time", "retry_delay",
            "retry_backoff", "retry_delay_max", "retry_jitter")
#: field -> the row's value meaning "unset", which validate_task must not be given
_UNSET = {"stop_time": None, "retry_delay": 0.0, "retry_delay_max": 0.0, "cronline": None}


async def edit(rt: Runtime, ref: Ref, values: Mapping[str, Any]) -> Edited:
    """Change editable fields of one QUEUED task, validated as at queue time.

    `values` maps each field named in the update mask to its new value, None
    meaning its default. The whole task is validated again with the new values,
    so a combination that queue_task refuses (retry_delay_max below retry_delay,
    prevent_drift with no period) is refused here too.
    """
    wrong = sorted(set(values) - lifecycle.EDITABLE_FIELDS)
    if wrong:
        raise InvalidRequestError("update_mask", f"not editable: {', '.join(wrong)} (editable: "
                                  f"{', '.join(sorted(lifecycle.EDITABLE_FIELDS))})")
    if not values:
        raise InvalidRequestError("update_mask", "name at least one field to change")
    now = rt.clock.now()

    def apply(tx: Tx) -> tuple[Row | None, dict[str, str]]:
        found = tx.select_tasks([ref], [], {}, None, 1)
        task = found[0] if found else None
        if task is None:
            raise TaskNotFoundError(f"no task with id or uuid {ref}")
        if task["status"] != TaskStatus.QUEUED:
            raise FailedPreconditionError(
                f"cannot edit task {task['id']}: it is {task['status']}; only QUEUED tasks")
        fields = {k: task[k] for k in _CONTEXT if task[k] != _UNSET.get(k, object())}
        if task["command"]:
            fields["command"] = json.loads(task["command"])
        for key, value in values.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        row, errors = validation.validate_task(fields, {}, now)
        if row is None:
            return None, errors
        new = {k: row[k] for k in values}
        tr = lifecycle.edit(task, new, first_run=row["next_run_time"])
        tx.apply([tr])
        if tx.notes is not None and new.get("stop_time"):
            tx.notes.timers = True
        return {**task, **tr.values, "status": tr.target.value}, {}

    task, errors = await rt.store.run(apply)
    if task is not None:
        _tell(rt, [task], work=True)
    return Edited(task, errors)


async def purge(rt: Runtime, cutoff: dt.datetime) -> tuple[int, dt.datetime | None]:
    """Delete tasks that ended before `cutoff`, BATCH per transaction (the maintenance loop).

    Returns how many went, and when the oldest task left ended (read by the last batch).
    """
    total = 0
    while True:
        def batch(tx: Tx) -> tuple[int, Any]:
            ids = tx.finished_before(cutoff, BATCH)
            tx.delete_tasks(ids)
            return len(ids), tx.earliest_finished() if len(ids) < BATCH else None
        n, oldest = await rt.store.run(batch)
        total += n
        if n < BATCH:
            break
    if total:
        logger.info("finished tasks purged count=%d before=%s", total, cutoff.isoformat())
    return total, oldest
