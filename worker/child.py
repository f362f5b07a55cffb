"""Task child processes, both ends: the parent's handle and the loop inside the child.

A child is a fresh interpreter, ``python -m taskgrid.worker.child``, started
by `ChildProcess.spawn` with ``subprocess`` (fork+exec, no Python code in
between) in its own process group. So it inherits no threads, locks or gRPC
state from the worker (the web2py fork hang), and signalling its group
reaches every subprocess a task started. It loads the `--tasks` registry
once (nothing for a command-only worker), then serves runs one at a time:
for each run it points fds 1 and 2 at its output pipe, calls the function
(or runs the command task's program, command.py), restores the fds and
answers with the outcome. It never talks to the coordinator and only ever
decides COMPLETED or FAILED; timeouts and stops are the pool's (runner.py)
business.

Wire messages (pickled tuples over a stream socket, each framed by its 4-byte
length, see `Channel`):
parent -> child: ``("init", spec, sys_path, command_policy)`` first, then
``("run", task_id, attempt, run_id, uuid, function_name, args, vars)`` or
``("command", task_id, attempt, run_id, uuid, Command)`` per run, or None to
exit; child -> parent: ``("ready", pid)`` or ``("error", traceback)``, then
one ``("done", outcome, result, traceback)`` per run.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from .capture import FdRedirect
from .command import CommandPolicy, command_env, run_command
from .context import TaskContext, set_current_task
from .records import Outcome, TaskRun
from .registry import TaskFunction, load_tasks

READY = "ready"
ERROR = "error"
DONE = "done"
RUN = "run"
COMMAND = "command"
_READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("!I")
_BIG_FRAME = 1 << 16
"""From this size on a frame is sent as header then body, not copied into one buffer."""


class Channel:
    """Pickled messages over a connected stream socket: ``length (4 bytes, big-endian) + pickle``.

    What multiprocessing's Connection did, at fewer syscalls and copies per message:
    a send is one ``sendall``; a read takes whatever the socket holds (one ``recv`` for
    the small messages of every run) instead of a header read then a body read, and a
    message split across reads waits in the buffer for the rest. The socket stays
    blocking (a send waits for room); the parent's reads pass MSG_DONTWAIT instead.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._ready: deque[Any] = deque()

    def fileno(self) -> int:
        """The socket's fd; -1 once closed."""
        return self.sock.fileno()

    def send(self, message: Any) -> None:
        """Send one message. Raises OSError when the peer is gone."""
        body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        if len(body) < _BIG_FRAME:
            self.sock.sendall(_HEADER.pack(len(body)) + body)
        else:
            self.sock.sendall(_HEADER.pack(len(body)))
            self.sock.sendall(body)

    def receive_ready(self) -> list[Any]:
        """Every message complete now, without waiting; [] when none is.

        Raises:
            EOFError: the peer closed its end and no complete message is left.
            OSError: the connection broke.
        """
        while True:
            try:
                data = self.sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                if self._ready:
                    break
                raise EOFError("the peer closed the connection")
            self._buffer += data
            self._parse()
            if len(data) < _READ_SIZE:
                break  # a short read: the socket is empty now
        messages = list(self._ready)
        self._ready.clear()
        return messages

    def recv(self) -> Any:
        """The next message, waiting for it. Raises EOFError or OSError when the peer is gone."""
        while not self._ready:
            data = self.sock.recv(_READ_SIZE)
            if not data:
                raise EOFError("the peer closed the connection")
            self._buffer += data
            self._parse()
        return self._ready.popleft()

    def _parse(self) -> None:
        buffer = self._buffer
        end = len(buffer)
        position = 0
        while end - position >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, position)
            stop = position + _HEADER.size + size
            if stop > end:
                break
            with memoryview(buffer) as view:
                self._ready.append(pickle.loads(view[position + _HEADER.size : stop]))
            position = stop
        if position:
            del buffer[:position]

    def close(self) -> None:
        """Close the socket; idempotent."""
        self.sock.close()


