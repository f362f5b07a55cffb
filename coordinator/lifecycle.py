"""The task, run and worker state machines: the only place that decides a status.

Everything here is pure: functions take a task snapshot and `now` and return a
`Transition` (what to write, guarded by the status it expects), never touching
the database. `store.py` applies a Transition as one compare-and-set; if the row
moved meanwhile, nothing is written and the caller learns of the conflict.

The tables below are data: `docs/state-machine.md` is rendered from them
(`python -m taskgrid.coordinator.lifecycle --markdown`) and a unit test fails
when the two differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
import sys
from collections.abc import Callable, Mapping
from typing import Any

from taskgrid.coordinator import timing


class TaskStatus(enum.StrEnum):
    """Status of a task; the value is what the database stores."""

    QUEUED = "QUEUED"  # in: queue, retry, repeat, lost worker; out: lease, stop, expire
    ASSIGNED = "ASSIGNED"  # in: lease with prefetch; out: start, stop, expire, lost worker
    RUNNING = "RUNNING"  # in: start; out: report (complete/fail/time_out/stop), lost worker
    COMPLETED = "COMPLETED"  # terminal: the last wanted run succeeded
    FAILED = "FAILED"  # terminal: failure with no retry left, or too many lost workers
    TIMEOUT = "TIMEOUT"  # terminal: timed out with no retry left
    STOPPED = "STOPPED"  # terminal: stop_task
    EXPIRED = "EXPIRED"  # terminal: past stop_time


TERMINAL_TASK_STATUSES = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.TIMEOUT,
        TaskStatus.STOPPED,
        TaskStatus.EXPIRED,
    }
)
#: Statuses in which a worker holds a lease on the task.
LEASED_TASK_STATUSES = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})


class RunStatus(enum.StrEnum):
    """Status of one run record (one attempt)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    STOPPED = "STOPPED"


class WorkerStatus(enum.StrEnum):
    """Status of a worker: set by admins, obeyed by the worker."""

    ACTIVE = "ACTIVE"  # leases work (default at registration, or resume)
    DISABLED = "DISABLED"  # heartbeats but leases nothing (disable)
    TERMINATE = "TERMINATE"  # finishes running tasks, leases nothing, exits (terminate)
    KILL = "KILL"  # stops running tasks now and exits (kill)


