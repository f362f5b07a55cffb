"""The client side of the ``taskgrid`` command: queue, status, tail, stop, workers, ...

Arguments are parsed with argparse, turned into public `Scheduler` calls, and
answered as readable text or, with ``--json``, one JSON document. Failures
become one line on stderr and an exit code from `EXIT_CODES`; a traceback is
never shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from . import _cli_format as fmt
from .errors import (
    InvalidArgumentError,
    NotFoundError,
    TaskgridError,
    UnavailableError,
)
from .jobgraph import JobGraph
from .records import OutputChunk, QueueResult, TaskRecord, TaskStatus
from .scheduler import DEFAULT_TARGET, Scheduler, TaskRef

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "TASKGRID_COORDINATOR"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

#: Error class -> exit code; the first class the error is an instance of wins.
EXIT_CODES: tuple[tuple[type[TaskgridError], int], ...] = (
    (NotFoundError, EXIT_NOT_FOUND),
    (InvalidArgumentError, EXIT_INVALID),
    (UnavailableError, EXIT_UNAVAILABLE),
    (TaskgridError, EXIT_ERROR),
)

#: ANSI "clear screen, cursor home": how a terminal shows a `clear` output chunk.
_CLEAR_SCREEN = "\x1b[2J\x1b[H"
#: Key prefix of the one task's field errors when ``queue --after`` sends a job.
_ONE_TASK_PREFIX = "tasks[0]."
_WORKER_COMMANDS = ("resume", "disable", "terminate", "kill")

SchedulerFactory = Callable[[str], Scheduler]


def exit_code_for(error: TaskgridError) -> int:
    """The process exit code for a client error."""
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


# --- parsing -------------------------------------------------------------------------------


def _iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date and time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_ref(text: str) -> TaskRef:
    """A task reference from the command line: digits are an id, anything else a uuid."""
    return int(text) if text.isdigit() else text


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's absent option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help=f"coordinator address (default: ${ENV_COORDINATOR} or {DEFAULT_TARGET})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    return common


def _add_queue(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "queue", parents=[common], help="queue a task",
        description="Queue one task. Unset options take the coordinator's defaults (web2py's).",
    )  # fmt: skip
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("args", metavar="ARGS_JSON", nargs="?", help="JSON list of positional args")
    p.add_argument("--vars", metavar="JSON", help="JSON object of keyword args")
    p.add_argument("--timeout", type=int, metavar="S", help="seconds a run may last (60)")
    p.add_argument("--group", dest="group_name", metavar="G", help="worker group (main)")
    p.add_argument("--uuid", metavar="U", help="unique name (default: generated)")
    p.add_argument("--task-name", dest="task_name", metavar="N", help="label (the function)")
    p.add_argument("--sync-output", dest="sync_output", type=int, metavar="S",
                   help="seconds between partial-output refreshes (0: about 1 s)")
    p.add_argument("--disabled", dest="enabled", action="store_false", default=None,
                   help="queue it disabled: never leased until enabled")
    p.add_argument("--discard-results", dest="discard_results", action="store_true",
                   default=None, help="keep no run records")
    when = p.add_argument_group("scheduling")
    when.add_argument("--start-time", dest="start_time", type=_iso_datetime, metavar="ISO",
                      help="not due before this time (naive times are UTC)")
    when.add_argument("--stop-time", dest="stop_time", type=_iso_datetime, metavar="ISO",
                      help="expire, unrun, past this time")
    when.add_argument("--repeats", type=int, metavar="N",
                      help="successful runs wanted (1); 0 = until stop time or failure")
    when.add_argument("--period", type=int, metavar="S", help="seconds between runs (60)")
    when.add_argument("--prevent-drift", dest="prevent_drift", action="store_true",
                      default=None, help="keep runs on a grid anchored at the start time")
    when.add_argument("--cronline", metavar="LINE", help="cron schedule, e.g. '*/5 * * * *'")
    when.add_argument("--retry-failed", dest="retry_failed", type=int, metavar="N",
                      help="retries after a failure (0); -1 = unlimited")
    when.add_argument("--retry-delay", dest="retry_delay", type=float, metavar="S",
                      help="seconds from a failure to its retry (default: one period "
                           "after the failed run started)")
    when.add_argument("--retry-backoff", dest="retry_backoff", type=float, metavar="F",
                      help="multiply the retry delay by F per further failure (1)")
    when.add_argument("--retry-delay-max", dest="retry_delay_max", type=float, metavar="S",
                      help="cap on the grown retry delay (no cap)")
    when.add_argument("--retry-jitter", dest="retry_jitter", type=float, metavar="F",
                      help="spread each retry delay by +/- this fraction, 0..1 (0)")
    when.add_argument("--priority", type=int, metavar="N", help="higher runs first (0)")
    when.add_argument("--broadcast", action="store_true", default=None,
                      help="run once on every ACTIVE worker of the group, each period")
    when.add_argument("--immediate", action="store_true", default=None,
                      help="wake idle workers now (accepted; leasing is always immediate)")
    when.add_argument("--after", dest="after", action="append", type=int, metavar="ID",
                      help="wait until task ID is COMPLETED for good (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The ``taskgrid`` client parser (the coordinator and worker have their own)."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="taskgrid",
        parents=[common],
        description="Queue and inspect tasks, and command workers, on a taskgrid coordinator.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_queue(sub, common)
    p = sub.add_parser("status", parents=[common], help="show a task and its latest run")
    p.add_argument("ref", type=parse_ref, metavar="REF", help="task id or uuid")
    p.add_argument("--output", action="store_true", help="include the latest run's output")
    p.add_argument("--runs", action="store_true", help="list every run")
    p = sub.add_parser("tail", parents=[common], help="follow a task's output until it ends")
    p.add_argument("ref", type=parse_ref, metavar="REF")
    p = sub.add_parser("stop", parents=[common], help="stop a task")
    p.add_argument("ref", type=parse_ref, metavar="REF")
    p = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    p.add_argument("--status", dest="statuses", action="append", type=str.upper,
                   choices=[s.value for s in TaskStatus], metavar="STATUS")
    p.add_argument("--group", dest="group_name", metavar="G")
    p.add_argument("--function", dest="function_name", metavar="F")
    p.add_argument("--task-name", dest="task_name", metavar="N")
    p.add_argument("--limit", type=int, default=100, metavar="N")
    p = sub.add_parser("workers", parents=[common], help="list workers")
    p.add_argument("--all", action="store_true", help="include dead workers")
    for name in _WORKER_COMMANDS:
        p = sub.add_parser(name, parents=[common], help=f"{name} workers (default: all)")
        p.add_argument("--group", dest="group_names", action="append", metavar="G")
        p.add_argument("--worker", dest="worker_name", metavar="NAME")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` and fill the global options' defaults (exits on bad usage)."""
    ns = build_parser().parse_args(list(argv))
    if not hasattr(ns, "coordinator"):
        ns.coordinator = os.environ.get(ENV_COORDINATOR) or DEFAULT_TARGET
    if not hasattr(ns, "json"):
        ns.json = False
    return ns


