"""`taskgrid worker`: command-line flags -> registry check -> Agent.

The only place in taskgrid.worker that configures logging or installs
signal handlers. A first SIGTERM or SIGINT drains the worker like the
TERMINATE command: no more leases, running tasks finish and are reported,
exit 0 (so a deploy does not turn running tasks into STOPPED ones). A second
one acts like KILL: running tasks are stopped (SIGTERM to each task's process
group, SIGKILL after --kill-grace), reported STOPPED, exit 0, so no task
process is left behind.

--coordinator takes one address or several (A,B or a DNS name with several
records); a malformed list (an empty entry, no port) ends the worker with
exit code 2 before it starts.

Every flag can also be set by TASKGRID_<FLAG> in the environment (--coordinator by
TASKGRID_COORDINATOR, like the client CLI) or in the [worker] table of a --config TOML
file: command line > environment > config file > defaults (taskgrid/settings.py,
docs/configuration.md). --log-format json writes one JSON object per log line
(taskgrid/logs.py).

Security flags (--token, --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name,
--insecure)
fall back to TASKGRID_TOKEN and TASKGRID_TLS_{CA,CERT,KEY}; unusable ones
(a token bound for another machine in plain text, a certificate without its
key, an unreadable file) end the worker with exit code 2 before it starts.
A coordinator that keeps rejecting the token ends it with exit code 5.

Command tasks are opt-in. A command task names any program, and the worker
would run it with its own user, files, network access and environment, so
anyone allowed to queue tasks could run anything on this machine. A worker
therefore runs none, and does not even declare the ``command`` capability,
unless started with --allow-commands; --allow-executable (repeatable,
implies --allow-commands) narrows it to the listed programs. With commands
allowed, --tasks may be left out: the worker then runs command tasks only.
A worker that could run nothing (no --tasks, commands not allowed) refuses to
start: one line on stderr, exit code 2.

The flags shared with the Go worker (worker/go) have the same names, meanings
and defaults; tests/integration/test_worker_ergonomics.py compares the two
--help outputs.
"""

from __future__ import annotations

# taskgrid.logs first: it sets GRPC_VERBOSITY before anything loads grpc
from taskgrid import logs

# isort: split
import argparse
import logging
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

from taskgrid import settings

from .agent import (
    DEFAULT_COORDINATOR,
    DEFAULT_GROUP,
    DEFAULT_HEARTBEAT,
    Agent,
    AgentConfig,
)
from .channel import (
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_TOKEN,
    load_security,
)
from .command import policy_from_flags
from .registry import RegistryError, load_tasks
from .runner import DEFAULT_KILL_GRACE_S, PoolError

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 1
DEFAULT_LOG_LEVEL = logs.DEFAULT_LEVEL
EXIT_USAGE = 2
COMMANDS_HELP = """\
command tasks:
  A command task runs a program (executable, args, env, cwd) instead of a
  function. The worker runs it with its own user, files, network access and
  environment: once commands are allowed, anyone who may queue tasks on the
  coordinator can run any program here. So commands are off unless
  --allow-commands is given, and --allow-executable limits them to the
  listed programs (compared as absolute paths; names are looked up in PATH).
  A command gets TASKGRID_TASK_ID, TASKGRID_TASK_UUID, TASKGRID_RUN_ID and
  TASKGRID_ATTEMPT in its environment; it never inherits TASKGRID_TOKEN.
"""