class Event(enum.StrEnum):
    """What happened to a task."""

    LEASE = "lease"
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    TIME_OUT = "time_out"
    STOP = "stop"
    EXPIRE = "expire"
    LOSE_WORKER = "lose_worker"
    FAN_OUT = "fan_out"
    RELEASE = "release"
    ABANDON = "abandon"
    REQUEUE = "requeue"
    ENABLE = "enable"
    DISABLE = "disable"
    EDIT = "edit"
    DELETE = "delete"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One edge family of the task machine: (from, event) -> allowed targets."""

    source: TaskStatus
    event: Event
    targets: frozenset[TaskStatus]
    trigger: str
    effects: str


def _rule(
    source: TaskStatus, event: Event, targets: set[TaskStatus], trigger: str, effects: str
) -> Rule:
    return Rule(source, event, frozenset(targets), trigger, effects)


_T = TaskStatus
TASK_RULES: tuple[Rule, ...] = (
    _rule(_T.QUEUED, Event.LEASE, {_T.ASSIGNED}, "Lease by an ACTIVE worker of the group that "
          "offers the function; task due, enabled", "attempt+1, assigned_worker_name"),
    _rule(_T.ASSIGNED, Event.START, {_T.RUNNING}, "Lease without prefetch (same transaction), "
          "or StartRuns", "last_run_time=now; run record RUNNING inserted"),
    _rule(_T.RUNNING, Event.COMPLETE, {_T.COMPLETED, _T.QUEUED, _T.EXPIRED}, "Report COMPLETED",
          "times_run+1, times_failed=0, lost_count=0, next_run_time = the next run counted "
          "from the run's start (always); QUEUED if more repeats are wanted, EXPIRED if that "
          "next run falls after stop_time"),
    _rule(_T.RUNNING, Event.FAIL, {_T.FAILED, _T.QUEUED, _T.STOPPED}, "Report FAILED",
          "times_failed+1, lost_count=0, next_run_time = the next run counted from the run's "
          "start (a retry under retry_delay: its delay); QUEUED while retry_failed allows "
          "(-1 = always); STOPPED instead when a stop was pending"),
    _rule(_T.RUNNING, Event.TIME_OUT, {_T.TIMEOUT, _T.QUEUED, _T.STOPPED}, "Report TIMEOUT, or "
          "no report by timeout plus grace (the coordinator's backstop)",
          "times_failed+1, lost_count=0, next_run_time as for a failure; QUEUED while "
          "retry_failed allows; STOPPED instead when a stop was pending"),
    _rule(_T.RUNNING, Event.STOP, {_T.STOPPED}, "Report STOPPED after a stop command",
          "enabled=false, next_run_time = the next run counted from the run's start; "
          "no retry consumed"),
    _rule(_T.QUEUED, Event.STOP, {_T.STOPPED}, "stop_task", "enabled=false, stop_time=now"),
    _rule(_T.ASSIGNED, Event.STOP, {_T.STOPPED}, "stop_task", "enabled=false, stop_time=now; "
          "the lease is void"),
    _rule(_T.QUEUED, Event.EXPIRE, {_T.EXPIRED}, "Lease or the expiry timer finds stop_time "
          "passed; or a broadcast child's target worker is gone", "none"),
    _rule(_T.ASSIGNED, Event.EXPIRE, {_T.EXPIRED}, "StartRuns finds stop_time passed", "none"),
    _rule(_T.RUNNING, Event.LOSE_WORKER, {_T.QUEUED, _T.FAILED, _T.STOPPED},
          "Its worker is declared dead", "run closed FAILED naming the worker; lost_count+1; "
          "FAILED once lost_count exceeds the cap; STOPPED if a stop was pending; "
          "times_run/times_failed untouched"),
    _rule(_T.ASSIGNED, Event.LOSE_WORKER, {_T.QUEUED}, "Its worker is declared dead before "
          "starting it", "assigned_worker_name=''"),
    _rule(_T.ASSIGNED, Event.RELEASE, {_T.QUEUED}, "Release: the worker hands the lease back "
          "(draining)", "assigned_worker_name=''; counts nothing"),
    _rule(_T.RUNNING, Event.RELEASE, {_T.QUEUED}, "Release of a lease whose task the worker "
          "never started", "run record removed; assigned_worker_name=''; counts nothing"),
    _rule(_T.QUEUED, Event.FAN_OUT, {_T.QUEUED, _T.EXPIRED}, "A broadcast task is due: the "
          "coordinator queues one child per ACTIVE worker of its group offering its function",
          "times_run+1, last_run_time=now, next_run_time = next period or cron match; "
          "EXPIRED when that falls after stop_time (repeats is ignored, as in web2py)"),
    _rule(_T.RUNNING, Event.ABANDON, {_T.FAILED}, "The coordinator cannot apply a run's "
          "outcome (a poisoned item of a batch)", "run closed FAILED with the reason; "
          "times_failed+1; the rest of the batch applies"),
    # Housekeeping (RequeueTasks, SetTasksEnabled, UpdateTask, DeleteTasks).
    *(_rule(s, Event.REQUEUE, {_T.QUEUED}, "RequeueTasks", "enabled, next_run_time=now, "
            "assigned_worker_name='', finished_at unset; stop_time unset if passed; "
            "times_run, times_failed, lost_count = 0 unless keep_counters; attempt kept")
      for s in (_T.COMPLETED, _T.FAILED, _T.TIMEOUT, _T.STOPPED, _T.EXPIRED)),
    _rule(_T.QUEUED, Event.ENABLE, {_T.QUEUED}, "SetTasksEnabled(enabled=true)", "enabled=true"),
    _rule(_T.QUEUED, Event.DISABLE, {_T.QUEUED}, "SetTasksEnabled(enabled=false)",
          "enabled=false: never leased until enabled"),
    _rule(_T.QUEUED, Event.EDIT, {_T.QUEUED}, "UpdateTask", "the fields named in update_mask, "
          "validated as at queue time"),
    *(_rule(s, Event.DELETE, set(), "DeleteTasks, or the purge of tasks finished longer ago "
            "than the retention", "row, runs, output and dependency edges removed")
      for s in (_T.COMPLETED, _T.FAILED, _T.TIMEOUT, _T.STOPPED, _T.EXPIRED)),
)

#: (from, event) -> allowed targets: the table every decision is checked against.
TASK_TRANSITIONS: Mapping[tuple[TaskStatus, Event], frozenset[TaskStatus]] = {
    (r.source, r.event): r.targets for r in TASK_RULES
}

_W = WorkerStatus
#: worker status -> statuses an admin command may move it to. TERMINATE and KILL
#: never go back to ACTIVE or DISABLED (a web2py defect we fix).
WORKER_TRANSITIONS: Mapping[WorkerStatus, frozenset[WorkerStatus]] = {
    _W.ACTIVE: frozenset({_W.DISABLED, _W.TERMINATE, _W.KILL}),
    _W.DISABLED: frozenset({_W.ACTIVE, _W.TERMINATE, _W.KILL}),
    _W.TERMINATE: frozenset({_W.KILL}),
    _W.KILL: frozenset(),
}

#: run outcome reported by a worker -> the task event it causes.
OUTCOME_EVENTS: Mapping[RunStatus, Event] = {
    RunStatus.COMPLETED: Event.COMPLETE,
    RunStatus.FAILED: Event.FAIL,
    RunStatus.TIMEOUT: Event.TIME_OUT,
    RunStatus.STOPPED: Event.STOP,
}

#: the status a worker gets when it registers (or registers again)
REGISTERED_WORKER_STATUS = WorkerStatus.ACTIVE


class IllegalTransitionError(Exception):
    """A decision asked for an edge the table does not allow (a bug, not bad input)."""


@dataclasses.dataclass(frozen=True)
class Transition:
    """A decided task change, applied by the store as a compare-and-set.

    `values` are the columns to write besides `status`; `attempt` (when not
    None) is also required to match, fencing writes that come from a worker.
    """

    task_id: int
    source: TaskStatus
    target: TaskStatus
    event: Event
    reason: str
    values: Mapping[str, Any]
    attempt: int | None = None


@dataclasses.dataclass(frozen=True)
class RunClose:
    """How a run record ends: its final values, or removal (contract §2.11)."""

    status: RunStatus
    values: Mapping[str, Any]
    delete: bool = False


def _decide(
    task: Mapping[str, Any],
    event: Event,
    target: TaskStatus,
    reason: str,
    values: Mapping[str, Any],
    attempt: int | None = None,
) -> Transition:
    source = TaskStatus(task["status"])
    allowed = TASK_TRANSITIONS.get((source, event), frozenset())
    if target not in allowed:
        raise IllegalTransitionError(f"{source} --{event}--> {target} is not a legal transition")
    return Transition(task["id"], source, target, event, reason, dict(values), attempt)


def is_legal(source: TaskStatus, event: Event) -> bool:
    """True when `event` may happen to a task in `source` status."""
    return (source, event) in TASK_TRANSITIONS


def lease(task: Mapping[str, Any], worker_name: str) -> Transition:
    """QUEUED -> ASSIGNED: the task is leased to `worker_name` with a new attempt number."""
    values = {"attempt": task["attempt"] + 1, "assigned_worker_name": worker_name}
    return _decide(task, Event.LEASE, TaskStatus.ASSIGNED, "leased", values)


def start(task: Mapping[str, Any], now: dt.datetime) -> Transition:
    """ASSIGNED -> RUNNING: the worker starts the run now."""
    return _decide(task, Event.START, TaskStatus.RUNNING, "started", {"last_run_time": now},
                   attempt=task["attempt"])


def lease_and_start(task: Mapping[str, Any], worker_name: str, now: dt.datetime) -> Transition:
    """QUEUED -> ASSIGNED -> RUNNING in one write, for a worker that starts at once."""
    leased = lease(task, worker_name)
    started = start({**task, **leased.values, "status": leased.target}, now)
    return Transition(task["id"], leased.source, started.target, Event.START, "leased and started",
                      {**leased.values, **started.values})


def expire(task: Mapping[str, Any]) -> Transition:
    """QUEUED/ASSIGNED -> EXPIRED: stop_time passed before the task could start."""
    return _decide(task, Event.EXPIRE, TaskStatus.EXPIRED, "stop_time passed",
                   {"assigned_worker_name": ""})


def is_expired(task: Mapping[str, Any], now: dt.datetime) -> bool:
    """True when the task's stop_time is in the past (it must never start)."""
    stop_time = task.get("stop_time")
    return stop_time is not None and stop_time < now


