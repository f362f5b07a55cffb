"""What a running task can learn about itself: `current_task()` (web2py's W2P_TASK).

This module owns one process-global slot that the task child process fills
just before calling a task function and clears right after. It imports
nothing from gRPC or the rest of the worker so that task modules can import
`taskgrid.worker` cheaply inside the child.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Identity of the task run in progress, as web2py's ``W2P_TASK`` gave it."""

    id: int
    """The task id (scheduler_task.id)."""
    uuid: str
    """The task's unique uuid."""
    run_id: int
    """The run record id; 0 when the task discards its results."""
    attempt: int
    """The lease attempt number (the fencing token of this run)."""


_current: TaskContext | None = None


def current_task() -> TaskContext | None:
    """Return the task running in this process, or None outside a task.

    Only meaningful inside a task function executed by a taskgrid worker's
    child process; everywhere else (the worker's own process, a client) it is None.
    """
    return _current


def set_current_task(context: TaskContext | None) -> None:
    """Install (or clear, with None) the running task; called by the task child only."""
    global _current
    _current = context
