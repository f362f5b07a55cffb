"""Argument parsing of the client side of the ``taskgrid`` command.

Turns ``argv`` into an ``argparse.Namespace`` (subcommand plus options) and a
queue command's options into queue_task keywords; `taskgrid.client.cli` runs
the command. Parsing judges only the shape of the command line: a value's
meaning (a bad timeout, a JSON text that is not a list) is left to the
coordinator so every client words it the same way.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ._channel import ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, ENV_TOKEN
from .records import TaskStatus
from .scheduler import DEFAULT_TARGET, TaskRef

#: Environment variable naming the coordinator when --coordinator is not given.
ENV_COORDINATOR = "TASKGRID_COORDINATOR"
#: Subcommands that set worker statuses (Scheduler methods of the same name).
WORKER_COMMANDS = ("resume", "disable", "terminate", "kill")


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
        metavar="HOST:PORT[,HOST:PORT...]",
        default=argparse.SUPPRESS,
        help="coordinator address, or several separated by commas (a call goes on to the next "
             "when one is away); a DNS name stands for all its addresses (default: "
             f"${ENV_COORDINATOR} or {DEFAULT_TARGET})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    security = common.add_argument_group("security")
    security.add_argument(
        "--token", metavar="TOKEN", default=argparse.SUPPRESS,
        help=f"bearer token (default: ${ENV_TOKEN}; prefer it: a command line is visible to "
             "other users of this machine)",
    )
    security.add_argument(
        "--tls", action="store_true", default=argparse.SUPPRESS,
        help="use TLS, trusting the system's root CAs (implied by the --tls-* options)",
    )
    tls_files = (
        ("--tls-ca", ENV_TLS_CA, "CA bundle that signed the coordinator's certificate"),
        ("--tls-cert", ENV_TLS_CERT, "client certificate, for a coordinator requiring one"),
        ("--tls-key", ENV_TLS_KEY, "private key of --tls-cert"),
    )
    for flag, env, what in tls_files:
        security.add_argument(flag, metavar="PEM", default=argparse.SUPPRESS,
                              help=f"{what} (default: ${env}); implies TLS")
    security.add_argument(
        "--insecure", action="store_true", default=argparse.SUPPRESS,
        help="allow sending the token in plain text to a coordinator on another machine",
    )
    return common  # fmt: skip


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def _add_queue(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "queue", parents=[common], help="queue a task",
        description="Queue one task. Unset options take the coordinator's defaults (web2py's).",
    )  # fmt: skip
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("args", metavar="ARGS_JSON", nargs="?", help="JSON list of positional args")
    p.add_argument("--vars", metavar="JSON", help="JSON object of keyword args")
    _add_task_options(p)


def _add_queue_command(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "queue-command", parents=[common], help="queue a command task (a program to run)",
        usage="taskgrid queue-command [OPTIONS] [--env NAME=VALUE ...] [--cwd DIR] "
              "-- EXECUTABLE [ARGS ...]",
        description="Queue a command task: a worker started with --allow-commands runs "
                    "EXECUTABLE with ARGS (exit 0 = COMPLETED, else FAILED with the exit "
                    "code and the end of stderr). Put -- before the command so that its "
                    "options are not taken for taskgrid's.",
    )  # fmt: skip
    p.add_argument("argv", nargs="+", metavar="EXECUTABLE [ARGS ...]",
                   help="the program (a path, or a name looked up in the worker's PATH) "
                        "and its arguments, passed as they are (no shell)")
    p.add_argument("--env", dest="env", action="append", type=_env_pair, metavar="NAME=VALUE",
                   help="add a variable to the worker's environment (repeatable)")
    p.add_argument("--cwd", metavar="DIR", help="working directory (default: the worker's)")
    _add_task_options(p)


def _add_task_options(p: argparse.ArgumentParser) -> None:
    """The task fields `queue` and `queue-command` share."""
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
    _add_queue_command(sub, common)
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
    for name in WORKER_COMMANDS:
        p = sub.add_parser(name, parents=[common], help=f"{name} workers (default: all)")
        p.add_argument("--group", dest="group_names", action="append", metavar="G")
        p.add_argument("--worker", dest="worker_name", metavar="NAME")
    return parser


#: Global options given SUPPRESS (so a subcommand's absent one keeps an earlier value).
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "json": False, "token": None, "tls": False, "tls_ca": None, "tls_cert": None,
    "tls_key": None, "insecure": False,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` and fill the global options' defaults (exits on bad usage)."""
    ns = build_parser().parse_args(list(argv))
    if not hasattr(ns, "coordinator"):
        ns.coordinator = os.environ.get(ENV_COORDINATOR) or DEFAULT_TARGET
    for name, default in _GLOBAL_DEFAULTS.items():
        if not hasattr(ns, name):
            setattr(ns, name, default)
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
    return {k: getattr(ns, k) for k in _QUEUE_FIELDS if getattr(ns, k, None) is not None}


def command_options(ns: argparse.Namespace) -> tuple[list[str], dict[str, str] | None, str | None]:
    """``queue-command``'s (argv, env, cwd), as `Scheduler.queue_command` takes them."""
    env = dict(ns.env) if ns.env else None
    return list(ns.argv), env, ns.cwd
