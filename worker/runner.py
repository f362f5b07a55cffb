"""The pool of task child processes: dispatch, timeouts, stops, reaping, replacement.

One long-lived child per concurrency slot, each a fresh interpreter
(``python -m taskgrid.worker.child``) started with ``subprocess`` (fork+exec,
nothing Python runs between the two) in its own process group. So a child
never inherits the worker's threads or gRPC state (the web2py fork hang),
and a timeout or stop signals the task and everything it started: SIGTERM
to the group, SIGKILL after the grace, then the child is reaped and replaced.

One I/O thread owns the children: it waits (selectors, no polling) on their
control connections, output pipes and pidfds, and on a wake-up pipe, with
the select timeout set to the nearest deadline, so a timeout fires within
milliseconds of it. Other threads call `submit`/`stop`; a free child gets
its run straight from the caller's thread. Outcomes leave through the
`on_finish` callback, called from the I/O thread without the pool lock.

This module knows nothing of gRPC or the coordinator (agent.py does).
"""

from __future__ import annotations

import enum
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from taskgrid.worker.capture import Chunk, OutputBuffer

logger = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when a run is timed out or stopped."""
DEFAULT_START_TIMEOUT_S = 60.0
"""How long `Pool.start` waits for every child to load the tasks."""
DEFAULT_RESPAWN_BACKOFF_CAP_S = 5.0
"""Longest pause before replacing a child when children keep dying at start."""

_READ_SIZE = 65536

LeaseKey = tuple[int, int]
"""(task_id, attempt): names one lease and so one run."""


class Outcome(enum.Enum):
    """How a run ended (the worker-side RunStatus)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class TaskRun:
    """A leased task to run: what the child needs plus its limits."""

    task_id: int
    attempt: int
    run_id: int
    uuid: str
    function_name: str
    args: str = "[]"
    vars: str = "{}"
    timeout: float = 60.0
    """Seconds from submit to TIMEOUT; 0 or less means no limit."""
    sync_output: float = 0.0
    """Seconds between live output flushes; 0 means the default cadence."""
    task_name: str = ""

    @property
    def key(self) -> LeaseKey:
        """The lease this run belongs to."""
        return (self.task_id, self.attempt)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The end of one run, handed to `on_finish`."""

    task: TaskRun
    outcome: Outcome
    result: str | None
    """JSON text of the return value (COMPLETED only)."""
    traceback: str
    output: list[Chunk]
    """The output chunks not taken yet (seq continues the live chunks)."""


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """A run in progress, as the output flusher sees it."""

    task: TaskRun
    output: OutputBuffer
    started: float
    """time.monotonic() at submit."""


class PoolError(Exception):
    """The pool cannot start: a child failed to load the tasks, or took too long."""


class _Run:
    __slots__ = ("task", "output", "started", "deadline", "child", "kill_reason")

    def __init__(self, task: TaskRun, now: float) -> None:
        self.task = task
        self.output = OutputBuffer()
        self.started = now
        self.deadline = now + task.timeout if task.timeout > 0 else float("inf")
        self.child: _Child | None = None
        self.kill_reason: Outcome | None = None


class _Child:
    __slots__ = ("proc", "pid", "conn", "out_fd", "pidfd", "ready", "run", "kill_at")

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection, out_fd: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.conn = conn
        self.out_fd = out_fd
        self.pidfd = _open_pidfd(proc.pid)
        self.ready = False
        self.run: _Run | None = None
        self.kill_at = float("inf")  # when SIGKILL goes to the group, once SIGTERM went


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # no pidfd: EOF on the control connection stands in for exit


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(returncode: int) -> str:
    """Say how a child ended, e.g. 'exit code 1' or 'signal SIGSEGV'."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class Pool:
    """Runs tasks in `size` long-lived child processes that load `tasks_spec`.

    Args:
        tasks_spec: the `--tasks` module name or .py path each child loads.
        size: number of children, i.e. concurrent runs.
        on_finish: called once per submitted run with its RunResult, from the
            pool's I/O thread (or from the thread calling `stop` for a run no
            child had started); must not block for long.
        kill_grace_s: seconds between SIGTERM and SIGKILL.
        sys_path: sys.path for the children; default: this process's.
        python: interpreter for the children; default: this one.
    """

    def __init__(
        self,
        tasks_spec: str,
        size: int,
        on_finish: Callable[[RunResult], None],
        *,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        sys_path: list[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._spec = tasks_spec
        self._size = size
        self._on_finish = on_finish
        self._grace = kill_grace_s
        self._sys_path = list(sys.path if sys_path is None else sys_path)
        self._python = python
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._children: list[_Child] = []
        self._idle: list[_Child] = []
        self._runs: dict[LeaseKey, _Run] = {}
        self._pending: deque[_Run] = deque()
        self._group_kills: list[tuple[float, int]] = []
        self._respawn_at: list[float] = []
        self._start_failures = 0
        self._start_error: str | None = None
        self._started = False  # start() succeeded: later load failures only respawn
        self._wake_at = float("inf")
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="taskgrid-pool", daemon=True)

    # ---- public API (any thread) -------------------------------------------------

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Start the children and wait until each has loaded the tasks.

        Raises:
            PoolError: a child could not load the tasks (its traceback is in
                the message) or the children were not ready in time.
        """
        with self._lock:
            self._respawn_at = [time.monotonic()] * self._size
        self._thread.start()
        with self._changed:
            ready = self._changed.wait_for(
                lambda: self._start_error is not None or len(self._idle) == self._size,
                timeout_s,
            )
            error = self._start_error
            self._started = ready and error is None
        if error is not None or not ready:
            self.close()
            raise PoolError(error or f"task children not ready after {timeout_s} s")
        logger.debug("pool started size=%s pids=%s", self._size, self.child_pids())

    def submit(self, task: TaskRun) -> None:
        """Run `task` on a free child, or as soon as one is free; never blocks on the task."""
        now = time.monotonic()
        with self._lock:
            if task.key in self._runs:
                raise ValueError(f"lease {task.key} is already running")
            run = _Run(task, now)
            self._runs[task.key] = run
            if self._idle:
                self._send_run(self._idle.pop(), run)
            else:
                self._pending.append(run)
            if run.deadline < self._wake_at:
                self._wake()

    def stop(self, key: LeaseKey, outcome: Outcome = Outcome.STOPPED) -> bool:
        """Stop the run of lease `key` (SIGTERM, SIGKILL after the grace); False if unknown."""
        finished: list[RunResult] = []
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                return False
            self._begin_kill(run, outcome, time.monotonic(), finished)
        for result in finished:
            self._on_finish(result)
        return True

    def stop_all(self, outcome: Outcome = Outcome.STOPPED) -> list[LeaseKey]:
        """Stop every run; return their keys."""
        keys = self.active_keys()
        for key in keys:
            self.stop(key, outcome)
        return keys

    def free_slots(self) -> int:
        """Runs that can be submitted now without waiting behind another run."""
        with self._lock:
            return 0 if self._closing else max(0, self._size - len(self._runs))

    def active_keys(self) -> list[LeaseKey]:
        """Leases of every run not finished yet (queued, running or being killed)."""
        with self._lock:
            return list(self._runs)

    def active_runs(self) -> list[ActiveRun]:
        """Snapshot of the runs not finished yet, for the output flusher."""
        with self._lock:
            return [ActiveRun(r.task, r.output, r.started) for r in self._runs.values()]

    def child_pids(self) -> list[int]:
        """Pids of the live children (for RSS accounting and tests)."""
        with self._lock:
            return [child.pid for child in self._children]

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every run (STOPPED), end every child and the I/O thread; idempotent."""
        with self._lock:
            self._closing = True
            self._respawn_at.clear()
            self._wake()
            if self._thread.ident is None:  # never started: nothing else owns these
                self._selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
                return
        if self._thread.is_alive():
            self._thread.join(timeout_s if timeout_s is not None else self._grace + 5.0)
        with self._lock:
            leftovers, self._children = self._children, []
        for child in leftovers:  # only when the I/O thread did not finish in time
            _killpg(child.pid, signal.SIGKILL)
            child.proc.wait()

    # ---- I/O thread ------------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the I/O thread's select; caller holds the lock."""
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closing and self._begin_close():
                        break
                    now = time.monotonic()
                    self._wake_at = self._next_timer()
                timeout = None if self._wake_at == float("inf") else max(0.0, self._wake_at - now)
                events = self._selector.select(timeout)
                finished: list[RunResult] = []
                with self._lock:
                    self._wake_at = 0.0  # busy: submit need not wake us
                    for key, _ in events:
                        self._handle_event(key.data, finished)
                    self._fire_timers(time.monotonic(), finished)
                    self._dispatch_pending()
                for result in finished:
                    self._on_finish(result)
        except Exception:
            logger.exception("pool I/O thread crashed")
            raise
        finally:
            with self._lock:
                self._selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def _handle_event(self, data: tuple[str, Any], finished: list[RunResult]) -> None:
        kind, child = data
        if kind == "wake":
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        elif child not in self._children:
            return  # reaped earlier in this same batch of events
        elif kind == "out":
            self._read_output(child)
        elif kind == "ctl":
            self._read_control(child, finished)
        elif kind == "exit":
            self._reap(child, finished)

    def _next_timer(self) -> float:
        times = [run.deadline for run in self._runs.values() if run.kill_reason is None]
        times += [child.kill_at for child in self._children]
        times += [when for when, _ in self._group_kills]
        times += self._respawn_at
        return min(times, default=float("inf"))

    def _fire_timers(self, now: float, finished: list[RunResult]) -> None:
        for run in list(self._runs.values()):
            if run.kill_reason is None and run.deadline <= now:
                logger.debug("task timed out task=%s attempt=%s", *run.task.key)
                self._begin_kill(run, Outcome.TIMEOUT, now, finished)
        for child in self._children:
            if child.kill_at <= now:
                logger.debug("sending SIGKILL pid=%s", child.pid)
                _killpg(child.pid, signal.SIGKILL)
                child.kill_at = float("inf")
        for when, pgid in [item for item in self._group_kills if item[0] <= now]:
            self._group_kills.remove((when, pgid))
            _killpg(pgid, signal.SIGKILL)
        due = [when for when in self._respawn_at if when <= now]
        for when in due:
            self._respawn_at.remove(when)
            self._spawn()

    def _spawn(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        fds = (child_sock.fileno(), out_w)
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "taskgrid.worker.child", *map(str, fds), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
                process_group=0,
            )
        except OSError:
            logger.exception("cannot start a task child")
            parent_sock.close()
            os.close(out_r)
            self._respawn_at.append(time.monotonic() + DEFAULT_RESPAWN_BACKOFF_CAP_S)
            return
        finally:
            child_sock.close()
            os.close(out_w)
        os.set_blocking(out_r, False)
        child = _Child(proc, Connection(parent_sock.detach()), out_r)
        self._children.append(child)
        self._selector.register(child.conn.fileno(), selectors.EVENT_READ, ("ctl", child))
        self._selector.register(out_r, selectors.EVENT_READ, ("out", child))
        if child.pidfd is not None:
            self._selector.register(child.pidfd, selectors.EVENT_READ, ("exit", child))
        try:
            child.conn.send(("init", self._spec, self._sys_path))
        except OSError:
            pass  # it died already; its exit event follows
        logger.debug("task child started pid=%s", child.pid)

    def _read_output(self, child: _Child) -> None:
        """Move what is in the child's output pipe into its current run's buffer."""
        while True:
            try:
                data = os.read(child.out_fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._selector.unregister(child.out_fd)  # every writer is gone
                os.close(child.out_fd)
                child.out_fd = -1
                return
            if child.run is not None:
                child.run.output.feed(data)
            else:
                logger.debug("dropping output printed between runs pid=%s", child.pid)
            if len(data) < _READ_SIZE:
                return

    def _read_control(self, child: _Child, finished: list[RunResult]) -> None:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            self._selector.unregister(child.conn.fileno())
            if child.pidfd is None:
                self._reap(child, finished)
            return
        self._handle_message(child, message, finished)

    def _handle_message(
        self, child: _Child, message: tuple[Any, ...], finished: list[RunResult]
    ) -> None:
        kind = message[0]
        if kind == "ready":
            child.ready = True
            self._start_failures = 0
            self._idle.append(child)
            self._changed.notify_all()
        elif kind == "error":
            logger.error("task child cannot load tasks pid=%s\n%s", child.pid, message[1])
            if not self._started and self._start_error is None:
                self._start_error = message[1]
                self._changed.notify_all()
        elif kind == "done" and child.run is not None:
            run = child.run
            if child.out_fd >= 0:
                self._read_output(child)  # the child wrote all output before replying
            if run.kill_reason is not None:
                _killpg(child.pid, signal.SIGKILL)  # it returned after SIGTERM: end it now
                return  # the outcome (TIMEOUT/STOPPED) is settled when it exits
            child.run = None
            del self._runs[run.task.key]
            self._idle.append(child)
            finished.append(self._result(run, Outcome(message[1]), message[2], message[3]))

    def _reap(self, child: _Child, finished: list[RunResult]) -> None:
        """The child exited: collect it, finish its run, schedule a replacement."""
        if child.pidfd is not None and child.conn.fileno() >= 0:
            try:
                while child.conn.poll(0):  # a reply sent just before the exit
                    self._handle_message(child, child.conn.recv(), finished)
            except (EOFError, OSError):
                pass
        returncode = child.proc.wait()
        if child.out_fd >= 0:
            self._read_output(child)
        for fd in (child.conn.fileno(), child.out_fd, child.pidfd):
            if fd is not None and fd >= 0:
                try:
                    self._selector.unregister(fd)
                except (KeyError, ValueError):
                    pass
        child.conn.close()
        if child.out_fd >= 0:
            os.close(child.out_fd)
        if child.pidfd is not None:
            os.close(child.pidfd)
        self._children.remove(child)
        if child in self._idle:
            self._idle.remove(child)
        if child.kill_at != float("inf") and _killpg(child.pid, 0):
            self._group_kills.append((child.kill_at, child.pid))  # its subprocesses linger
        run = child.run
        if run is not None:
            del self._runs[run.task.key]
            outcome = run.kill_reason or Outcome.FAILED
            trace = ""
            if run.kill_reason is None:
                trace = (
                    f"task child process pid={child.pid} ended with "
                    f"{describe_exit(returncode)} while running the task"
                )
            finished.append(self._result(run, outcome, None, trace))
        logger.debug("task child reaped pid=%s %s", child.pid, describe_exit(returncode))
        if not child.ready:
            self._start_failures += 1
        if not self._closing:
            delay = 0.0
            if self._start_failures > 0:
                delay = min(DEFAULT_RESPAWN_BACKOFF_CAP_S, 0.1 * 2**self._start_failures)
            self._respawn_at.append(time.monotonic() + delay)

    def _begin_kill(
        self, run: _Run, reason: Outcome, now: float, finished: list[RunResult]
    ) -> None:
        if run.kill_reason is not None:
            return
        run.kill_reason = reason
        child = run.child
        if child is None:  # still queued: nothing to signal
            self._pending.remove(run)
            del self._runs[run.task.key]
            finished.append(self._result(run, reason, None, ""))
            return
        logger.debug("stopping task task=%s attempt=%s reason=%s", *run.task.key, reason.value)
        if self._grace > 0:
            _killpg(child.pid, signal.SIGTERM)
            child.kill_at = now + self._grace
        else:
            _killpg(child.pid, signal.SIGKILL)

    def _send_run(self, child: _Child, run: _Run) -> None:
        task = run.task
        child.run = run
        run.child = child
        message = ("run", task.task_id, task.attempt, task.run_id, task.uuid,
                   task.function_name, task.args, task.vars)  # fmt: skip
        try:
            child.conn.send(message)
        except OSError:
            child.run = None  # it died; its exit event will replace it
            run.child = None
            self._pending.appendleft(run)

    def _dispatch_pending(self) -> None:
        while self._pending and self._idle:
            self._send_run(self._idle.pop(), self._pending.popleft())

    def _result(self, run: _Run, outcome: Outcome, result: str | None, trace: str) -> RunResult:
        return RunResult(run.task, outcome, result, trace, run.output.take(final=True))

    def _begin_close(self) -> bool:
        """Wind down while closing; True once every child is gone and the loop may end."""
        now = time.monotonic()
        finished: list[RunResult] = []
        for run in list(self._runs.values()):
            self._begin_kill(run, Outcome.STOPPED, now, finished)
        for child in self._idle:
            try:
                child.conn.send(None)
            except OSError:
                pass
            if child.kill_at == float("inf"):
                child.kill_at = now + self._grace
        self._idle.clear()
        if finished:
            self._lock.release()
            try:
                for result in finished:
                    self._on_finish(result)
            finally:
                self._lock.acquire()
        return not self._children
