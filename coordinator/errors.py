"""The coordinator's domain errors. No grpc here: servicers/status.py maps them to codes."""

from __future__ import annotations


class TaskgridError(Exception):
    """Root of every error the coordinator raises on purpose."""


class TaskNotFoundError(TaskgridError):
    """The task id or uuid names no task."""


class InvalidRequestError(TaskgridError):
    """A malformed request; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownWorkerError(TaskgridError):
    """The worker session is unknown or the worker was declared dead: register again."""


class BadSessionError(TaskgridError):
    """The session token does not match the worker's."""


class TransitionConflictError(TaskgridError):
    """A compare-and-set matched no row: someone else moved the task first."""


class DuplicateWorkerError(TaskgridError):
    """Another live session already uses this worker name."""


class StoreUnavailableError(TaskgridError):
    """The database cannot be reached right now: the call may be retried later."""


class DuplicateUuidError(TaskgridError):
    """An insert lost a race for a uuid (another transaction took it first)."""


class NotLeaderError(TaskgridError):
    """A maintenance write from a coordinator that no longer leads (fenced: nothing written)."""


class WriterLockError(TaskgridError):
    """Another coordinator serves this database already (the message names it)."""


class FailedPreconditionError(TaskgridError):
    """The task is in a status the call does not apply to (e.g. deleting a RUNNING task)."""


class PermissionDeniedError(TaskgridError):
    """The caller's role may not do this (bulk housekeeping needs the admin role)."""