def stop_waiting(task: Mapping[str, Any], now: dt.datetime) -> Transition:
    """QUEUED/ASSIGNED -> STOPPED at once (contract §2.1); RUNNING goes through its worker."""
    if task["status"] not in (TaskStatus.QUEUED, TaskStatus.ASSIGNED):
        raise IllegalTransitionError(f"stop_task cannot stop a {task['status']} task at once")
    return _decide(task, Event.STOP, TaskStatus.STOPPED, "stopped by stop_task",
                   {"enabled": False, "stop_time": now, "stop_requested": False})


def finish(
    task: Mapping[str, Any], outcome: RunStatus, run_start: dt.datetime | None,
    now: dt.datetime | None = None, rng: Callable[[], float] = random.random,
) -> Transition:
    """RUNNING -> the status a reported run outcome leads to, with web2py's counters.

    Success: times_run+1, times_failed reset, another run while repeats allow
    (EXPIRED when it would start after stop_time). Failure or timeout:
    times_failed+1 and a retry while retry_failed allows, due one period after
    the failed run started (web2py), or after the retry_delay options counted
    from `now` (the failure). Stop: STOPPED, no retry consumed.

    Every outcome writes next_run_time, as web2py does at every report: the next
    run computed from the run's start (period, prevent_drift grid or cron match),
    even when the task ends there (COMPLETED, EXPIRED, FAILED, TIMEOUT, STOPPED);
    only a retry under the retry_delay options is due at its own time instead.
    """
    event = OUTCOME_EVENTS[outcome]
    attempt = task["attempt"]
    started_at = run_start or task.get("last_run_time") or task["next_run_time"]
    next_run = timing.next_run_time(task, started_at)
    # Any outcome reached by the worker ends a run of lost workers: lost_count counts
    # consecutive losses only, so a periodic task survives unrelated losses over its life.
    base = {"stop_requested": False, "lost_count": 0, "next_run_time": next_run}
    if outcome is RunStatus.STOPPED:
        return _decide(task, event, TaskStatus.STOPPED, "stopped while running",
                       {**base, "enabled": False}, attempt)
    if task.get("stop_requested") and outcome in (RunStatus.FAILED, RunStatus.TIMEOUT):
        # A pending stop wins over a simultaneous failure or the backstop's timeout.
        return _decide(task, event, TaskStatus.STOPPED, f"stopped ({outcome.lower()} while "
                       "a stop was pending)",
                       {**base, "enabled": False}, attempt)
    if outcome is RunStatus.COMPLETED:
        times_run = task["times_run"] + 1
        values = {**base, "times_run": times_run, "times_failed": 0}
        repeats = task["repeats"]
        if repeats != 0 and times_run >= repeats:
            return _decide(task, event, TaskStatus.COMPLETED, "completed", values, attempt)
        stop_time = task.get("stop_time")
        if stop_time is not None and next_run > stop_time:
            return _decide(task, event, TaskStatus.EXPIRED, "next run after stop_time", values,
                           attempt)
        return _decide(task, event, TaskStatus.QUEUED, "repeat due", values, attempt)
    failed_status = TaskStatus.TIMEOUT if outcome is RunStatus.TIMEOUT else TaskStatus.FAILED
    times_failed = task["times_failed"]
    values = {**base, "times_failed": times_failed + 1}
    retry_failed = task["retry_failed"]
    if retry_failed == -1 or (retry_failed > 0 and times_failed < retry_failed):
        if task.get("retry_delay"):
            values["next_run_time"] = timing.retry_time(task, now or started_at, rng)
        return _decide(task, event, TaskStatus.QUEUED, f"retry after {outcome.lower()}",
                       values, attempt)
    return _decide(task, event, failed_status, f"no retry left after {outcome.lower()}", values,
                   attempt)


