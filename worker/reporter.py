"""The reporter thread: when to send live output and finished runs, and in what batches.

It decides timing and batching only; the sending itself (gRPC, error codes)
belongs to a `Sender`, which agent.py implements. Each cycle takes the due
output of every running run (each run every `sync_output` seconds, or
about every second when that is 0) into one SendOutput batch, then every
finished run into one Report batch, so the number of calls grows with time
and not with tasks. A batch that could not be delivered goes back to the
outbox and the thread backs off; nothing is polled: it sleeps until the next
output is due or until a run finishes.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from taskgrid.worker.backoff import Backoff
from taskgrid.worker.capture import Chunk
from taskgrid.worker.outbox import Outbox
from taskgrid.worker.records import ActiveRun, LeaseKey, RunResult, TaskRun

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_INTERVAL_S = 1.0
"""Live output cadence of a run whose sync_output is 0 (web2py: about 1 s)."""

_NEVER = float("inf")


class Delivery(enum.Enum):
    """What became of a batch handed to a Sender."""

    SENT = "sent"
    RETRY = "retry"
    """Not delivered (coordinator away): keep the batch and back off."""
    DROP = "drop"
    """Not delivered and never will be (rejected, or the session is gone)."""


class StaleLeasesError(Exception):
    """The coordinator rejected a batch because these leases are no longer ours."""

    def __init__(self, keys: set[LeaseKey]) -> None:
        super().__init__(f"stale leases {sorted(keys)}")
        self.keys = keys


class Sender(Protocol):
    """Delivers batches to the coordinator (agent.py); may raise StaleLeasesError."""

    def send_output(self, batch: dict[LeaseKey, list[Chunk]]) -> Delivery:
        """Deliver live output chunks of running runs."""
        ...

    def send_reports(self, batch: list[RunResult]) -> Delivery:
        """Deliver finished runs."""
        ...


def output_interval(task: TaskRun) -> float:
    """Seconds between live output flushes of a run."""
    return task.sync_output if task.sync_output > 0 else DEFAULT_OUTPUT_INTERVAL_S


class Reporter:
    """Owns the outbox and the thread that empties it.

    Args:
        sender: delivers batches.
        active_runs: the pool's runs in progress (for their live output).
        can_send: False while the worker has no session; the thread then waits
            until `wake` is called.
    """

    def __init__(
        self,
        sender: Sender,
        active_runs: Callable[[], list[ActiveRun]],
        can_send: Callable[[], bool],
    ) -> None:
        self.outbox = Outbox()
        self._sender = sender
        self._active_runs = active_runs
        self._can_send = can_send
        self._cond = threading.Condition()
        self._output_due: dict[LeaseKey, float] = {}
        self._sleep_until = _NEVER  # when the thread wakes up by itself next
        self._flushing = False
        self._stopping = False
        self._backoff = Backoff()
        self._thread = threading.Thread(target=self._loop, name="taskgrid-reporter", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """End the thread (after its current call); unsent items stay in the outbox."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def add_report(self, result: RunResult) -> None:
        """Queue a finished run and wake the thread to send it now."""
        self.outbox.add_report(result)
        with self._cond:
            self._output_due.pop(result.task.key, None)
            self._cond.notify_all()

    def run_started(self, task: TaskRun) -> None:
        """A run started: wake the thread if its first output is due before the next wake-up."""
        with self._cond:
            if time.monotonic() + output_interval(task) < self._sleep_until:
                self._cond.notify_all()

    def wake(self) -> None:
        """Re-check everything now (e.g. a session is back)."""
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty and no call is in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._flushing and self.outbox.is_empty(), timeout_s
            )

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._has_work():
                    if self._stopping:
                        return
                    self._sleep_until = min(self._output_due.values(), default=_NEVER)
                    wait = self._sleep_until - time.monotonic()
                    self._cond.wait(None if self._sleep_until == _NEVER else max(0.0, wait))
                self._sleep_until = 0.0  # busy: a new run's schedule is picked up anyway
                self._flushing = True
            try:
                delivered = self.flush_once()
            except Exception:
                logger.exception("reporter cycle failed")
                delivered = False
            with self._cond:
                self._flushing = False
                self._cond.notify_all()
                if not delivered:
                    if self._stopping:
                        return
                    self._cond.wait(self._backoff.next_delay())
                else:
                    self._backoff.reset()

    def _has_work(self) -> bool:
        """Caller holds the lock: refresh output schedules; True when a send is due."""
        now = time.monotonic()
        active = {run.task.key: run for run in self._active_runs()}
        for key in [key for key in self._output_due if key not in active]:
            del self._output_due[key]
        for key, run in active.items():
            if key not in self._output_due:
                self._output_due[key] = run.started + output_interval(run.task)
        if not self._can_send():
            return False
        return (
            self.outbox.has_reports()
            or self.outbox.has_output()
            or any(due <= now for due in self._output_due.values())
        )

    def flush_once(self) -> bool:
        """Send due live output, then every finished run; False when a batch must wait."""
        now = time.monotonic()
        for run in self._active_runs():
            key = run.task.key
            with self._cond:
                if self._output_due.get(key, float("inf")) > now:
                    continue
                self._output_due[key] = now + output_interval(run.task)
            self.outbox.add_chunks(key, run.output.take())
        return self._send_output() and self._send_reports()

    def _send_output(self) -> bool:
        batch = self.outbox.take_output()
        while batch:
            try:
                delivery = self._sender.send_output(batch)
            except StaleLeasesError as error:
                self.outbox.discard(error.keys)
                batch = {key: chunks for key, chunks in batch.items() if key not in error.keys}
                continue
            if delivery is Delivery.RETRY:
                self.outbox.restore_output(batch)
                return False
            batch = self.outbox.take_output()
        return True

    def _send_reports(self) -> bool:
        batch = self.outbox.take_reports()
        while batch:
            try:
                delivery = self._sender.send_reports(batch)
            except StaleLeasesError as error:
                self.outbox.discard(error.keys)
                batch = [result for result in batch if result.task.key not in error.keys]
                continue
            if delivery is Delivery.RETRY:
                self.outbox.restore_reports(batch)
                return False
            self.outbox.settle_reports(batch)
            batch = self.outbox.take_reports()
        return True