def build_parser() -> argparse.ArgumentParser:
    """The flags of `taskgrid worker`."""
    parser = argparse.ArgumentParser(
        prog="taskgrid worker",
        description="Run tasks leased from a taskgrid coordinator in child processes.",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", default=None, metavar="MODULE_OR_FILE",
                        help="module name or .py file whose `tasks` dict, or else public "
                             "top-level functions, are the functions this worker runs "
                             "(required unless commands are allowed)")
    parser.add_argument("--coordinator", default=DEFAULT_COORDINATOR,
                        metavar="HOST:PORT[,HOST:PORT...]",
                        help="coordinator address, or several separated by commas; a DNS name "
                             "stands for all its addresses, and the worker moves to the next "
                             f"one when its coordinator is away (default {DEFAULT_COORDINATOR})")
    parser.add_argument("--group", action="append", dest="groups", metavar="G",
                        help=f"group to take tasks from; repeatable (default {DEFAULT_GROUP})")
    parser.add_argument("--name", default=None, metavar="N",
                        help="unique worker name (default hostname#pid)")
    parser.add_argument("--heartbeat", type=_positive_float, default=DEFAULT_HEARTBEAT,
                        metavar="SECONDS", help="seconds between heartbeats (default 3.0)")
    parser.add_argument("--max-empty-runs", type=_non_negative_int, default=0, metavar="N",
                        help="exit after N consecutive empty lease calls while idle "
                             "(default 0: never)")
    parser.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY,
                        metavar="N", help="tasks run at once, one child process each (default 1)")
    parser.add_argument("--kill-grace", type=_non_negative_float, default=DEFAULT_KILL_GRACE_S,
                        metavar="SECONDS",
                        help="seconds between SIGTERM and SIGKILL on timeout or stop (default 5.0)")
    parser.add_argument("--tracing", action="store_true",
                        help="an OpenTelemetry span around each run, continuing the trace of "
                             "the call that queued it (the tracing extra; docs/tracing.md)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (port 0 = "
                             "any free; docs/metrics.md)")
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, type=str.upper,
                        choices=logs.LEVELS, help="logging level (default INFO)")
    parser.add_argument("--log-format", default=logs.DEFAULT_FORMAT, choices=logs.FORMATS,
                        help="log lines on stderr: text, or one JSON object per line "
                             "(default text)")
    settings.add_config_flag(parser)
    commands = parser.add_argument_group("command tasks (off by default, see below)")
    commands.add_argument("--allow-commands", action="store_true",
                          help="run command tasks: any program, as this worker's user")
    commands.add_argument("--allow-executable", action="append", dest="executables",
                          default=[], metavar="PATH",
                          help="run command tasks of this program only (a path, or a name "
                               "looked up in PATH now); repeatable; implies --allow-commands")
    security = parser.add_argument_group("security")
    security.add_argument("--token", default=None, metavar="TOKEN",
                          help=f"bearer token of role worker (default ${ENV_TOKEN}; prefer "
                               "it: a command line is visible to other users)")
    security.add_argument("--tls", action="store_true",
                          help="use TLS, trusting the system's root CAs (implied by --tls-*)")
    security.add_argument("--tls-ca", default=None, metavar="PEM",
                          help=f"CA bundle that signed the coordinator (default ${ENV_TLS_CA})")
    security.add_argument("--tls-cert", default=None, metavar="PEM",
                          help=f"client certificate for mTLS (default ${ENV_TLS_CERT})")
    security.add_argument("--tls-key", default=None, metavar="PEM",
                          help=f"private key of --tls-cert (default ${ENV_TLS_KEY})")
    security.add_argument("--tls-server-name", default=None, metavar="NAME",
                          help="name to check the coordinator's certificate against instead of "
                               "the host dialed (implies --tls)")
    security.add_argument("--insecure", action="store_true",
                          help="allow sending the token in plain text to another machine")
    return parser  # fmt: skip


def _at_least(kind: Callable[[str], float], minimum: float, strict: bool = False
              ) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` >= minimum (> minimum when strict)."""
    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if strict else 'at least'} {minimum}")
        return value
    return parse


_positive_float = _at_least(float, 0, strict=True)
_non_negative_float = _at_least(float, 0)
_positive_int = _at_least(int, 1)
_non_negative_int = _at_least(int, 0)


def _install_signal_handlers(agent: Agent) -> None:
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            logger.info("signal %s received: finishing running tasks, then leaving "
                        "(send it again to stop them now)", name)
            agent.request_drain()
        else:
            logger.info("signal %s received again: stopping tasks and leaving", name)
            agent.request_exit()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    """Run `taskgrid worker` with `argv` (default sys.argv[1:]); return the exit code.

    The TASKGRID_... environment and the --config file fill in flags not given.
    """
    parser = build_parser()
    args = settings.parse(parser, "worker", argv)
    if args.tasks is None and not (args.allow_commands or args.executables):
        # one line on stderr, exit 2 (settings.parse's parser.error), before anything starts
        parser.error("nothing to run: --tasks is required unless command tasks are allowed "
                     "(--allow-commands or --allow-executable PATH)")
    logs.setup(args.log_level, args.log_format)
    try:
        security = load_security(args.coordinator, token=args.token, tls=args.tls,
                                 ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
                                 server_name=args.tls_server_name,
                                 insecure=args.insecure)  # fmt: skip
    except ValueError as error:
        logger.error("%s", error)
        return EXIT_USAGE
    try:
        policy = policy_from_flags(args.allow_commands, args.executables)
    except ValueError as error:
        logger.error("%s", error)
        return EXIT_USAGE
    if policy.allowed:
        logger.warning("command tasks allowed: %s runs as this worker's user (uid %s)",
                       ", ".join(policy.executables) or "any program", os.getuid())
    try:
        functions = load_tasks(args.tasks) if args.tasks else {}
    except RegistryError as error:
        logger.error("%s", error)
        return 1
    config = AgentConfig(
        tasks=args.tasks or "",
        functions=sorted(functions),
        coordinator=args.coordinator,
        group_names=args.groups or [DEFAULT_GROUP],
        worker_name=args.name or f"{socket.gethostname()}#{os.getpid()}",
        heartbeat=args.heartbeat,
        max_empty_runs=args.max_empty_runs,
        concurrency=args.concurrency,
        kill_grace_s=args.kill_grace,
        security=security,
        command_policy=policy,
        metrics_listen=args.metrics_listen,
        tracing=args.tracing,
    )
    agent = Agent(config)
    _install_signal_handlers(agent)
    try:
        return agent.run()
    except PoolError as error:
        logger.error("task children could not start:\n%s", error)
        return 1
