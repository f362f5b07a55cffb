"""taskgrid.client: queue tasks, read their status and runs, command workers.

The public API is exactly ``__all__``: `Scheduler` (web2py's scheduler client
methods over gRPC) and its `TlsConfig`, `JobGraph` (dependency graphs queued
in one call) with its `JobTask` handles, the typed records they return, and
the error tree they raise; `CommandSpec` is the program of a command task
(`Scheduler.queue_command`). Protobuf messages and ``grpc`` types stay in the
private modules (``_channel``, ``_failover``, ``_resend``, ``_convert``, ``_requests``) and
never appear in a public signature; this package must not import ``taskgrid.coordinator``.
"""

from __future__ import annotations

from ._channel import TlsConfig
from .aio import AsyncScheduler
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    ResourceExhaustedError,
    TaskEndedError,
    TaskExpiredError,
    TaskFailedError,
    TaskgridError,
    TaskStoppedError,
    TaskTimedOutError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    WaitTimeoutError,
)
from .jobgraph import JobGraph, JobTask
from .records import (
    ChangedResult,
    CommandSpec,
    JobView,
    MinuteCount,
    OutputChunk,
    QueueResult,
    RunRecord,
    RunStatus,
    StatsResult,
    StatusCount,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskStatus,
    TaskStatusResult,
    UpdateResult,
    WorkerRecord,
    WorkerStatus,
)
from .scheduler import Scheduler, TaskRef

__all__ = [
    "AbortedError",
    "AsyncScheduler",
    "ChangedResult",
    "JobView",
    "TaskPage",
    "MinuteCount",
    "StatsResult",
    "StatusCount",
    "TaskEndedError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskStoppedError",
    "TaskTimedOutError",
    "UpdateResult",
    "WaitTimeoutError",
    "AlreadyExistsError",
    "CancelledError",
    "CommandSpec",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "JobGraph",
    "JobTask",
    "NotFoundError",
    "OutputChunk",
    "PermissionDeniedError",
    "ProtocolError",
    "QueueResult",
    "ResourceExhaustedError",
    "RunRecord",
    "RunStatus",
    "Scheduler",
    "TaskEvent",
    "TaskRecord",
    "TaskRef",
    "TaskStatus",
    "TaskStatusResult",
    "TaskgridError",
    "TlsConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "WorkerRecord",
    "WorkerStatus",
]
