"""The client side of the ``taskgrid`` command: queue, queue-command, status, tail, stop, ...

Arguments are parsed by ``_cli_parse``, turned into public `Scheduler` (and
`JobGraph`) calls, and answered as readable text or, with ``--json``, one
JSON document (``tail --json`` streams one per line). Failures become one line
on stderr and an exit code from `EXIT_CODES`; a traceback is never shown.
docs/cli.md describes every command and exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from . import _cli_format as fmt
from ._channel import ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, TlsConfig
from ._cli_parse import (
    BULK_COMMANDS,
    ROUTED_COMMANDS,
    TARGETED_WORKER_COMMANDS,
    WORKER_COMMANDS,
    command_options,
    parse_args,
    queue_kwargs,
    selector_filters,
    update_fields,
    usage_error,
)
from ._cli_parse import ENV_COORDINATOR as ENV_COORDINATOR  # re-exported: cli's names before
from ._cli_parse import build_parser as build_parser
from ._cli_parse import parse_ref as parse_ref
from .errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    TaskgridError,
    UnauthenticatedError,
    UnavailableError,
    WaitTimeoutError,
)
from .jobgraph import JobGraph, JobTask
from .records import (
    ChangedResult,
    OutputChunk,
    QueueResult,
    TaskRecord,
    TaskStatus,
    UpdateResult,
    WorkerRecord,
)
from .scheduler import Scheduler

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH = 5
#: `taskgrid wait`: how the task ended (COMPLETED is EXIT_OK) ...
EXIT_FAILED = 10
EXIT_TIMEOUT = 11
EXIT_STOPPED = 12
EXIT_EXPIRED = 13
#: ... or that it had not ended when --timeout passed.
EXIT_WAIT_TIMEOUT = 14
EXIT_INTERRUPTED = 130

#: `taskgrid wait`'s exit code for each way a task ends.
WAIT_EXIT_CODES: dict[TaskStatus, int] = {
    TaskStatus.COMPLETED: EXIT_OK,
    TaskStatus.FAILED: EXIT_FAILED,
    TaskStatus.TIMEOUT: EXIT_TIMEOUT,
    TaskStatus.STOPPED: EXIT_STOPPED,
    TaskStatus.EXPIRED: EXIT_EXPIRED,
}

#: Error class -> exit code; the first class the error is an instance of wins.
EXIT_CODES: tuple[tuple[type[TaskgridError], int], ...] = (
    (WaitTimeoutError, EXIT_WAIT_TIMEOUT),
    (NotFoundError, EXIT_NOT_FOUND),
    (InvalidArgumentError, EXIT_INVALID),
    (UnavailableError, EXIT_UNAVAILABLE),
    (UnauthenticatedError, EXIT_AUTH),
    (PermissionDeniedError, EXIT_AUTH),
    (TaskgridError, EXIT_ERROR),
)

#: ANSI "carriage return, erase line": a `clear` chunk rewrites the progress line...
_ERASE_LINE = "\r\x1b[K"
#: ... which is the line above when the text before the chunk ended with a newline.
_ERASE_LINE_ABOVE = "\x1b[A" + _ERASE_LINE
#: Key prefix of the one task's field errors when ``queue --after`` sends a job.
_ONE_TASK_PREFIX = "tasks[0]."

#: Builds the Scheduler: called with the coordinator address, plus token=, tls= and
#: insecure= only when the command line gives them (else Scheduler reads the environment).
SchedulerFactory = Callable[..., Scheduler]


def exit_code_for(error: TaskgridError) -> int:
    """The process exit code for a client error."""
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


# --- commands ------------------------------------------------------------------------------


class _Io:
    """Where a command writes, and in which form."""

    def __init__(self, out: TextIO, err: TextIO, as_json: bool) -> None:
        self.out, self.err, self.as_json = out, err, as_json

    def lines(self, lines: Sequence[str]) -> None:
        for line in lines:
            print(line, file=self.out)

    def document(self, doc: Any) -> None:
        print(fmt.dumps(doc), file=self.out)


def _queue_after(
    s: Scheduler, ns: argparse.Namespace, add: Callable[[JobGraph], JobTask]
) -> QueueResult:
    """Queue one task (added by `add`) that waits for existing tasks: a one-task `JobGraph`.

    Its errors read as a plain queue's: ``tasks[0].timeout`` becomes ``timeout``;
    graph errors (e.g. an unknown prerequisite) keep the coordinator's key.
    """
    job = JobGraph(s)
    handle = add(job)
    for task_id in ns.after:
        job.add_deps(handle, task_id)
    if job.validate() is None:
        errors = {k.removeprefix(_ONE_TASK_PREFIX): v for k, v in job.errors.items()}
        return QueueResult(id=None, uuid=None, errors=errors)
    return QueueResult(id=handle.id, uuid=handle.uuid)


def _cmd_queue(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    if ns.after:
        result = _queue_after(s, ns, lambda job: job.queue_task(ns.function, **queue_kwargs(ns)))
    else:
        result = s.queue_task(ns.function, **queue_kwargs(ns))
    return _answer_queued(result, ns, io)


def _cmd_queue_command(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    argv, env, cwd = command_options(ns)
    kwargs = queue_kwargs(ns)
    if ns.after:
        result = _queue_after(s, ns, lambda job: job.queue_command(argv, env, cwd, **kwargs))
    else:
        result = s.queue_command(argv, env, cwd, **kwargs)
    return _answer_queued(result, ns, io)


def _answer_queued(result: QueueResult, ns: argparse.Namespace, io: _Io) -> int:
    """Print what a queue command got: id and uuid, or one line per field error."""
    if io.as_json:
        doc: dict[str, Any] = dataclasses.asdict(result)
        if ns.after:
            doc["waiting_for"] = ns.after
        io.document(doc)
    elif result.errors:
        for field, message in sorted(result.errors.items()):
            print(f"taskgrid: not queued: {field}: {message}", file=io.err)
    else:
        pairs: list[tuple[str, Any]] = [("id", result.id), ("uuid", result.uuid)]
        if ns.after:
            pairs.append(("waiting for", tuple(ns.after)))
        io.lines(fmt.key_values(pairs))
    return EXIT_INVALID if result.errors else EXIT_OK


def _cmd_status(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    status = s.task_status(ns.ref, output=True)
    if status is None:
        raise NotFoundError(f"task {ns.ref} not found")
    task = status.task
    waiting = s.explain(ns.ref) if task.status is TaskStatus.QUEUED else None
    runs = s.runs(ns.ref) if ns.runs else None
    if io.as_json:
        doc: dict[str, Any] = {"task": task, "run": status.run, "result": status.result,
                               "waiting_reason": waiting, "waiting_for": status.waiting_for}
        if runs is not None:
            doc["runs"] = runs
        io.document(doc)
        return EXIT_OK
    lines = fmt.task_lines(task) if ns.verbose else fmt.summary_lines(task, status.run)
    waits: list[tuple[str, Any]] = []
    if status.waiting_for:
        waits.append(("waiting for", status.waiting_for))
    if waiting:
        waits.append(("waiting", waiting))
    lines += fmt.key_values(waits)
    if status.run is not None and ns.verbose:
        lines += ["latest run:", *fmt.run_lines(status.run, with_output=ns.output)]
    elif status.run is not None and ns.output:
        lines += fmt.output_lines(status.run)
    if runs is not None:
        lines += [f"runs ({len(runs)}):"]
        for run in runs:
            lines += fmt.run_lines(run, with_output=False) + [""]
    io.lines(lines)
    return EXIT_OK


def _cmd_tail(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    task: TaskRecord | None = None
    # Read to the end of the stream rather than stopping at a terminal snapshot: the
    # coordinator ends the stream itself, and the last output can follow the final status.
    if io.as_json:
        for event in s.watch(ns.ref):
            task = event if isinstance(event, TaskRecord) else task
            io.out.write(fmt.ndjson(fmt.event_document(event)) + "\n")
            io.out.flush()
    else:
        task = _tail_text(s.watch(ns.ref), io)
    return EXIT_OK if task is not None and task.status is TaskStatus.COMPLETED else EXIT_ERROR


def _tail_text(events: Iterable[TaskRecord | OutputChunk], io: _Io) -> TaskRecord | None:
    """Print a task's output as it comes, status changes on stderr; its last snapshot.

    On a terminal a ``clear`` chunk (``!clear!``) rewrites the progress line: the
    line being written, or the one above when the text before ended with a newline.
    Elsewhere (a file, a pipe) it starts a new line, so nothing printed is lost.
    """
    tty = io.out.isatty()
    task: TaskRecord | None = None
    attempt: int | None = None
    text = ""  # the current run's output since its last clear
    for event in events:
        if isinstance(event, TaskRecord):
            if task is None or task.status is not event.status:
                print(f"taskgrid: task {event.id} {event.status.value}", file=io.err)
            task = event
            continue
        chunk: OutputChunk = event
        if chunk.attempt != attempt or chunk.clear:
            if tty and chunk.clear and chunk.attempt == attempt and text:
                io.out.write(_ERASE_LINE_ABOVE if text.endswith("\n") else _ERASE_LINE)
            elif text and not text.endswith("\n"):
                io.out.write("\n")
            attempt, text = chunk.attempt, ""
        text += chunk.data
        io.out.write(chunk.data)
        io.out.flush()
    if text and not text.endswith("\n"):
        io.out.write("\n")
    return task


def _cmd_wait(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    record = s.wait(ns.ref, timeout=ns.timeout)
    task, run = record.task, record.run
    code = WAIT_EXIT_CODES.get(task.status, EXIT_ERROR)
    if io.as_json:
        io.document({"task": task, "run": run, "result": record.result, "exit_code": code})
        return code
    lines = fmt.summary_lines(task, run)
    if run is not None:
        lines += fmt.traceback_lines(run)
    io.lines(lines)
    return code


def _cmd_update(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    fields = update_fields(ns)
    result: UpdateResult = s.update_task(ns.ref, **fields)
    if io.as_json:
        io.document({"task": result.task, "errors": result.errors})
    elif result.errors or result.task is None:
        for field, message in sorted(result.errors.items()):
            print(f"taskgrid: not updated: {field}: {message}", file=io.err)
    else:
        task = result.task
        shown = [(name, fmt.retry_delay(task.retry_delay) if name == "retry_delay"
                  else getattr(task, name)) for name in fields]
        io.lines([f"task {task.id} updated:", *fmt.key_values(shown, indent="  ")])
    return EXIT_INVALID if result.errors else EXIT_OK


def _cmd_bulk(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    method, done, _ = BULK_COMMANDS[ns.command]
    kwargs = selector_filters(ns)
    if ns.all:
        kwargs["all"] = True
    if ns.command == "requeue" and ns.keep_counters:
        kwargs["keep_counters"] = True
    result: ChangedResult = getattr(s, method)(*ns.refs, **kwargs)
    if io.as_json:
        io.document({"count": result.count, "task_ids": result.task_ids})
    else:
        io.lines([fmt.changed_line(done, result.count, result.task_ids)])
    return EXIT_OK


def _cmd_stop(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    stopped = s.stop_task(ns.ref)
    task = s.task_status(ns.ref)
    if task is None:
        raise NotFoundError(f"task {ns.ref} not found")
    if io.as_json:
        io.document({"stopped": stopped, "task": task})
    elif stopped:
        io.lines([f"task {task.id}: stop sent (status {task.status.value})"])
    else:
        print(f"taskgrid: task {task.id} not stopped: it is {task.status.value}", file=io.err)
    return EXIT_OK if stopped else EXIT_ERROR


def _cmd_tasks(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    limit: int | None = None if ns.all else ns.limit
    # One row more than shown says whether more exist.
    tasks = s.list_tasks(status=ns.statuses, group_name=ns.group_name,
                         function_name=ns.function_name, task_name=ns.task_name,
                         limit=None if limit is None else limit + 1)
    more = limit is not None and len(tasks) > limit
    tasks = tasks[:limit]
    if io.as_json:
        io.document({"tasks": tasks, "count": len(tasks), "more": more, "limit": limit})
        return EXIT_OK
    io.lines(fmt.table(fmt.TASK_HEADERS, [fmt.task_row(t) for t in tasks]))
    if more:
        print(f"taskgrid: more tasks exist (showing the newest {limit}): use --limit N or "
              "--all", file=io.err)
    return EXIT_OK


def _cmd_workers(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    workers = s.get_workers(include_dead=ns.all)
    if io.as_json:
        io.document(list(workers.values()))
        return EXIT_OK
    now = datetime.now(UTC)
    rows = [fmt.worker_row(w, now) for _, w in sorted(workers.items())]
    io.lines(fmt.table(fmt.WORKER_HEADERS, rows))
    return EXIT_OK


def _cmd_worker_status(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    method = getattr(s, ns.command)
    names: list[str] = method(group_names=ns.group_names, worker_name=ns.worker_name)
    if not names and ns.command in TARGETED_WORKER_COMMANDS:
        _check_target_exists(s, ns)
    if io.as_json:
        io.document({"worker_names": names})
    elif names:
        io.lines(names)
    else:
        print("taskgrid: no worker changed", file=io.err)
    return EXIT_OK


def _check_target_exists(s: Scheduler, ns: argparse.Namespace) -> None:
    """Raise NotFoundError when --worker or --group matches no live worker.

    Called when nothing changed: the target may exist with that status already.
    """
    if ns.worker_name:
        def matches(w: WorkerRecord) -> bool:
            return bool(w.worker_name == ns.worker_name)
        what = f"no live worker named {ns.worker_name!r}"
    elif ns.group_names:
        def matches(w: WorkerRecord) -> bool:
            return bool(set(ns.group_names) & set(w.group_names))
        what = f"no live worker in group {', '.join(ns.group_names)}"
    else:
        return
    if not any(matches(w) for w in s.get_workers().values()):
        raise NotFoundError(what)


_COMMANDS: dict[str, Callable[[Scheduler, argparse.Namespace, _Io], int]] = {
    "queue": _cmd_queue,
    "queue-command": _cmd_queue_command,
    "status": _cmd_status,
    "tail": _cmd_tail,
    "wait": _cmd_wait,
    "stop": _cmd_stop,
    "update": _cmd_update,
    **{name: _cmd_bulk for name in BULK_COMMANDS},
    "tasks": _cmd_tasks,
    "workers": _cmd_workers,
    **{name: _cmd_worker_status for name in WORKER_COMMANDS},
}


def connection_options(ns: argparse.Namespace) -> dict[str, Any]:
    """Scheduler keywords for the security options given on the command line.

    Options not given are left out, so `Scheduler` falls back to the
    environment (``$TASKGRID_TOKEN``, ``$TASKGRID_TLS_*``). Any ``--tls*``
    option turns TLS on; the TLS files it does not name still come from the
    environment.
    """
    options: dict[str, Any] = {}
    if ns.token is not None:
        options["token"] = ns.token
    if ns.tls or ns.tls_ca or ns.tls_cert or ns.tls_key:
        env = os.environ
        options["tls"] = TlsConfig(
            ca=ns.tls_ca or env.get(ENV_TLS_CA) or None,
            cert=ns.tls_cert or env.get(ENV_TLS_CERT) or None,
            key=ns.tls_key or env.get(ENV_TLS_KEY) or None,
        )
    if ns.insecure:
        options["insecure"] = True
    return options


def _auth_message(error: TaskgridError, coordinator: str) -> str:
    """The one line shown for a rejected credential or role (never the token)."""
    if isinstance(error, PermissionDeniedError):
        return f"taskgrid: permission denied: {error}"
    return (f"taskgrid: not authenticated by coordinator {coordinator}: {error} "
            "(give a valid --token or $TASKGRID_TOKEN)")


# --- entry ---------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    scheduler_factory: SchedulerFactory = Scheduler,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one client command and return its exit code.

    Args:
        argv: Arguments after ``taskgrid`` (default: ``sys.argv[1:]``).
        scheduler_factory: Builds the Scheduler from the coordinator address and
            the security options given (tests pass a fake).
        stdout: Where results go (default: ``sys.stdout``).
        stderr: Where messages go (default: ``sys.stderr``).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ROUTED_COMMANDS:
        return _run_routed(args)
    try:
        ns = parse_args(args)
    except SystemExit as exc:  # argparse has printed usage or help already
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        return EXIT_INVALID
    if ns.command in ROUTED_COMMANDS:  # global options came first: they are not its own
        print(f"taskgrid: put {ns.command} first: taskgrid {ns.command} [OPTIONS] (see "
              f"taskgrid {ns.command} --help)", file=err)
        return EXIT_INVALID
    if ns.command == "completion":
        return _completion(ns.shell, out, err)
    problem = usage_error(ns)
    if problem is not None:
        print(f"taskgrid: {problem}", file=err)
        return EXIT_INVALID
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="taskgrid: %(message)s", stream=err)
    io = _Io(out, err, ns.json)
    try:
        try:
            scheduler = scheduler_factory(ns.coordinator, **connection_options(ns))
        except ValueError as exc:  # a malformed address list, unusable security: usage error
            print(f"taskgrid: {exc}", file=err)
            return EXIT_INVALID
        with scheduler:
            return _COMMANDS[ns.command](scheduler, ns, io)
    except UnavailableError as exc:
        print(f"taskgrid: coordinator {ns.coordinator} unavailable: {exc}", file=err)
        return exit_code_for(exc)
    except (UnauthenticatedError, PermissionDeniedError) as exc:
        print(_auth_message(exc, ns.coordinator), file=err)
        return exit_code_for(exc)
    except TaskgridError as exc:
        print(f"taskgrid: {exc}", file=err)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `taskgrid tail 3 | head`); stop quietly.
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:  # a bug: one line for the user, the traceback for debugging
        logger.debug("unexpected error", exc_info=True)
        print(f"taskgrid: unexpected error: {type(exc).__name__}: {exc}", file=err)
        return EXIT_ERROR


def _run_routed(args: list[str]) -> int:
    """``taskgrid coordinator|worker ...`` reached the client CLI: hand it to its program.

    The dispatcher (taskgrid/cli.py) routes these itself; this path serves callers of
    this `main` directly. The dispatcher is imported by name so that the client package
    never imports the coordinator (tests/unit/test_layering.py).
    """
    dispatch = importlib.import_module("taskgrid.cli")
    code: int = dispatch.main(args)
    return code


def _completion(shell: str, out: TextIO, err: TextIO) -> int:
    """Print the completion script of `shell` for every command and option (by shtab)."""
    try:
        shtab = importlib.import_module("shtab")
    except ImportError:
        print("taskgrid: shell completion needs the shtab package: pip install shtab",
              file=err)
        return EXIT_ERROR
    out.write(shtab.complete(build_parser(), shell=shell))
    return EXIT_OK


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