_QUEUE_FIELDS = (
    "args", "vars", "timeout", "repeats", "period", "retry_failed", "group_name", "uuid",
    "task_name", "sync_output", "priority", "start_time", "stop_time", "prevent_drift",
    "cronline", "enabled", "discard_results", "retry_delay", "retry_backoff",
    "retry_delay_max", "retry_jitter", "broadcast", "immediate",
)


def queue_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """The queue_task keywords for the options given (JSON texts pass through unparsed).

    ARGS_JSON and ``--vars`` go as ``args=``/``vars=`` strings so that the
    coordinator, not the CLI, judges them and words any error.
    """
    return {k: getattr(ns, k) for k in _QUEUE_FIELDS if getattr(ns, k) is not None}


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


def _queue_after(s: Scheduler, ns: argparse.Namespace) -> QueueResult:
    """Queue one task that waits for existing tasks: a one-task `JobGraph`.

    Its errors read as a plain queue's: ``tasks[0].timeout`` becomes ``timeout``;
    graph errors (e.g. an unknown prerequisite) keep the coordinator's key.
    """
    job = JobGraph(s)
    handle = job.queue_task(ns.function, **queue_kwargs(ns))
    for task_id in ns.after:
        job.add_deps(handle, task_id)
    if job.validate() is None:
        errors = {k.removeprefix(_ONE_TASK_PREFIX): v for k, v in job.errors.items()}
        return QueueResult(id=None, uuid=None, errors=errors)
    return QueueResult(id=handle.id, uuid=handle.uuid)


