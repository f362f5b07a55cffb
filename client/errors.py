"""The errors a taskgrid client raises: one tree rooted at `TaskgridError`.

Users catch these instead of ``grpc.RpcError``; ``taskgrid.client._channel`` is
the one place that turns a gRPC failure into one of them. Each class names
what went wrong from the caller's point of view, and carries the gRPC status
name in ``code`` for logs and bug reports. This module imports nothing from
gRPC so that catching an error never needs the transport.
"""

from __future__ import annotations


class TaskgridError(Exception):
    """Root of every error the taskgrid client raises."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        """Build an error.

        Args:
            message: What went wrong, for people.
            code: The gRPC status name that caused it (e.g. ``NOT_FOUND``), if any.
        """
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class NotFoundError(TaskgridError):
    """The task, run or worker named does not exist."""


class InvalidArgumentError(TaskgridError):
    """The request was malformed (a client bug or a bad value outside queue_task)."""


class AlreadyExistsError(TaskgridError):
    """Something with that name already exists."""


class FailedPreconditionError(TaskgridError):
    """The request does not apply to the current state of the task or worker."""


class AbortedError(TaskgridError):
    """The request lost a race with another change; retrying may succeed."""


class PermissionDeniedError(TaskgridError):
    """The caller is known but not allowed to do this."""


class UnauthenticatedError(TaskgridError):
    """The caller sent no valid credentials."""


class ResourceExhaustedError(TaskgridError):
    """The coordinator refused the request for lack of capacity (or it was too large)."""


class UnavailableError(TaskgridError):
    """The coordinator could not be reached; retrying later may succeed."""


class DeadlineExceededError(UnavailableError):
    """The coordinator did not answer in time.

    A subclass of `UnavailableError` because callers handle both the same
    way: the coordinator is away or overloaded, and the request may or may
    not have been applied.
    """


class CancelledError(TaskgridError):
    """The call was cancelled (usually by this process closing the client)."""


class UnimplementedError(TaskgridError):
    """The coordinator does not offer this call (it may be older than the client)."""


class InternalError(TaskgridError):
    """The coordinator failed unexpectedly; its log has the details."""


class ProtocolError(TaskgridError):
    """The coordinator answered something this client cannot understand."""


class WaitTimeoutError(TaskgridError, TimeoutError):
    """`Scheduler.wait` or `result`: the task had not ended when the timeout passed."""


class TaskEndedError(TaskgridError):
    """`Scheduler.result`: the task ended without a result to return.

    ``record`` is the final `TaskStatusResult` (the task, its latest run with
    its traceback, and any result).
    """

    def __init__(self, message: str, record: object, *, code: str | None = None) -> None:
        """Build an error for the task's final `record`."""
        super().__init__(message, code=code)
        self.record = record


class TaskFailedError(TaskEndedError):
    """The task ended FAILED (its run raised, with no retry left)."""


class TaskTimedOutError(TaskEndedError):
    """The task ended TIMEOUT (its run overran its timeout, with no retry left)."""


class TaskStoppedError(TaskEndedError):
    """The task ended STOPPED (stop_task)."""


class TaskExpiredError(TaskEndedError):
    """The task ended EXPIRED (its stop_time passed before it could run)."""
