"""Command tasks: which executables may run, and running one inside a task child.

A command task names a program instead of a registered function. Running
arbitrary programs with the worker's rights is dangerous, so a worker runs
none unless its operator started it with ``--allow-commands`` (optionally
narrowed by ``--allow-executable``); `CommandPolicy` carries that decision
into every task child, which checks it again for each run, so a coordinator
that leased a command to the wrong worker still gets nothing run.

`run_command` runs inside the task child (child.py), while fds 1 and 2 point
at the run's output pipe: the program writes its stdout there directly, and
its stderr goes through a pipe the child reads, copies to fd 2 and keeps the
tail of, for the traceback of a failed run. The program stays in the child's
process group, so the pool's SIGTERM/SIGKILL of that group on timeout or
stop reaches it and everything it started. When the program exits, what it
left running in the group is killed (`kill_leftovers`), so a finished task
leaves nothing behind; a daemon that left the group on purpose survives.

Executables are compared as canonical paths (`canonical_path`): absolute,
with the directory's symlinks resolved but the file name kept, so
``/bin/sh`` and ``/usr/bin/sh`` match on a merged-/usr system while a
multi-call binary's links (busybox ``ls`` vs ``rm``) stay distinct.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .records import Command, Outcome

DEFAULT_STDERR_TAIL_LINES = 20
"""Last lines of a failed command's stderr quoted in its traceback."""
DEFAULT_STDERR_TAIL_BYTES = 64 * 1024
"""Bytes of stderr kept to find those lines in."""
ENV_TASK_ID = "TASKGRID_TASK_ID"
ENV_TASK_UUID = "TASKGRID_TASK_UUID"
ENV_RUN_ID = "TASKGRID_RUN_ID"
ENV_ATTEMPT = "TASKGRID_ATTEMPT"
HIDDEN_ENV = frozenset({"TASKGRID_TOKEN"})
"""Worker variables a command does not inherit: the worker's own credentials."""

_READ_SIZE = 65536
_POLL_S = 0.1  # only where pidfds are missing
_MAX_DRAIN_READS = 64  # after exit, a leftover writer must not keep the run going


class CommandRefused(Exception):
    """The command may not, or cannot, run on this worker; the message says why."""


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """What the operator allowed: no commands, any command, or only some executables."""

    allowed: bool = False
    """--allow-commands (or --allow-executable) was given."""
    executables: tuple[str, ...] = ()
    """Canonical paths of the only executables allowed; empty allows any."""

    def check(self, path: str) -> None:
        """Refuse `path` (a canonical path) unless this policy allows it.

        Raises:
            CommandRefused: commands are not allowed, or `path` is not on the list.
        """
        if not self.allowed:
            raise CommandRefused("command tasks are not allowed on this worker "
                                 "(start it with --allow-commands)")  # fmt: skip
        if self.executables and path not in self.executables:
            raise CommandRefused(f"executable {path} is not in this worker's "
                                 "--allow-executable list")  # fmt: skip

    def resolve(self, executable: str, cwd: str = "") -> str:
        """The canonical path to run for `executable`, once this policy allows it.

        Raises:
            CommandRefused: commands are not allowed, the executable cannot be
                found, or it is not on the allow-list.
        """
        if not self.allowed:
            self.check("")  # says why, before a lookup could leak what exists here
        path = resolve_executable(executable, cwd)
        self.check(path)
        return path


def canonical_path(path: str) -> str:
    """`path` made absolute, its directory's symlinks resolved, its file name kept."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail)


def resolve_executable(executable: str, cwd: str = "") -> str:
    """The canonical path of the program `executable` names.

    A name without a slash is looked up in the worker's PATH (never in the
    task's own env, so a task cannot redirect the lookup); a relative path
    is taken from `cwd`, or the worker's working directory.

    Raises:
        CommandRefused: empty, not found, or not an executable file.
    """
    if not executable:
        raise CommandRefused("the command has no executable")
    if "/" not in executable:
        found = shutil.which(executable)
        if found is None:
            raise CommandRefused(f"executable {executable!r} not found in PATH")
        return canonical_path(found)
    path = os.path.join(cwd or os.getcwd(), executable)  # an absolute one wins the join
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise CommandRefused(f"executable {executable!r} is not an executable file")
    return canonical_path(path)


def policy_from_flags(allow_commands: bool, executables: Iterable[str]) -> CommandPolicy:
    """The policy of ``--allow-commands`` and ``--allow-executable`` (which implies it).

    Allow-list entries are resolved once, at start, against the worker's PATH.

    Raises:
        ValueError: an entry names no executable file (a typo would otherwise
            refuse every task silently).
    """
    names = list(executables)
    resolved = []
    for name in names:
        try:
            resolved.append(resolve_executable(name))
        except CommandRefused as error:
            raise ValueError(f"--allow-executable {name}: {error}") from None
    return CommandPolicy(allowed=allow_commands or bool(names),
                         executables=tuple(dict.fromkeys(resolved)))  # fmt: skip


def command_env(command: Command, task_id: int, uuid: str, run_id: int, attempt: int,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: the worker's (minus its secrets), the task's, its identity.

    The identity variables stand in for `current_task()`, which a program
    that is not Python cannot call.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in HIDDEN_ENV}  # fmt: skip
    env.update(command.env)
    env.update({ENV_TASK_ID: str(task_id), ENV_TASK_UUID: uuid, ENV_RUN_ID: str(run_id),
                ENV_ATTEMPT: str(attempt)})  # fmt: skip
    return env


class StderrTail:
    """The last bytes a command wrote to stderr, for its traceback."""

    def __init__(self, max_bytes: int = DEFAULT_STDERR_TAIL_BYTES) -> None:
        self._data = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> None:
        """Keep `data`, forgetting what falls out of the window."""
        self._data += data
        if len(self._data) > self._max:
            del self._data[: len(self._data) - self._max]

    def lines(self, count: int = DEFAULT_STDERR_TAIL_LINES) -> str:
        """The last `count` lines, newline-terminated; empty when nothing was written."""
        text = self._data.decode("utf-8", errors="replace").rstrip("\n")
        if not text:
            return ""
        return "\n".join(text.split("\n")[-count:]) + "\n"


def describe_returncode(returncode: int) -> str:
    """Say how a command ended, e.g. 'exit code 3' or 'killed by signal SIGSEGV'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit code {returncode}"


