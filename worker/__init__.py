"""The taskgrid Python worker: `taskgrid worker --tasks MODULE_OR_FILE`.

Public surface: `current_task()` (called from inside a task function) and the
`TaskContext` it returns. Everything else is the worker's machinery:

- main.py: command-line flags -> Agent; the only place that configures logging.
- agent.py: talks to the coordinator (register, lease, heartbeat, output, reports);
  the only module of this package that imports the generated gRPC stubs.
- outbox.py: finished reports and output chunks waiting to be sent.
- runner.py: the pool of long-lived task child processes (process groups,
  timeouts, SIGTERM then SIGKILL, reaping, replacement).
- child.py: the loop that runs inside each task child process.
- capture.py: file-descriptor level stdout/stderr capture and `!clear!` chunking.
- registry.py: loading the task functions named by `--tasks`.
- context.py: `current_task()`.

This package must stay cheap to import (task modules import it inside the
child), so this file imports only context.py; it never imports the coordinator.
"""

from __future__ import annotations

from taskgrid.worker.context import TaskContext, current_task

__all__ = ["TaskContext", "current_task"]
