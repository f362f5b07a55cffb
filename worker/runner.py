"""The pool of task children: dispatch, timeouts, stops, reaping, replacement.

One long-lived child per concurrency slot (child.py), each in its own
process group. A timeout or stop sends SIGTERM to the group, SIGKILL after
the grace; the child is then reaped and replaced, and its run ends TIMEOUT
or STOPPED. A child that dies on its own fails its run and is replaced.

One I/O thread owns the children: it waits (selectors, never polling) on
their control connections, output pipes and pidfds and on a wake-up pipe,
with the select timeout set to the nearest deadline, so a timeout fires
within milliseconds of it. Other threads call `submit`/`stop`; a free child
gets its run straight from the caller's thread. Outcomes leave through the
`on_finish` callback, called without the pool lock held.

This module knows nothing of gRPC or the coordinator (agent.py does).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .capture import OutputBuffer
from .child import DONE, ERROR, READY, ChildProcess, describe_exit
from .command import CommandPolicy
from .records import ActiveRun, LeaseKey, Outcome, RunResult, TaskRun

logger = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when a run is timed out or stopped."""
DEFAULT_START_TIMEOUT_S = 60.0
"""How long `Pool.start` waits for every child to load the tasks."""
DEFAULT_RESPAWN_BACKOFF_CAP_S = 5.0
"""Longest pause before replacing a child when children keep dying at start."""

_NEVER = float("inf")


class PoolError(Exception):
    """The pool cannot start: a child failed to load the tasks, or took too long."""


class _Run:
    __slots__ = ("task", "output", "started", "deadline", "slot", "kill_reason")

    def __init__(self, task: TaskRun, now: float) -> None:
        self.task = task
        self.output = OutputBuffer()
        self.started = now
        self.deadline = now + task.timeout if task.timeout > 0 else _NEVER
        self.slot: _Slot | None = None
        self.kill_reason: Outcome | None = None


class _Slot:
    """A child and what the pool knows about it."""

    __slots__ = ("child", "ready", "run", "kill_at", "drained")

    def __init__(self, child: ChildProcess) -> None:
        self.child = child
        self.ready = False
        self.run: _Run | None = None
        self.kill_at = _NEVER  # when SIGKILL goes to the group, once SIGTERM went
        self.drained = -1  # the batch of events in which its output pipe was last read empty


_OUTCOMES = {outcome.value: outcome for outcome in Outcome}
_EVENT_ORDER = {"wake": 0, "out": 1, "ctl": 2, "exit": 3}
"""Output before replies: a DONE then finds its output read already (see _handle_message)."""


