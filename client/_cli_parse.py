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
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._channel import ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, ENV_TOKEN
from .records import TaskStatus
from .scheduler import DEFAULT_TARGET, TaskRef

#: Tasks `taskgrid tasks` shows unless --limit or --all says otherwise.
DEFAULT_TASKS_LIMIT = 100
#: Environment variable naming the coordinator when --coordinator is not given.
ENV_COORDINATOR = "TASKGRID_COORDINATOR"
#: Subcommands that set worker statuses (Scheduler methods of the same name).
WORKER_COMMANDS = ("resume", "disable", "terminate", "kill")
#: Worker commands that need a target: --group, --worker, or --all for every worker.
TARGETED_WORKER_COMMANDS = ("disable", "terminate", "kill")
#: Subcommands run by other programs (taskgrid/cli.py routes them) -> their one-line help.
ROUTED_COMMANDS = {
    "coordinator": "serve the gRPC API over a database (taskgrid coordinator --help)",
    "worker": "run tasks leased from a coordinator (taskgrid worker --help)",
    "dashboard": "serve the web dashboard of a coordinator (taskgrid dashboard --help)",
}
#: Subcommands that change tasks chosen by REFs or by filters -> (Scheduler method, what
#: the answer says was done, one-line help).
BULK_COMMANDS = {
    "requeue": ("requeue", "requeued", "queue ended tasks again"),
    "enable-task": ("enable_tasks", "enabled", "enable tasks (leased again)"),
    "disable-task": ("disable_tasks", "disabled", "disable tasks (never leased until enabled)"),
    "delete": ("delete_tasks", "deleted", "delete tasks and their runs"),
}
#: Shells `taskgrid completion` writes a script for.
COMPLETION_SHELLS = ("bash", "zsh")
#: Words that reset an `update` field to its default (the library's None).
UNSET_WORDS = ("unset", "none", "default")


def _iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date and time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """A span like ``90``, ``45s``, ``30m``, ``12h``, ``7d`` or ``2w`` (bare numbers: seconds)."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90, 45s, 30m, 12h, 7d, 2w)")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def _or_unset(convert: Any) -> Any:
    """An argparse type: `convert`, or None for a word of `UNSET_WORDS` (reset the field)."""

    def parse(text: str) -> Any:
        return None if text.lower() in UNSET_WORDS else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return parse


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


class _VersionAction(argparse.Action):
    """``--version``: print the installed package's version and exit (looked up only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(f"{parser.prog} {package_version()}\n")
        parser.exit()


def package_version() -> str:
    """The version of the distribution that installed ``taskgrid`` (its name may change).

    Falls back to ``taskgrid.__version__`` when the package runs from a source tree
    that was never installed.
    """
    from importlib import metadata

    top = __name__.split(".", 1)[0]  # "taskgrid"
    names = metadata.packages_distributions().get(top, []) + [top]
    for name in dict.fromkeys(names):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import taskgrid

    return str(getattr(taskgrid, "__version__", "unknown"))


def _add_selector(p: argparse.ArgumentParser, verb: str, finished: bool) -> None:
    """REFs and the filters of the bulk task commands (requeue, enable-task, ...).

    ``finished``: the command takes ended tasks, so ``--finished-before`` and
    ``--older-than`` apply.
    """
    p.add_argument("refs", nargs="*", type=parse_ref, metavar="REF",
                   help=f"task ids or uuids to {verb}")
    chosen = p.add_argument_group(
        "filters", "instead of REFs, choose tasks by filter (needs the admin role); "
                   "several filters must all match")
    chosen.add_argument("--status", dest="statuses", action="append", type=str.upper,
                        choices=[s.value for s in TaskStatus], metavar="STATUS",
                        help="only tasks in this status (repeatable)")
    chosen.add_argument("--group", dest="group_name", metavar="G", help="only this group")
    chosen.add_argument("--function", dest="function_name", metavar="F",
                        help="only this function")
    chosen.add_argument("--name", "--task-name", dest="task_name", metavar="N",
                        help="only this task name")
    if finished:
        _add_finished_filters(chosen.add_mutually_exclusive_group())
    chosen.add_argument("--all", dest="all", action="store_true",
                        help=f"{verb} every task the filters allow (required with no REF "
                             "and no filter)")