def outcome_of(returncode: int, tail: StderrTail) -> tuple[Outcome, str | None, str]:
    """(outcome, result JSON, traceback) of a command that ended with `returncode`."""
    if returncode == 0:
        return Outcome.COMPLETED, json.dumps({"exit_code": 0}), ""
    trace = describe_returncode(returncode) + "\n"
    lines = tail.lines()
    if lines:
        trace += "last lines of stderr:\n" + lines
    return Outcome.FAILED, None, trace


def run_command(command: Command, env: dict[str, str], policy: CommandPolicy
                ) -> tuple[Outcome, str | None, str]:
    """Run `command` to its end; the caller has pointed fds 1 and 2 at the output.

    Returns:
        (outcome, result JSON, traceback): COMPLETED with ``{"exit_code": 0}``,
        or FAILED with the exit code (or signal) and the last lines of stderr,
        or FAILED with the reason it could not start.
    """
    try:
        path = policy.resolve(command.executable, command.cwd)
    except CommandRefused as error:
        return Outcome.FAILED, None, f"command refused: {error}\n"
    try:
        proc = subprocess.Popen(
            [command.executable, *command.args], executable=path, env=env,
            cwd=command.cwd or None, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as error:
        return Outcome.FAILED, None, f"cannot start {command.executable}: {error}\n"
    tail = StderrTail()
    assert proc.stderr is not None
    with proc.stderr:
        _pump_stderr(proc, proc.stderr.fileno(), tail)
        returncode = proc.wait()
    kill_leftovers()
    return outcome_of(returncode, tail)


def kill_leftovers(proc_dir: str = "/proc") -> int:
    """SIGKILL the other members of this process's group; return how many were signalled.

    The task child leads its group, and nothing but a task's processes joins
    it, so after a command these are what it left running (``cmd &``). Linux
    only (it reads /proc); elsewhere they go when the group is next signalled.
    """
    me, group = os.getpid(), os.getpgrp()
    killed = 0
    for _ in range(3):  # a leftover may fork while we look
        found = [pid for pid in _group_members(proc_dir, group) if pid != me]
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        if not found:
            break
    return killed


def _group_members(proc_dir: str, group: int) -> list[int]:
    members = []
    try:
        names = os.listdir(proc_dir)
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc_dir}/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...; a zombie is already dead, only unreaped
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == group:
            members.append(int(name))
    return members


def _pump_stderr(proc: subprocess.Popen[bytes], fd: int, tail: StderrTail) -> None:
    """Copy the command's stderr to fd 2 and `tail` until the command exits.

    It ends on the command's exit, not on end of file: a background process
    it left behind may hold the pipe open for ever.
    """
    os.set_blocking(fd, False)
    pidfd = _open_pidfd(proc.pid)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            at_eof = False
            while not at_eof and proc.poll() is None:
                for key, _ in selector.select(None if pidfd is not None else _POLL_S):
                    if key.fd == fd and _copy(fd, tail) is False:
                        selector.unregister(fd)
                        at_eof = True
            for _ in range(0 if at_eof else _MAX_DRAIN_READS):
                if not _copy(fd, tail):  # what it wrote just before exiting
                    break
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _copy(fd: int, tail: StderrTail) -> bool | None:
    """Move what `fd` holds to fd 2 and `tail`.

    Returns:
        True when something was copied, False at end of file, None when the
        pipe is empty for now.
    """
    try:
        data = os.read(fd, _READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    if not data:
        return False
    tail.feed(data)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(2, view) :]
        except OSError:
            break  # nobody reads the output any more: keep the tail anyway
    return True


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
