"""The reporter thread: when to send live output and finished runs, and in what batches.

It decides timing and batching only; the sending itself (gRPC, error codes)
belongs to a `Sender`, which agent.py implements. Each cycle takes the due
output of every running run (each run every `sync_output` seconds, or
about every second when that is 0) into one SendOutput batch, then every
finished run into one Report batch, so the number of calls grows with time
and not with tasks. Nothing is polled: it sleeps until the next output is
due or until a run finishes.

What becomes of a batch the coordinator did not take depends on why
(`Delivery`): while the coordinator is away (RETRY) the batch goes back to
the outbox and the thread backs off, with no limit; when the coordinator
fails on it (FAILED: INTERNAL, UNKNOWN...) it is retried the same way, but
each lease only DEFAULT_SERVER_ERROR_TRIES times in all: then its report is
handed to `Sender.abandon_reports` (the lease goes back to the coordinator)
or its output is dropped, so a batch the coordinator cannot digest never
blocks the ones behind it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .backoff import Backoff
from .capture import Chunk
from .outbox import Outbox
from .records import ActiveRun, LeaseKey, RunResult, TaskRun, describe_leases

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_INTERVAL_S = 1.0
"""Live output cadence of a run whose sync_output is 0 (web2py: about 1 s)."""

DEFAULT_SERVER_ERROR_TRIES = 5
"""Calls failed by the coordinator itself (FAILED) a lease's report or output gets in all."""

_NEVER = float("inf")


class Delivery(enum.Enum):
    """What became of a batch handed to a Sender."""

    SENT = "sent"
    """Applied; leases the answer called stale were already dropped by the sender."""
    RETRY = "retry"
    """Not delivered (coordinator away): keep the batch and back off, without limit."""
    FAILED = "failed"
    """The coordinator failed on it (INTERNAL, UNKNOWN...): back off and retry, a
    bounded number of times (DEFAULT_SERVER_ERROR_TRIES per lease)."""
    DROP = "drop"
    """Not delivered and never will be (rejected, or the session is gone); the
    sender has already dealt with its leases."""


class StaleLeasesError(Exception):
    """An older coordinator refused a whole batch because these leases are no longer ours.

    The sender has already dropped them; the rest of the batch was not
    applied and is sent again without them. Raised only when `keys` leaves
    part of the batch to send, so every resend is smaller than the last.
    """

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

    def abandon_reports(self, batch: list[RunResult]) -> None:
        """Give up on these reports: hand their leases back and forget them."""
        ...

    def carrying(self) -> bool:
        """True while a Lease about to be sent will carry the finished runs instead."""
        ...


#: how long a finished run's report waits for the runs still going on to end too
REPORT_COALESCE_S = 0.002
#: at most this long a report waits for a Lease being prepared to carry it
CARRY_WAIT_S = 0.05


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
        # Server errors (Delivery.FAILED) so far, per lease, of its report and of its output.
        self._report_errors: dict[LeaseKey, int] = {}
        self._output_errors: dict[LeaseKey, int] = {}
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
                self._gather_reports()
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

    def _gather_reports(self) -> None:
        """Caller holds the lock: let more reports join, or leave them to the next Lease.

        A busy worker's runs end within moments of each other; waiting
        REPORT_COALESCE_S for them turns several Report calls into one. A lone
        run (nothing else active) is reported at once, unless the main loop is
        preparing a Lease, which then carries it (no Report call at all).
        """
        if self._stopping or not self.outbox.has_reports():
            return
        if self._active_runs():
            deadline = time.monotonic() + REPORT_COALESCE_S
            while not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        # The main loop is about to lease: the reports ride on that call (it wakes us when
        # it has taken them); the bound only guards against a wake-up that never comes.
        deadline = time.monotonic() + CARRY_WAIT_S
        while not self._stopping and self._sender.carrying():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

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
                rest = {key: chunks for key, chunks in batch.items() if key not in error.keys}
                self.outbox.discard(error.keys)
                if rest and len(rest) < len(batch):
                    batch = rest
                    continue
                delivery = Delivery.DROP  # nothing left, or no progress: never loop on it
            if delivery is Delivery.RETRY:
                self.outbox.restore_output(batch)
                return False
            if delivery is Delivery.FAILED:
                spent = _count_error(self._output_errors, batch, self.outbox.held_keys())
                if spent:
                    logger.error("SendOutput failed %s times: dropping that output "
                                 "(the runs go on) leases=%s", DEFAULT_SERVER_ERROR_TRIES,
                                 describe_leases(spent))  # fmt: skip
                    batch = {key: chunks for key, chunks in batch.items() if key not in spent}
                if batch:
                    self.outbox.restore_output(batch)
                    return False
            else:
                for key in batch:
                    self._output_errors.pop(key, None)
            batch = self.outbox.take_output()
        return True

    def _send_reports(self) -> bool:
        batch = self.outbox.take_reports()
        while batch:
            try:
                delivery = self._sender.send_reports(batch)
            except StaleLeasesError as error:
                rest = [result for result in batch if result.task.key not in error.keys]
                self.outbox.discard(error.keys)
                if rest and len(rest) < len(batch):
                    batch = rest
                    continue
                if rest:  # no progress (a sender bug): never loop on it
                    self._sender.abandon_reports(rest)
                delivery = Delivery.DROP
            if delivery is Delivery.RETRY:
                self.outbox.restore_reports(batch)
                return False
            if delivery is Delivery.FAILED:
                spent = _count_error(self._report_errors,
                                     [result.task.key for result in batch],
                                     self.outbox.held_keys())  # fmt: skip
                if spent:
                    given_up = [result for result in batch if result.task.key in spent]
                    self._sender.abandon_reports(given_up)
                    self.outbox.settle_reports(given_up)
                    batch = [result for result in batch if result.task.key not in spent]
                if batch:
                    self.outbox.restore_reports(batch)
                    return False
            else:
                for result in batch:
                    self._report_errors.pop(result.task.key, None)
                self.outbox.settle_reports(batch)
            batch = self.outbox.take_reports()
        return True


def _count_error(
    errors: dict[LeaseKey, int], keys: Iterable[LeaseKey], held: set[LeaseKey]
) -> set[LeaseKey]:
    """One more server error for each of `keys`; return those out of tries.

    Counts of leases neither in `keys` nor held by the outbox (dropped
    meanwhile) are forgotten, and so are those of the leases returned.
    """
    keys = list(keys)
    keep = held | set(keys)
    for key in [key for key in errors if key not in keep]:
        del errors[key]
    spent: set[LeaseKey] = set()
    for key in keys:
        errors[key] = errors.get(key, 0) + 1
        if errors[key] >= DEFAULT_SERVER_ERROR_TRIES:
            spent.add(key)
            del errors[key]
    return spent