def _add_finished_filters(before: Any) -> None:
    before.add_argument("--finished-before", dest="finished_before", type=_iso_datetime,
                        metavar="ISO", help="only tasks that ended before this time")
    before.add_argument("--older-than", dest="older_than", type=parse_duration,
                        metavar="SPAN", help="only tasks that ended longer ago than this "
                                             "(e.g. 7d, 12h, 30m)")


def _add_update(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "update", parents=[common], help="change fields of a task",
        description="Change the scheduling fields of one task. Only the options given are "
                    "sent; the value 'unset' (or 'none') resets a field to its default.",
    )  # fmt: skip
    p.add_argument("ref", type=parse_ref, metavar="REF", help="task id or uuid")
    sup = argparse.SUPPRESS
    when = p.add_argument_group("fields")
    for flag, convert, metavar, what in (
        ("--start-time", _iso_datetime, "ISO", "not due before this time (naive: UTC)"),
        ("--next-run-time", _iso_datetime, "ISO", "when it is next due"),
        ("--stop-time", _iso_datetime, "ISO|none", "expire, unrun, past this time"),
        ("--priority", int, "N", "higher runs first"),
        ("--repeats", int, "N", "successful runs wanted; 0 = unlimited"),
        ("--period", int, "S", "seconds between runs"),
        ("--timeout", int, "S", "seconds a run may last"),
        ("--retry-failed", int, "N", "retries after a failure; -1 = unlimited"),
        ("--retry-delay", float, "S|unset", "seconds from a failure to its retry "
                                            "(unset: one period after the run started)"),
        ("--retry-backoff", float, "F", "multiply the retry delay by F per failure"),
        ("--retry-delay-max", float, "S", "cap on the grown retry delay"),
        ("--retry-jitter", float, "F", "spread each retry delay by +/- F, 0..1"),
    ):
        dest = flag.removeprefix("--").replace("-", "_")
        when.add_argument(flag, dest=dest, type=_or_unset(convert), metavar=metavar,
                          default=sup, help=what)
    when.add_argument("--prevent-drift", dest="prevent_drift",
                      action=argparse.BooleanOptionalAction, default=sup,
                      help="keep runs on a grid anchored at the start time")