def fan_out(task: Mapping[str, Any], now: dt.datetime) -> Transition:
    """A due broadcast parent after queueing its children: wait for the next round."""
    next_run = timing.next_run_time(task, now)
    values = {"times_run": task["times_run"] + 1, "last_run_time": now,
              "next_run_time": next_run}
    stop_time = task.get("stop_time")
    if stop_time is not None and next_run > stop_time:
        return _decide(task, Event.FAN_OUT, TaskStatus.EXPIRED, "next round after stop_time",
                       values)
    return _decide(task, Event.FAN_OUT, TaskStatus.QUEUED, "fanned out", values)


def abandon(task: Mapping[str, Any], reason: str) -> Transition:
    """RUNNING -> FAILED when an outcome cannot be applied: this decision cannot fail.

    Used for the one poisoned item of a batch, so the rest apply; `reason` is
    recorded in the run's traceback by the caller.
    """
    return _decide(task, Event.ABANDON, TaskStatus.FAILED, reason[:500],
                   {"stop_requested": False, "times_failed": task["times_failed"] + 1},
                   attempt=task["attempt"])


def orphan_child(task: Mapping[str, Any]) -> Transition:
    """QUEUED -> EXPIRED: a broadcast child whose target worker is gone never runs."""
    return _decide(task, Event.EXPIRE, TaskStatus.EXPIRED,
                   f"target worker {task['target_worker_name']} is gone",
                   {"assigned_worker_name": ""})


