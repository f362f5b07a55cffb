"""The typed records a taskgrid client hands to its users.

Everything here is plain Python: frozen, slotted dataclasses with aware UTC
datetimes, ``dict``/``list`` for JSON values and string enums for statuses.
Protobuf messages never leave ``taskgrid.client``'s private modules, so the wire format
can change without breaking user code that holds these records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

logger = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    """Status of a task (web2py's scheduler_task.status)."""

    QUEUED = "QUEUED"
    """Waiting to be due and leased; the coordinator moves it to ASSIGNED."""
    ASSIGNED = "ASSIGNED"
    """Leased to a worker that has not started it yet."""
    RUNNING = "RUNNING"
    """A run is in progress on its worker."""
    COMPLETED = "COMPLETED"
    """Terminal: the last wanted run succeeded."""
    FAILED = "FAILED"
    """Terminal: failed with no retry left."""
    TIMEOUT = "TIMEOUT"
    """Terminal: timed out with no retry left."""
    STOPPED = "STOPPED"
    """Terminal: stopped by stop_task."""
    EXPIRED = "EXPIRED"
    """Terminal: past its stop_time."""

    @property
    def is_terminal(self) -> bool:
        """True when the task will never run again by itself."""
        return self not in (TaskStatus.QUEUED, TaskStatus.ASSIGNED, TaskStatus.RUNNING)


class RunStatus(StrEnum):
    """Status of one run (web2py's scheduler_run.status)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    STOPPED = "STOPPED"


class WorkerStatus(StrEnum):
    """Status of a worker, set by the admin commands (resume, disable, ...)."""

    ACTIVE = "ACTIVE"
    """Leases work."""
    DISABLED = "DISABLED"
    """Heartbeats but leases nothing; resumable."""
    TERMINATE = "TERMINATE"
    """Finishes its running tasks, takes no more, exits."""
    KILL = "KILL"
    """Stops its running tasks now and exits."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The program a command task runs instead of a registered function.

    Only workers started with commands allowed (``taskgrid worker
    --allow-commands``) run these; see `Scheduler.queue_command`.
    """

    executable: str
    """A path, or a name the worker looks up in its PATH."""
    args: tuple[str, ...] = ()
    """The arguments after the executable."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables added to the worker's environment."""
    cwd: str | None = None
    """Working directory; None for the worker's."""

    @property
    def argv(self) -> tuple[str, ...]:
        """The whole command line: the executable, then its arguments."""
        return (self.executable, *self.args)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task (web2py's scheduler_task row), as the coordinator last saw it."""

    id: int
    """Database id."""
    uuid: str
    """Unique name given at queue time or generated."""
    task_name: str
    """Free label; defaults to the function name."""
    group_name: str
    """Routes the task to workers of this group."""
    status: TaskStatus
    """Where the task is in its life cycle."""
    function_name: str
    """The registered function (or command) the worker runs."""
    args: list[Any]
    """Positional arguments (decoded from the stored JSON list)."""
    vars: dict[str, Any]
    """Keyword arguments (decoded from the stored JSON object)."""
    enabled: bool
    """Disabled tasks are never leased."""
    start_time: datetime | None
    """Not due before this time."""
    next_run_time: datetime | None
    """When the task is next due."""
    stop_time: datetime | None
    """Past this time the task expires; None for never."""
    repeats: int
    """Wanted successful runs; 0 is unlimited."""
    retry_failed: int
    """Retries allowed after a failure; -1 is unlimited."""
    period: int
    """Seconds between runs."""
    prevent_drift: bool
    """Runs stay on a grid anchored at start_time instead of drifting."""
    cronline: str | None
    """Cron schedule, or None."""
    timeout: int
    """Seconds a run may last."""
    sync_output: int
    """Seconds between partial-output refreshes; 0 means about one second."""
    times_run: int
    """Runs completed so far."""
    times_failed: int
    """Consecutive failures so far."""
    last_run_time: datetime | None
    """Start of the latest run, or None."""
    assigned_worker_name: str
    """Worker holding (or last holding) the task; empty when none."""
    broadcast: bool
    """One child task per available worker of the group, per period."""
    priority: int
    """Higher runs first among due tasks."""
    discard_results: bool
    """No run records are kept."""
    attempt: int
    """Number of leases so far (the current fencing token)."""
    lost_count: int
    """Requeues caused by lost workers."""
    stop_requested: bool
    """A stop was asked while the task was RUNNING."""
    retry_delay: float
    """Seconds from a failure to its retry; 0 keeps web2py's rule (one period after
    the failed run started)."""
    retry_backoff: float
    """Factor applied to retry_delay for each further consecutive failure."""
    retry_delay_max: float
    """Cap in seconds on the grown retry delay; 0 means no cap."""
    retry_jitter: float
    """Fraction (0..1) by which each retry delay is randomly spread, +/-."""
    broadcast_parent: int
    """The broadcast task this one was fanned out from; 0 if none."""
    target_worker_name: str
    """Only this worker may lease the task (broadcast children); empty for any."""
    command: CommandSpec | None = None
    """The program of a command task (function_name ``@command``); None for a function."""
    finished_at: datetime | None = None
    """When the task ended (COMPLETED, FAILED, TIMEOUT, STOPPED, EXPIRED); None before."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One execution attempt of a task (web2py's scheduler_run row)."""

    id: int
    """Database id."""
    task_id: int
    """The task this run belongs to."""
    attempt: int
    """The lease attempt this run was started under."""
    status: RunStatus
    """Outcome so far."""
    start_time: datetime | None
    """When the run started."""
    stop_time: datetime | None
    """When it ended; None while RUNNING."""
    run_output: str
    """Captured stdout/stderr (partial while RUNNING)."""
    run_result: str | None
    """JSON text of the return value, or None."""
    traceback: str
    """Failure details; empty on success."""
    worker_name: str
    """Worker that ran it."""

    @property
    def result(self) -> Any:
        """The decoded return value, or None (as web2py's task_status ``result``)."""
        return decode_result(self.run_result)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker (web2py's scheduler_worker row) with what the coordinator knows live."""

    worker_name: str
    """Unique name of the worker."""
    status: WorkerStatus
    """Admin status (the command the worker follows)."""
    first_heartbeat: datetime | None
    """When it registered."""
    last_heartbeat: datetime | None
    """Its latest heartbeat."""
    group_names: tuple[str, ...]
    """Groups it leases from."""
    functions: tuple[str, ...]
    """Functions it declared it can run."""
    capacity: int
    """Tasks it can run at once."""
    language: str
    """Implementation language of the worker (e.g. python, go)."""
    alive: bool
    """False once declared dead."""
    running: tuple[int, ...]
    """Ids of the tasks it holds leases for."""
    rss_bytes: int
    """Resident memory it last reported."""
    heartbeat: float
    """Seconds between its heartbeats."""
    hostname: str
    """Host it runs on."""
    pid: int
    """Its process id on that host."""
    capabilities: tuple[str, ...]
    """Extra abilities, e.g. ``command`` for command tasks."""
    coordinator: str = ""
    """The coordinator holding its session (its node name; empty once dead)."""


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A slice of a run's live output, as `Scheduler.watch` yields it."""

    task_id: int
    """The task that printed it."""
    attempt: int
    """The lease attempt of the run."""
    run_id: int
    """The run record (0 when the task discards results)."""
    seq: int
    """Position in the run's output, from 1."""
    data: str
    """The text."""
    clear: bool
    """Everything printed before this chunk is discarded (``!clear!``)."""


@dataclass(frozen=True, slots=True)
class QueueResult:
    """What queue_task answers: an id and uuid, or field errors and nothing queued."""

    id: int | None
    """The new task's id; None when nothing was queued."""
    uuid: str | None
    """The new task's uuid; None when nothing was queued."""
    errors: dict[str, str] = field(default_factory=dict)
    """Field name -> message; empty on success."""


@dataclass(frozen=True, slots=True)
class TaskStatusResult:
    """What ``task_status(ref, output=True)`` answers."""

    task: TaskRecord
    """The task."""
    run: RunRecord | None
    """Its latest run, or None when it never ran."""
    result: Any
    """The latest run's decoded return value, or None."""
    waiting_for: tuple[int, ...] = ()
    """Ids of the prerequisites not COMPLETED for good yet (see `JobGraph`)."""


@dataclass(frozen=True, slots=True)
class ChangedResult:
    """What a housekeeping call (requeue, enable, disable, delete) answers."""

    count: int
    """How many tasks it changed (or deleted)."""
    task_ids: tuple[int, ...] = ()
    """Their ids (the first 1000)."""


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What ``update_task`` answers: the task after the call, or field errors."""

    task: TaskRecord | None
    """The updated task; None when nothing changed (see ``errors``)."""
    errors: dict[str, str] = field(default_factory=dict)
    """Field name -> message; empty on success."""


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many tasks of one group are in one status."""

    status: TaskStatus
    group_name: str
    count: int


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Tasks that ended in one minute, by how they ended."""

    minute: datetime
    """The minute's start (UTC)."""
    completed: int
    failed: int
    """FAILED or TIMEOUT."""
    other: int
    """STOPPED or EXPIRED."""


@dataclass(frozen=True, slots=True)
class StatsResult:
    """What ``stats`` answers (the coordinator shares one answer for 2 s)."""

    counts: tuple[StatusCount, ...]
    last_hour: tuple[MinuteCount, ...]
    """60 minutes, oldest first, the current one last."""
    oldest_due: TaskRecord | None
    """The enabled QUEUED task due longest ago, or None."""
    computed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskPage:
    """What ``list_tasks_page`` answers: one page of tasks and the next page's token."""

    tasks: tuple[TaskRecord, ...]
    next_page_token: str
    """Pass it back for the next page; empty on the last page."""


@dataclass(frozen=True, slots=True)
class JobView:
    """What ``get_job`` answers: a job graph's tasks and edges."""

    job_name: str
    tasks: tuple[TaskRecord, ...]
    """Every task with an edge, by id."""
    edges: tuple[tuple[int, int, bool], ...]
    """(task id, id of the task it waits for, met: that one COMPLETED for good)."""


TaskEvent: TypeAlias = TaskRecord | OutputChunk
"""One event of `Scheduler.watch`: a task snapshot or a piece of output."""


def decode_result(run_result: str | None) -> Any:
    """Decode a run's JSON result text the way web2py's task_status does.

    Empty or missing text gives None. Text that is not JSON (which the
    coordinator should never store) is returned as is rather than raising, so
    that reading a task's status always works.
    """
    if not run_result:
        return None
    try:
        return json.loads(run_result)
    except (ValueError, RecursionError):
        logger.warning("run result is not JSON; returning it as text")
        return run_result