def build_parser() -> argparse.ArgumentParser:
    """The ``taskgrid`` client parser (the coordinator and worker have their own)."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="taskgrid",
        parents=[common],
        description="Queue and inspect tasks, and command workers, on a taskgrid coordinator.",
        epilog="Run 'taskgrid COMMAND --help' for a command's options (docs/cli.md).",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the taskgrid version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, what in ROUTED_COMMANDS.items():
        # Listed here for --help; taskgrid/cli.py hands them to their own programs.
        p = sub.add_parser(name, help=what, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER)
    _add_queue(sub, common)
    _add_queue_command(sub, common)
    p = sub.add_parser("status", parents=[common], help="show a task and its latest run")
    p.add_argument("ref", type=parse_ref, metavar="REF", help="task id or uuid")
    p.add_argument("--output", action="store_true", help="include the latest run's output")
    p.add_argument("--runs", action="store_true", help="list every run")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every field of the task (attempt, uuid, retry settings, ...) and "
                        "its latest run")
    p = sub.add_parser("tail", parents=[common], help="follow a task's output until it ends",
                       description="Follow a task's output until it ends. With --json, one "
                                   "JSON object per line (NDJSON): status snapshots and "
                                   "output chunks.")
    p.add_argument("ref", type=parse_ref, metavar="REF")
    p = sub.add_parser("wait", parents=[common], help="wait for a task to end; exit by outcome",
                       description="Wait until a task ends, then print its final status and "
                                   "result (or traceback). Exit 0 COMPLETED, 10 FAILED, "
                                   "11 TIMEOUT, 12 STOPPED, 13 EXPIRED, 14 still not ended "
                                   "after --timeout.")
    p.add_argument("ref", type=parse_ref, metavar="REF")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds "
                                                              "(default: wait for ever)")
    p = sub.add_parser("stop", parents=[common], help="stop a task")
    p.add_argument("ref", type=parse_ref, metavar="REF")
    p = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    p.add_argument("--status", dest="statuses", action="append", type=str.upper,
                   choices=[s.value for s in TaskStatus], metavar="STATUS")
    p.add_argument("--group", dest="group_name", metavar="G")
    p.add_argument("--function", dest="function_name", metavar="F")
    p.add_argument("--task-name", "--name", dest="task_name", metavar="N")
    count = p.add_mutually_exclusive_group()
    count.add_argument("--limit", type=int, default=DEFAULT_TASKS_LIMIT, metavar="N",
                       help=f"show at most N tasks (default {DEFAULT_TASKS_LIMIT}); says so "
                            "when more exist")
    count.add_argument("--all", action="store_true", help="page through every task")
    _add_update(sub, common)
    for name, (_, _, what) in BULK_COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=what,
                           description=f"{what[0].upper()}{what[1:]}: the REFs given, or "
                                       "every task matching the filters.")
        _add_selector(p, name.removesuffix("-task"), finished=name in ("requeue", "delete"))
        if name == "requeue":
            p.add_argument("--keep-counters", dest="keep_counters", action="store_true",
                           help="keep times_run and times_failed (default: reset to 0)")
    p = sub.add_parser("workers", parents=[common], help="list workers")
    p.add_argument("--all", action="store_true", help="include dead workers")
    for name in WORKER_COMMANDS:
        needs = "needs --group, --worker or --all" if name in TARGETED_WORKER_COMMANDS \
            else "default: all"
        p = sub.add_parser(name, parents=[common], help=f"{name} workers ({needs})")
        p.add_argument("--group", dest="group_names", action="append", metavar="G")
        p.add_argument("--worker", dest="worker_name", metavar="NAME")
        p.add_argument("--all", dest="all", action="store_true", help="every worker")
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh)",
                       description="Print a completion script: e.g. "
                                   "'taskgrid completion bash > ~/.local/share/"
                                   "bash-completion/completions/taskgrid', or "
                                   "'taskgrid completion zsh > \"${fpath[1]}/_taskgrid\"'.")
    p.add_argument("shell", choices=COMPLETION_SHELLS)
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


#: `update` options -> the Scheduler.update_task field each sets.
UPDATE_FIELDS = (
    "start_time", "next_run_time", "stop_time", "priority", "repeats", "period",
    "prevent_drift", "timeout", "retry_failed", "retry_delay", "retry_backoff",
    "retry_delay_max", "retry_jitter",
)


def update_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The fields ``update`` was given (None: reset to the default), and only those."""
    return {k: getattr(ns, k) for k in UPDATE_FIELDS if hasattr(ns, k)}


def selector_filters(ns: argparse.Namespace, now: datetime | None = None) -> dict[str, Any]:
    """The filter keywords of a bulk task command, only those given (``--older-than`` as a time).

    Args:
        ns: The parsed command line.
        now: The moment ``--older-than`` counts back from (default: now).
    """
    filters: dict[str, Any] = {}
    for name in ("statuses", "group_name", "function_name", "task_name", "finished_before"):
        value = getattr(ns, name, None)
        if value:
            filters["status" if name == "statuses" else name] = value
    if getattr(ns, "older_than", None) is not None:
        filters["finished_before"] = (now or datetime.now(UTC)) - ns.older_than
    return filters


def usage_error(ns: argparse.Namespace) -> str | None:
    """What is wrong with a well-formed command line that must not reach the coordinator.

    Returns None when the command may run; else a one-line message (exit EXIT_INVALID).
    """
    if ns.command in WORKER_COMMANDS:
        targeted = bool(ns.group_names or ns.worker_name)
        if ns.all and targeted:
            return f"{ns.command}: give --all or --group/--worker, not both"
        if not targeted and not ns.all and ns.command in TARGETED_WORKER_COMMANDS:
            return (f"{ns.command} would reach every worker: give --group G, --worker NAME, "
                    "or --all")
    if ns.command in BULK_COMMANDS:
        filtered = bool(selector_filters(ns))
        if ns.refs and (filtered or ns.all):
            return f"{ns.command}: give task REFs or filters (or --all), not both"
        if not ns.refs and not filtered and not ns.all:
            return (f"{ns.command} needs task REFs, a filter (--status, --group, --function, "
                    "--name, ...) or --all")
    if ns.command == "update" and not update_fields(ns):
        return "update: nothing to change (give at least one field option, e.g. --priority N)"
    if ns.command == "wait" and ns.timeout is not None and not ns.timeout >= 0:  # NaN too
        return "wait: --timeout must be a number of seconds >= 0"
    if ns.command == "tasks" and ns.limit < 1:
        return "tasks: --limit must be at least 1 (or give --all)"
    return None