class ChildProcess:
    """The worker's handle on one task child: its process, control connection and output pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], conn: Channel, out_fd: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        """Also the id of the child's process group."""
        self.conn = conn
        self.out_fd = out_fd
        """Read end of the pipe the child's fds 1 and 2 point at during runs; -1 once closed."""
        self.pidfd = _open_pidfd(proc.pid)
        """Readable when the child exits; None where pidfds are missing (EOF stands in)."""

    @classmethod
    def spawn(cls, spec: str, sys_path: list[str], python: str = sys.executable,
              command_policy: CommandPolicy | None = None) -> ChildProcess:
        """Start a child in its own process group and send it the tasks to load.

        Args:
            spec: the `--tasks` module or file; empty for a command-only worker.
            sys_path: the child's sys.path.
            python: the interpreter to start.
            command_policy: which command tasks it may run (default: none).

        Raises:
            OSError: the interpreter could not be started.
        """
        parent_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        fds = (child_sock.fileno(), out_w)
        try:
            proc = subprocess.Popen(
                [python, "-m", "taskgrid.worker.child", *map(str, fds), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
                process_group=0,
                # task code never sees the worker's bearer token
                env={k: v for k, v in os.environ.items() if k != "TASKGRID_TOKEN"},
            )
        except OSError:
            parent_sock.close()
            os.close(out_r)
            raise
        finally:
            child_sock.close()
            os.close(out_w)
        os.set_blocking(out_r, False)
        child = cls(proc, Channel(parent_sock), out_r)
        try:
            child.conn.send(("init", spec, sys_path, command_policy or CommandPolicy()))
        except OSError:
            pass  # it died already; its exit is noticed like any other
        return child

    def send_run(self, task: TaskRun) -> None:
        """Hand the child a run. Raises OSError when the child is gone."""
        if task.command is not None:
            self.conn.send((COMMAND, task.task_id, task.attempt, task.run_id, task.uuid,
                            task.command))  # fmt: skip
            return
        self.conn.send((RUN, task.task_id, task.attempt, task.run_id, task.uuid,
                        task.function_name, task.args, task.vars))  # fmt: skip

    def send_exit(self) -> None:
        """Ask an idle child to exit."""
        try:
            self.conn.send(None)
        except OSError:
            pass

    def receive(self) -> list[tuple[Any, ...]]:
        """The messages the child has sent so far, without waiting ([] if none is complete).

        Raises:
            EOFError, OSError: the child is gone and nothing is left to read.
        """
        messages: list[tuple[Any, ...]] = self.conn.receive_ready()
        return messages

    def read_output(self, sink: Callable[[bytes], None]) -> bool:
        """Pass whatever the output pipe holds to `sink`; False at end of file."""
        while True:
            try:
                data = os.read(self.out_fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                data = b""
            if not data:
                return False
            sink(data)
            if len(data) < _READ_SIZE:
                return True  # a short read means the pipe is empty now

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to the child's process group; False when nobody is left in it."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def wait(self) -> int:
        """Reap the child (it has exited or is about to) and return its exit status."""
        return self.proc.wait()

    def close(self) -> None:
        """Release the parent's ends of the connection, pipe and pidfd."""
        self.conn.close()
        for fd in (self.out_fd, self.pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.out_fd = -1
        self.pidfd = None


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def describe_exit(returncode: int) -> str:
    """Say how a child ended, e.g. 'exit code 1' or 'signal SIGSEGV'."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


# ---- inside the child ----------------------------------------------------------------


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
                    raise NameError(f"name '{function_name}' not found in scheduler's environment")
                value = function(*_decode(args, "[]", ()), **_decode(kwargs, "{}", {}))
                if inspect.iscoroutine(value):
                    import asyncio

                    value = asyncio.run(value)
                result = json.dumps(value)
            except BaseException:
                return (DONE, Outcome.FAILED.value, None, traceback.format_exc())
    finally:
        set_current_task(None)
    return (DONE, Outcome.COMPLETED.value, result, "")


def _decode(text: str, empty_json: str, empty: Any) -> Any:
    """json.loads(text), skipping the parser for an empty list/object (most runs)."""
    if not text or text == empty_json:
        return empty
    return json.loads(text)


def run_command_task(
    message: tuple[Any, ...], redirect: FdRedirect, policy: CommandPolicy
) -> tuple[str, str, str | None, str]:
    """Run one command task described by a ``("command", ...)`` message; the ``done`` reply.

    `current_task()` stays None: the program is not Python. It learns its
    identity from TASKGRID_TASK_ID, TASKGRID_TASK_UUID, TASKGRID_RUN_ID and
    TASKGRID_ATTEMPT instead.
    """
    _, task_id, attempt, run_id, uuid, command = message
    env = command_env(command, task_id, uuid, run_id, attempt)
    with redirect:
        try:
            outcome, result, trace = run_command(command, env, policy)
        except Exception:  # a bug here must fail the run, not kill the child
            outcome, result, trace = Outcome.FAILED, None, traceback.format_exc()
    return (DONE, outcome.value, result, trace)


def serve(conn: Channel, tasks: dict[str, TaskFunction], redirect: FdRedirect,
          policy: CommandPolicy | None = None) -> int:
    """Answer run messages until the parent sends None or goes away; return the exit code."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        if message is None:
            return 0
        if message[0] == COMMAND:
            reply = run_command_task(message, redirect, policy or CommandPolicy())
        else:
            reply = run_task(tasks, message, redirect)
        try:
            conn.send(reply)
        except OSError:
            return 0


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker dies, so no task outlives it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)  # the worker died before the request took effect


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``CONTROL_FD OUTPUT_FD PARENT_PID``; returns the exit code."""
    control_fd, output_fd, parent_pid = (int(value) for value in (argv or sys.argv[1:])[:3])
    _die_with_parent(parent_pid)
    # Subprocesses of a task must inherit fds 1 and 2 only, never these two.
    os.set_inheritable(control_fd, False)
    os.set_inheritable(output_fd, False)
    conn = Channel(socket.socket(fileno=control_fd))
    try:
        _, spec, sys_path, policy = conn.recv()
    except (EOFError, OSError):
        return 0
    sys.path[:] = list(sys_path)
    try:
        tasks = load_tasks(spec) if spec else {}
    except BaseException:
        conn.send((ERROR, traceback.format_exc()))
        return 1
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # Live output needs each line in the pipe when printed, not at 8 KiB.
            reconfigure(line_buffering=True)
    conn.send((READY, os.getpid()))
    return serve(conn, tasks, FdRedirect(output_fd), policy)


if __name__ == "__main__":
    code = main()
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except (OSError, ValueError):
            pass
    # os._exit: threads a task left behind must not keep the child alive.
    os._exit(code)
