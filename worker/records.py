"""Plain records passed between the pool, the reporter and the agent.

A leased task becomes a `TaskRun` (agent -> pool), ends as a `RunResult`
(pool -> agent -> reporter), and is seen while it runs as an `ActiveRun`
(pool -> reporter, for live output). No behaviour and no gRPC here: the
agent converts to and from protobuf at its edge.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .capture import Chunk, OutputBuffer

LeaseKey = tuple[int, int]
"""(task_id, attempt): names one lease and so one run."""


def describe_leases(keys: Iterable[LeaseKey]) -> str:
    """Leases for a log line: ``task:attempt`` pairs, sorted, comma-separated."""
    return ",".join(f"{task}:{attempt}" for task, attempt in sorted(keys))


class Outcome(enum.Enum):
    """How a run ended (the worker's side of RunStatus)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class Command:
    """A command task's program: what the lease's ``Command`` message says."""

    executable: str
    """A path, or a name looked up in the worker's PATH."""
    args: tuple[str, ...] = ()
    """Arguments after the executable (argv[1:])."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to the worker's environment."""
    cwd: str = ""
    """Working directory; empty for the worker's."""


@dataclass(frozen=True, slots=True)
class TaskRun:
    """A leased task to run: what the child needs, plus its limits."""

    task_id: int
    attempt: int
    run_id: int
    """Run record id; 0 when the task discards its results."""
    uuid: str
    function_name: str
    args: str = "[]"
    """JSON text of a list."""
    vars: str = "{}"
    """JSON text of an object."""
    timeout: float = 60.0
    """Seconds from submit to TIMEOUT; 0 or less means no limit."""
    sync_output: float = 0.0
    """Seconds between live output flushes; 0 means the default cadence."""
    task_name: str = ""
    command: Command | None = None
    """Set for a command task (function_name ``@command``): run this program instead."""
    traceparent: str = ""
    """W3C trace context of the call that queued the task ("" when it was not traced)."""

    @property
    def key(self) -> LeaseKey:
        """The lease this run belongs to."""
        return (self.task_id, self.attempt)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The end of one run."""

    task: TaskRun
    outcome: Outcome
    result: str | None
    """JSON text of the return value (COMPLETED only)."""
    traceback: str
    output: list[Chunk]
    """Output chunks not sent live (their seq continues the live chunks)."""


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """A run in progress, as the output flusher sees it."""

    task: TaskRun
    output: OutputBuffer
    started: float
    """time.monotonic() when it was submitted."""