def release(task: Mapping[str, Any]) -> Transition:
    """ASSIGNED/RUNNING -> QUEUED: the worker gives back a lease it did not run."""
    return _decide(task, Event.RELEASE, TaskStatus.QUEUED, "released by its worker",
                   {"assigned_worker_name": "", "stop_requested": False},
                   attempt=task["attempt"])


def lose_worker(task: Mapping[str, Any], max_lost_requeues: int) -> Transition:
    """ASSIGNED/RUNNING -> QUEUED (or FAILED past the cap) when the worker is declared dead.

    An unstarted lease goes back without counting. A started one counts as a
    lost-worker requeue; past `max_lost_requeues` the task ends FAILED so a task
    that kills its worker cannot loop for ever (contract §2.8).
    """
    values: dict[str, Any] = {"assigned_worker_name": "", "stop_requested": False}
    if task["status"] == TaskStatus.ASSIGNED:
        return _decide(task, Event.LOSE_WORKER, TaskStatus.QUEUED, "lease of a lost worker",
                       values)
    lost = task["lost_count"]
    if task["stop_requested"]:
        return _decide(task, Event.LOSE_WORKER, TaskStatus.STOPPED, "stopped; its worker was lost",
                       {**values, "enabled": False})
    if lost >= max_lost_requeues:
        return _decide(task, Event.LOSE_WORKER, TaskStatus.FAILED,
                       f"worker lost {lost + 1} times; cap is {max_lost_requeues}",
                       {**values, "lost_count": lost + 1,
                        "times_failed": task["times_failed"] + 1})
    return _decide(task, Event.LOSE_WORKER, TaskStatus.QUEUED, "requeued after a lost worker",
                   {**values, "lost_count": lost + 1})


def requeue(task: Mapping[str, Any], now: dt.datetime, keep_counters: bool = False
            ) -> Transition:
    """A finished task -> QUEUED, due now (RequeueTasks).

    Counters start again from 0 unless `keep_counters`: a requeued task gets its
    repeats and retries anew, as if just queued. `attempt` is never reset: it is the
    fencing token of leases, and a late report of an old attempt must stay refused.
    A stop_time already passed is unset, else the task would expire at once.
    """
    values: dict[str, Any] = {"enabled": True, "next_run_time": now, "assigned_worker_name": "",
                              "stop_requested": False, "finished_at": None}
    if not keep_counters:
        values.update(times_run=0, times_failed=0, lost_count=0)
    stop_time = task.get("stop_time")
    if stop_time is not None and stop_time <= now:
        values["stop_time"] = None
    return _decide(task, Event.REQUEUE, TaskStatus.QUEUED, "requeued", values)


def set_enabled(task: Mapping[str, Any], enabled: bool) -> Transition:
    """QUEUED -> QUEUED with `enabled` set (SetTasksEnabled)."""
    event = Event.ENABLE if enabled else Event.DISABLE
    return _decide(task, event, TaskStatus.QUEUED, "enabled" if enabled else "disabled",
                   {"enabled": enabled})


#: the fields UpdateTask may change on a QUEUED task (web2py's editable columns that
#: matter to scheduling; the rest would change what the task is, not when or how it runs)
EDITABLE_FIELDS = frozenset({
    "start_time", "next_run_time", "stop_time", "priority", "repeats", "period", "prevent_drift",
    "timeout", "retry_failed", "retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter"})