def _cmd_queue(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    if ns.after:
        result = _queue_after(s, ns)
    else:
        result = s.queue_task(ns.function, **queue_kwargs(ns))
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
    lines = fmt.task_lines(task)
    if status.waiting_for:
        lines += fmt.key_values([("waiting for", status.waiting_for)])
    if waiting:
        lines += fmt.key_values([("waiting", waiting)])
    if status.run is not None:
        lines += ["latest run:", *fmt.run_lines(status.run, with_output=ns.output)]
    if runs is not None:
        lines += [f"runs ({len(runs)}):"]
        for run in runs:
            lines += fmt.run_lines(run, with_output=False) + [""]
    io.lines(lines)
    return EXIT_OK


def _cmd_tail(s: Scheduler, ns: argparse.Namespace, io: _Io) -> int:
    tty = not io.as_json and io.out.isatty()
    task: TaskRecord | None = None
    attempt: int | None = None
    text = ""  # the current run's output as a terminal would hold it
    # Read to the end of the stream rather than stopping at a terminal snapshot: the
    # coordinator ends the stream itself, and the last output can follow the final status.
    for event in s.watch(ns.ref):
        if isinstance(event, TaskRecord):
            if not io.as_json and (task is None or task.status is not event.status):
                print(f"taskgrid: task {event.id} {event.status.value}", file=io.err)
            task = event
            continue
        chunk: OutputChunk = event
        if chunk.attempt != attempt or chunk.clear:
            if not io.as_json:
                if tty and chunk.clear:
                    io.out.write(_CLEAR_SCREEN)
                elif text and not text.endswith("\n"):
                    io.out.write("\n")
            attempt, text = chunk.attempt, ""
        text += chunk.data
        if not io.as_json:
            io.out.write(chunk.data)
            io.out.flush()
    if io.as_json:
        io.document({"task": task, "output": text})
    elif text and not text.endswith("\n"):
        io.out.write("\n")
    return EXIT_OK if task is not None and task.status is TaskStatus.COMPLETED else EXIT_ERROR


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
    tasks = s.list_tasks(status=ns.statuses, group_name=ns.group_name,
                         function_name=ns.function_name, task_name=ns.task_name, limit=ns.limit)
    if io.as_json:
        io.document(tasks)
    else:
        io.lines(fmt.table(fmt.TASK_HEADERS, [fmt.task_row(t) for t in tasks]))
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
    if io.as_json:
        io.document({"worker_names": names})
    elif names:
        io.lines(names)
    else:
        print("taskgrid: no worker changed", file=io.err)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[Scheduler, argparse.Namespace, _Io], int]] = {
    "queue": _cmd_queue,
    "status": _cmd_status,
    "tail": _cmd_tail,
    "stop": _cmd_stop,
    "tasks": _cmd_tasks,
    "workers": _cmd_workers,
    **{name: _cmd_worker_status for name in _WORKER_COMMANDS},
}


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
        scheduler_factory: Builds the Scheduler from the coordinator address
            (tests pass a fake).
        stdout: Where results go (default: ``sys.stdout``).
        stderr: Where messages go (default: ``sys.stderr``).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        ns = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse has printed usage or help already
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        return EXIT_INVALID
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="taskgrid: %(message)s", stream=err)
    io = _Io(out, err, ns.json)
    try:
        with scheduler_factory(ns.coordinator) as scheduler:
            return _COMMANDS[ns.command](scheduler, ns, io)
    except UnavailableError as exc:
        print(f"taskgrid: coordinator {ns.coordinator} unavailable: {exc}", file=err)
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


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
