"""The loop inside each task child process (``python -m taskgrid.worker.child``).

A child is started by runner.Pool as a fresh interpreter in its own process
group, so it inherits no threads, locks or gRPC state from the worker. It
loads the `--tasks` registry once, then serves runs one at a time over its
control connection: for each run it points fds 1 and 2 at its output pipe,
calls the function, restores the fds and answers with the outcome. It never
talks to the coordinator and never decides a status beyond COMPLETED/FAILED:
timeouts and stops are the pool's business (it signals this process group).

Wire messages (pickled tuples over a multiprocessing Connection):
parent -> child: ``("init", spec, sys_path)`` first, then
``("run", task_id, attempt, run_id, uuid, function_name, args, vars)``, or None to exit;
child -> parent: ``("ready", pid)`` or ``("error", traceback)``, then one
``("done", outcome_value, result, traceback)`` per run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from taskgrid.worker.capture import FdRedirect
from taskgrid.worker.context import TaskContext, set_current_task
from taskgrid.worker.registry import TaskFunction, load_tasks
from taskgrid.worker.runner import Outcome

_PR_SET_PDEATHSIG = 1


def run_task(
    tasks: dict[str, TaskFunction], message: tuple[Any, ...], redirect: FdRedirect
) -> tuple[str, str, str | None, str]:
    """Run one task described by a ``("run", ...)`` message; return the ``done`` reply.

    The result is ``json.dumps`` of the return value, so a value JSON cannot
    encode fails the run with the TypeError traceback, as in web2py. Any
    exception, SystemExit included, fails the run with its traceback.
    """
    _, task_id, attempt, run_id, uuid, function_name, args, kwargs = message
    set_current_task(TaskContext(id=task_id, uuid=uuid, run_id=run_id, attempt=attempt))
    try:
        with redirect:
            try:
                function = tasks.get(function_name)
                if function is None:
                    raise NameError(
                        f"name '{function_name}' not found in scheduler's environment"
                    )
                value = function(*json.loads(args or "[]"), **json.loads(kwargs or "{}"))
                if _is_coroutine(value):
                    import asyncio

                    value = asyncio.run(value)
                result = json.dumps(value)
            except BaseException:
                return ("done", Outcome.FAILED.value, None, traceback.format_exc())
    finally:
        set_current_task(None)
    return ("done", Outcome.COMPLETED.value, result, "")


def _is_coroutine(value: object) -> bool:
    return type(value).__name__ == "coroutine" and hasattr(value, "send")


def serve(conn: Connection, tasks: dict[str, TaskFunction], redirect: FdRedirect) -> int:
    """Answer run messages until the parent sends None or goes away; return the exit code."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        if message is None:
            return 0
        reply = run_task(tasks, message, redirect)
        try:
            conn.send(reply)
        except OSError:
            return 0


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child if the worker dies, so no task outlives it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``CONTROL_FD OUTPUT_FD PARENT_PID``; returns the exit code."""
    control_fd, output_fd, parent_pid = (int(value) for value in (argv or sys.argv[1:])[:3])
    _die_with_parent(parent_pid)
    # Subprocesses of a task must inherit fds 1 and 2 only, never these two.
    os.set_inheritable(control_fd, False)
    os.set_inheritable(output_fd, False)
    conn = Connection(control_fd)
    try:
        _, spec, sys_path = conn.recv()
    except (EOFError, OSError):
        return 0
    sys.path[:] = list(sys_path)
    try:
        tasks = load_tasks(spec)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return 1
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # Live output needs each line in the pipe when printed, not at 8 KiB.
            reconfigure(line_buffering=True)
    conn.send(("ready", os.getpid()))
    return serve(conn, tasks, FdRedirect(output_fd))


if __name__ == "__main__":
    code = main()
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except (OSError, ValueError):
            pass
    # os._exit: threads a task left behind must not keep the child alive.
    os._exit(code)