def edit(task: Mapping[str, Any], values: Mapping[str, Any],
         first_run: dt.datetime | None = None) -> Transition:
    """QUEUED -> QUEUED with validated new field values (UpdateTask).

    A new start_time also moves next_run_time while the task has never run (web2py
    computes the first next_run_time from start_time), unless next_run_time is given:
    to `first_run` (the first cron match after it, for a cron task) or start_time.
    """
    wrong = set(values) - EDITABLE_FIELDS
    if wrong:
        raise IllegalTransitionError(f"not editable: {', '.join(sorted(wrong))}")
    out = dict(values)
    if "start_time" in out and "next_run_time" not in out and task["times_run"] == 0:
        out["next_run_time"] = first_run or out["start_time"]
    return _decide(task, Event.EDIT, TaskStatus.QUEUED, "edited", out)


def may_delete(task: Mapping[str, Any]) -> bool:
    """True when the task may be deleted: it has ended (no worker can still report on it)."""
    return is_legal(TaskStatus(task["status"]), Event.DELETE)


def open_run(task: Mapping[str, Any], worker_name: str, now: dt.datetime) -> dict[str, Any]:
    """The run record of a task that starts now (inserted with the ASSIGNED -> RUNNING edge)."""
    return {"task_id": task["id"], "attempt": task["attempt"], "status": RunStatus.RUNNING,
            "start_time": now, "stop_time": None, "run_output": "", "run_result": None,
            "traceback": "", "worker_name": worker_name}


def close_run(
    outcome: RunStatus,
    now: dt.datetime,
    result: str | None,
    traceback: str,
    output: str,
    discard_empty: bool = True,
) -> RunClose:
    """The end of a run record.

    A success that returned None (JSON "null") and printed nothing is removed
    (contract §2.11); anything else is kept.
    """
    values = {"status": outcome, "stop_time": now, "run_result": result,
              "traceback": traceback, "run_output": output}
    empty = outcome is RunStatus.COMPLETED and result in (None, "null") and not output
    return RunClose(outcome, values, delete=discard_empty and empty and not traceback)


def change_worker_status(current: WorkerStatus, wanted: WorkerStatus) -> bool:
    """True when an admin command may move a worker from `current` to `wanted`."""
    return wanted in WORKER_TRANSITIONS[current]


def render_markdown() -> str:
    """The state-machine document, generated from the tables above."""
    lines = [
        "# State machines",
        "",
        "Generated by `python -m taskgrid.coordinator.lifecycle --markdown` from the tables",
        "in `coordinator/lifecycle.py`; `tests/unit/test_state_machine_doc.py` fails when",
        "they differ.",
        "Every status write is a compare-and-set on the expected status (and, for worker writes,",
        "the attempt number), so a lost race changes nothing.",
        "",
        "## Task",
        "",
        "| from | event | to | trigger | effects |",
        "|---|---|---|---|---|",
        "| (insert) | queue | QUEUED | QueueTask / QueueTasks | validated row written |",
    ]
    for r in TASK_RULES:
        names = ", ".join(sorted(t.value for t in r.targets)) or "(deleted)"
        lines.append(f"| {r.source} | {r.event} | {names} | {r.trigger} | {r.effects} |")
    lines += ["", "```mermaid", "stateDiagram-v2", "    [*] --> QUEUED"]
    for r in TASK_RULES:
        for t in sorted(r.targets):
            lines.append(f"    {r.source} --> {t}: {r.event}")
        if not r.targets:
            lines.append(f"    {r.source} --> [*]: {r.event}")
    lines += ["```", "", "## Run", "", "| from | to | when |", "|---|---|---|",
              "| (insert) | RUNNING | the task starts (ASSIGNED -> RUNNING) |"]
    for status, event in OUTCOME_EVENTS.items():
        lines.append(f"| RUNNING | {status} | the worker reports {status} (task event {event}) |")
    lines += [
        "| RUNNING | FAILED | its worker is declared dead (traceback names the worker) |",
        "| RUNNING | (deleted) | COMPLETED with result null and no output (contract §2.11) |",
        "",
        "## Worker",
        "",
        "| from | allowed commands |",
        "|---|---|",
    ]
    for source, targets in WORKER_TRANSITIONS.items():
        allowed = ", ".join(t.value for t in WorkerStatus if t in targets) or "(none: final)"
        lines.append(f"| {source} | {allowed} |")
    lines += ["", "A worker silent for `dead_after` seconds (3 heartbeat intervals) is declared",
              "dead: its leases go through the lose_worker edges above.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(render_markdown())
    else:
        sys.stderr.write("usage: python -m taskgrid.coordinator.lifecycle --markdown\n")
        sys.exit(2)
