"""The taskgrid Python worker: `taskgrid worker --tasks MODULE_OR_FILE [--allow-commands]`.

Public surface: `current_task()` (called from inside a task function) and the
`TaskContext` it returns. Everything else is the worker's machinery:

- main.py: command-line flags -> Agent; the only place that configures logging
  or installs signal handlers.
- agent.py: talks to the coordinator (register, lease, heartbeat, commands,
  delivery); the only module of this package that imports the generated stubs.
- channel.py: the channel to the coordinator (plain text or TLS, client
  certificate, bearer token) and the rules that keep the token safe.
- reporter.py: the thread that batches live output and finished runs;
  outbox.py: what is waiting to be sent; backoff.py: retry delays.
- runner.py: the pool of long-lived task children (dispatch, timeouts,
  SIGTERM then SIGKILL to the process group, reaping, replacement).
- child.py: a task child, both ends (the worker's handle, the loop inside).
- command.py: command tasks (the --allow-commands policy and allow-list, running
  a program inside a task child, exit codes and the stderr tail).
- capture.py: fd-level stdout/stderr capture and `!clear!` chunking.
- records.py: the plain records passed between pool, reporter and agent.
- registry.py: loading the task functions named by `--tasks`.
- context.py: `current_task()`.

This package must stay cheap to import (task modules import it inside the
child), so this file imports only context.py; it never imports the coordinator.
"""

from __future__ import annotations

from .context import TaskContext, current_task

__all__ = ["TaskContext", "current_task"]