class Pool:
    """Runs tasks in `size` long-lived child processes that load `tasks_spec`.

    Args:
        tasks_spec: the `--tasks` module name or .py path each child loads;
            empty for a worker that runs command tasks only.
        size: number of children, i.e. concurrent runs.
        on_finish: called once per submitted run with its RunResult, from the
            I/O thread (or from the thread calling `stop` for a run no child
            had started yet); it must not block for long.
        kill_grace_s: seconds between SIGTERM and SIGKILL.
        sys_path: sys.path for the children; default: this process's.
        python: interpreter for the children; default: this one.
        command_policy: which command tasks the children may run; default: none.
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
        command_policy: CommandPolicy | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._spec = tasks_spec
        self._size = size
        self._on_finish = on_finish
        self._grace = kill_grace_s
        self._sys_path = list(sys.path if sys_path is None else sys_path)
        self._python = python
        self._command_policy = command_policy or CommandPolicy()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._slots: list[_Slot] = []
        self._idle: list[_Slot] = []
        self._runs: dict[LeaseKey, _Run] = {}
        self._pending: deque[_Run] = deque()
        self._group_kills: list[tuple[float, int]] = []
        self._respawn_at: list[float] = []
        self._start_failures = 0
        self._start_error: str | None = None
        self._started = False  # start() succeeded: later load failures only respawn
        self._wake_at = _NEVER
        self._batch = 0  # counts the I/O thread's batches of events
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="taskgrid-pool", daemon=True)

    # ---- public API (any thread) -------------------------------------------------

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Start the children (from the I/O thread) and wait until each loaded the tasks.

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
        if not self._started:
            self.close()
            raise PoolError(error or f"task children not ready after {timeout_s} s")
        logger.debug("pool started size=%s pids=%s", self._size, self.child_pids())

    def submit(self, task: TaskRun) -> None:
        """Run `task` on a free child, or as soon as one is free; never waits for the task."""
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
        """Stop the run of lease `key` (SIGTERM, SIGKILL after the grace).

        Returns:
            True when this call started the stop; False when the run is unknown
            or already being stopped (stop commands are re-sent until the run ends).
        """
        finished: list[RunResult] = []
        with self._lock:
            run = self._runs.get(key)
            started = run is not None and self._begin_kill(run, outcome, time.monotonic(), finished)
        for result in finished:
            self._on_finish(result)
        return started

    def stop_all(self, outcome: Outcome = Outcome.STOPPED) -> list[LeaseKey]:
        """Stop every run; return their keys."""
        keys = self.active_keys()
        for key in keys:
            self.stop(key, outcome)
        return keys

    def free_slots(self) -> int:
        """How many runs can be submitted now without queueing behind another."""
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
            return [slot.child.pid for slot in self._slots]

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every run (STOPPED), end every child and the I/O thread; idempotent."""
        with self._lock:
            self._closing = True
            self._respawn_at.clear()
            self._wake()
            if self._thread.ident is None:  # never started: nothing else owns these
                self._close_selector()
                return
        if self._thread.is_alive():
            self._thread.join(timeout_s if timeout_s is not None else self._grace + 5.0)
        with self._lock:
            leftovers, self._slots = self._slots, []
        for slot in leftovers:  # only when the I/O thread did not finish in time
            slot.child.signal_group(signal.SIGKILL)
            slot.child.wait()
            slot.child.close()

    # ---- I/O thread ------------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the I/O thread's select; the caller holds the lock."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def _close_selector(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    def _loop(self) -> None:
        try:
            while True:
                finished: list[RunResult] = []
                with self._lock:
                    if self._closing and self._wind_down(finished):
                        break
                    self._wake_at = self._next_timer()
                    now = time.monotonic()
                    due = self._wake_at
                for result in finished:
                    self._on_finish(result)
                wait = None if due == _NEVER else max(0.0, due - now)
                events = self._selector.select(wait)
                finished = []
                with self._lock:
                    self._wake_at = 0.0  # awake: a submit need not wake us
                    self._batch += 1
                    if len(events) > 1:
                        events.sort(key=_event_order)
                    for key, _ in events:
                        kind, slot = key.data
                        self._handle_event(kind, slot, finished)
                    now = time.monotonic()
                    if now >= due:
                        # Else no timer is due: those armed since `due` was computed are
                        # later than it, or woke us and are seen on the next turn.
                        self._fire_timers(now, finished)
                    while self._pending and self._idle:
                        self._send_run(self._idle.pop(), self._pending.popleft())
                for result in finished:
                    self._on_finish(result)
        except Exception:
            logger.exception("pool I/O thread crashed")
            raise
        finally:
            with self._lock:
                self._close_selector()

    def _handle_event(self, kind: str, slot: _Slot | None, finished: list[RunResult]) -> None:
        if slot is None:  # the wake-up pipe
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        elif slot not in self._slots:
            return  # reaped earlier in this batch of events
        elif kind == "out":
            self._read_output(slot)
        elif kind == "ctl":
            try:
                messages = slot.child.receive()
            except (EOFError, OSError):
                self._selector.unregister(slot.child.conn.fileno())
                if slot.child.pidfd is None:  # no pidfd: this EOF is our exit event
                    self._reap(slot, finished)
                return
            for message in messages:
                self._handle_message(slot, message, finished)
        elif kind == "exit":
            self._reap(slot, finished)

    def _next_timer(self) -> float:
        nearest = _NEVER
        for run in self._runs.values():
            if run.deadline < nearest and run.kill_reason is None:
                nearest = run.deadline
        for slot in self._slots:
            if slot.kill_at < nearest:
                nearest = slot.kill_at
        for when, _ in self._group_kills:
            nearest = min(nearest, when)
        for when in self._respawn_at:
            nearest = min(nearest, when)
        return nearest

    def _fire_timers(self, now: float, finished: list[RunResult]) -> None:
        for run in list(self._runs.values()):
            if run.kill_reason is None and run.deadline <= now:
                logger.debug("task timed out task=%s attempt=%s", *run.task.key)
                self._begin_kill(run, Outcome.TIMEOUT, now, finished)
        for slot in self._slots:
            if slot.kill_at <= now:
                logger.debug("grace over, sending SIGKILL pid=%s", slot.child.pid)
                slot.child.signal_group(signal.SIGKILL)
                slot.kill_at = _NEVER
        for item in [item for item in self._group_kills if item[0] <= now]:
            self._group_kills.remove(item)
            try:
                os.killpg(item[1], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for when in [when for when in self._respawn_at if when <= now]:
            self._respawn_at.remove(when)
            self._spawn()

    def _spawn(self) -> None:
        try:
            child = ChildProcess.spawn(self._spec, self._sys_path, self._python,
                                       self._command_policy)
        except OSError:
            logger.exception("cannot start a task child")
            self._respawn_at.append(time.monotonic() + DEFAULT_RESPAWN_BACKOFF_CAP_S)
            return
        slot = _Slot(child)
        self._slots.append(slot)
        self._selector.register(child.conn.fileno(), selectors.EVENT_READ, ("ctl", slot))
        self._selector.register(child.out_fd, selectors.EVENT_READ, ("out", slot))
        if child.pidfd is not None:
            self._selector.register(child.pidfd, selectors.EVENT_READ, ("exit", slot))
        logger.debug("task child started pid=%s", child.pid)

    def _read_output(self, slot: _Slot) -> None:
        """Move what the child's output pipe holds into its current run's buffer."""
        if slot.child.out_fd < 0:
            return
        run = slot.run
        open_ = slot.child.read_output(run.output.feed if run else _drop_output)
        slot.drained = self._batch  # read until empty (or end of file) just now
        if not open_:
            self._selector.unregister(slot.child.out_fd)  # every writer is gone
            os.close(slot.child.out_fd)
            slot.child.out_fd = -1

    def _handle_message(
        self, slot: _Slot, message: tuple[Any, ...], finished: list[RunResult]
    ) -> None:
        kind = message[0]
        if kind == READY:
            slot.ready = True
            self._start_failures = 0
            self._idle.append(slot)
            self._changed.notify_all()
        elif kind == ERROR:
            logger.error("task child cannot load the tasks pid=%s\n%s", slot.child.pid, message[1])
            if not self._started and self._start_error is None:
                self._start_error = message[1]
                self._changed.notify_all()
        elif kind == DONE and slot.run is not None:
            run = slot.run
            if slot.drained != self._batch:
                # The child wrote all its output before replying. A read earlier in this
                # batch (out events come first) came after the select that saw this reply,
                # so it found all of that output and need not be repeated.
                self._read_output(slot)
            if run.kill_reason is not None:
                slot.child.signal_group(signal.SIGKILL)  # it returned after SIGTERM: end it now
                return  # the run ends (TIMEOUT/STOPPED) when the child is reaped
            slot.run = None
            del self._runs[run.task.key]
            self._idle.append(slot)
            finished.append(self._result(run, _OUTCOMES[message[1]], message[2], message[3]))

    def _reap(self, slot: _Slot, finished: list[RunResult]) -> None:
        """The child exited: collect it, end its run, schedule a replacement."""
        child = slot.child
        try:
            if child.pidfd is not None:  # replies sent just before it exited
                for message in child.receive():
                    self._handle_message(slot, message, finished)
        except (EOFError, OSError):
            pass
        returncode = child.wait()
        self._read_output(slot)
        for fd in (child.conn.fileno(), child.out_fd, child.pidfd):
            if fd is not None and fd >= 0 and fd in self._selector.get_map():
                self._selector.unregister(fd)
        child.close()
        self._slots.remove(slot)
        if slot in self._idle:
            self._idle.remove(slot)
        if slot.kill_at != _NEVER and child.signal_group(0):
            self._group_kills.append((slot.kill_at, child.pid))  # its subprocesses linger
        run = slot.run
        if run is not None:
            del self._runs[run.task.key]
            trace = ""
            if run.kill_reason is None:
                trace = (f"task child process pid={child.pid} ended with "
                         f"{describe_exit(returncode)} while running the task")  # fmt: skip
            finished.append(self._result(run, run.kill_reason or Outcome.FAILED, None, trace))
        logger.debug("task child reaped pid=%s %s", child.pid, describe_exit(returncode))
        if not slot.ready:
            self._start_failures += 1
        if not self._closing:
            delay = 0.0
            if self._start_failures:
                delay = min(DEFAULT_RESPAWN_BACKOFF_CAP_S, 0.1 * 2**self._start_failures)
            self._respawn_at.append(time.monotonic() + delay)

    def _begin_kill(
        self, run: _Run, reason: Outcome, now: float, finished: list[RunResult]
    ) -> bool:
        if run.kill_reason is not None:
            return False
        run.kill_reason = reason
        slot = run.slot
        if slot is None:  # still queued: nothing to signal
            self._pending.remove(run)
            del self._runs[run.task.key]
            finished.append(self._result(run, reason, None, ""))
            return True
        logger.debug("stopping task task=%s attempt=%s reason=%s", *run.task.key, reason.value)
        if self._grace > 0:
            slot.child.signal_group(signal.SIGTERM)
            slot.kill_at = now + self._grace
            if slot.kill_at < self._wake_at:
                self._wake()  # the I/O thread must wake up for the SIGKILL
        else:
            slot.child.signal_group(signal.SIGKILL)
        return True

    def _send_run(self, slot: _Slot, run: _Run) -> None:
        slot.run = run
        run.slot = slot
        try:
            slot.child.send_run(run.task)
        except OSError:
            slot.run = None  # the child died: its exit event replaces it
            run.slot = None
            self._pending.appendleft(run)

    def _result(self, run: _Run, outcome: Outcome, result: str | None, trace: str) -> RunResult:
        return RunResult(run.task, outcome, result, trace, run.output.take(final=True))

    def _wind_down(self, finished: list[RunResult]) -> bool:
        """Closing: stop runs, dismiss idle children; True once every child is gone."""
        now = time.monotonic()
        for run in list(self._runs.values()):
            self._begin_kill(run, Outcome.STOPPED, now, finished)
        for slot in self._idle:
            slot.child.send_exit()
            if slot.kill_at == _NEVER:
                slot.kill_at = now + self._grace  # in case it does not leave
        self._idle.clear()
        return not self._slots


def _event_order(event: tuple[selectors.SelectorKey, int]) -> int:
    return _EVENT_ORDER[event[0].data[0]]


def _drop_output(data: bytes) -> None:
    """Sink for output printed between runs (by a task's leftover subprocess)."""
    logger.debug("dropping %s bytes printed between runs", len(data))
