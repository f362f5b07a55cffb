"""Delivery of output and reports, and what the agent does when a call fails.

`DeliveryMixin` is the part of `Agent` (agent.py) that hands the reporter's
batches to the coordinator (``send_output`` / ``send_reports`` /
``abandon_reports``, the reporter.Sender protocol), hands leases back
(``_release``) and reacts to every answer and failed call:

- stale leases, listed in an answer's ``stale`` field, were not applied
  while everything else was: their runs are stopped and dropped with their
  output and reports (``_drop_stale``, one WARNING per lease) and nothing
  is sent again. An older coordinator's FAILED_PRECONDITION (all or nothing,
  the ``taskgrid-stale-leases`` trailer naming them) drops what it names and
  sends the rest again, or drops the whole batch when it names none of it;
- NOT_FOUND (or UNAUTHENTICATED) on a session call: the coordinator forgot
  this worker, so every run is stopped and dropped before registering again;
- UNAVAILABLE and DEADLINE_EXCEEDED: the coordinator is away. With several
  coordinator addresses the call has moved to the next one and been sent
  again there (`_call`, docs/connecting.md): the session, the leases and
  the runs are kept, whichever coordinator answers. Only when every
  address failed in a row is the batch kept and retried without limit
  (Delivery.RETRY);
- INVALID_ARGUMENT and PERMISSION_DENIED: the batch can never be applied;
  reports are given up (their leases handed back), output is dropped;
- anything else (INTERNAL, UNKNOWN, ...): the coordinator failed on the
  batch; the reporter retries it a bounded number of times (Delivery.FAILED),
  then gives it up the same way.

An outage is logged once, then only counted. The mixin owns no thread and
no loop: retry timing belongs to the reporter and the agent's loops, message
building to ``_convert``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from taskgrid.client._failover import Failover
from taskgrid.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from ._convert import chunk_to_pb, lease_keys, lease_ref, report_to_pb, stale_keys
from .backoff import Backoff
from .capture import Chunk
from .records import LeaseKey, Outcome, RunResult, describe_leases
from .reporter import (
    DEFAULT_SERVER_ERROR_TRIES,
    Delivery,
    Reporter,
    StaleLeasesError,
)
from .runner import Pool

# The agent's logger: these lines were always logged as the agent's, and log filters
# and readers keyed on that name keep working.
logger = logging.getLogger("taskgrid.worker.agent")

DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_RELEASE_TRIES = 5
"""Release calls made to hand leases back before leaving it to the coordinator."""
DEFAULT_WARNED_MEMORY = 4096
"""Stale leases remembered so that each is logged at WARNING once."""

SESSION_GONE = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED})
"""On a call with a session: the coordinator does not know this session (any more)."""
OUTAGE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The coordinator (or its database) is away: retried with backoff, without limit."""
REJECTED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED})
"""The call can never succeed as it is: never retried."""
LONG_POLL = frozenset({"Lease"})
"""Calls that may wait for work until their deadline: a timeout there is no sign of an outage."""


def moves_on(method: str, error: grpc.RpcError) -> bool:
    """Whether a failed call means its coordinator is away, so the next address is tried.

    UNAVAILABLE (no connection, or it was lost), or no answer in time from a
    call that does not long-poll. The Go worker applies the same rule.
    """
    code = error.code()
    return bool(code == grpc.StatusCode.UNAVAILABLE
                or (code == grpc.StatusCode.DEADLINE_EXCEEDED and method not in LONG_POLL))


class DeliveryMixin:
    """Delivery and call-failure handling of `Agent`, which sets these attributes."""

    _cond: threading.Condition
    _pool: Pool
    _reporter: Reporter
    _session: worker_pb2.WorkerSession | None
    _generation: int
    _held: set[LeaseKey]
    _unfinished: set[LeaseKey]
    _dropped: set[LeaseKey]
    _warned: dict[LeaseKey, None]
    _failed_calls: int
    _link: Failover[worker_pb2_grpc.WorkerServiceStub]

    # ---- delivery (reporter.Sender) -----------------------------------------------

    def send_output(self, batch: dict[LeaseKey, list[Chunk]]) -> Delivery:
        """Deliver live output chunks in one SendOutput call."""
        chunks = [chunk_to_pb(key, chunk) for key, items in batch.items() for chunk in items]
        return self._deliver("SendOutput", set(batch), lambda session: self._call(
            "SendOutput", worker_pb2.SendOutputRequest(session=session, chunks=chunks),
            DEFAULT_RPC_TIMEOUT_S))  # fmt: skip

    def send_reports(self, batch: list[RunResult]) -> Delivery:
        """Deliver finished runs in one Report call; the delivered ones are no longer held."""
        keys = {result.task.key for result in batch}
        reports = [report_to_pb(result) for result in batch]
        delivery = self._deliver("Report", keys, lambda session: self._call(
            "Report", worker_pb2.ReportRequest(session=session, reports=reports),
            DEFAULT_RPC_TIMEOUT_S), rejected=lambda why: self.abandon_reports(batch, why))
        if delivery is Delivery.SENT:
            self._forget(keys)
            logger.debug("reported runs=%s", len(batch))
        return delivery

    def abandon_reports(self, batch: list[RunResult], reason: str = "") -> None:
        """Give up on these reports: log it, hand their leases back (best effort), forget them.

        The coordinator queues the tasks again. Should the Release fail too,
        it takes the leases back itself once heartbeats stop listing them.
        """
        keys = {result.task.key for result in batch}
        if not keys:
            return
        reason = reason or f"the coordinator failed on them {DEFAULT_SERVER_ERROR_TRIES} times"
        logger.error("giving up on reports (%s): handing their leases back leases=%s",
                     reason, describe_leases(keys))  # fmt: skip
        with self._cond:
            session = self._session
        if session is not None:
            self._release(session, keys)
        self._forget(keys)

    def _deliver(
        self,
        method: str,
        keys: set[LeaseKey],
        call: Callable[[worker_pb2.WorkerSession], Any],
        rejected: Callable[[str], None] | None = None,
    ) -> Delivery:
        """Make one delivery call about `keys` and sort out its answer.

        `rejected(reason)` is called when the batch will never be applied
        (and the caller must deal with its leases); raises StaleLeasesError
        when an older coordinator refused it for some of its leases only.
        """
        with self._cond:
            session, generation = self._session, self._generation
        if session is None:
            return Delivery.DROP  # the session went, and every lease with it
        try:
            response = call(session)
        except grpc.RpcError as error:
            code = error.code()
            if code in SESSION_GONE:
                self._lose_session(generation, code)
                return Delivery.DROP
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                return self._refused_as_stale(method, keys, error, rejected)
            self._log_failure(method, error)
            if code in REJECTED:
                if rejected is not None:
                    rejected(f"{method} rejected: {code.name}")
                return Delivery.DROP
            return Delivery.RETRY if code in OUTAGE else Delivery.FAILED
        self._note_success()
        self._drop_stale(lease_keys(response.stale), method)
        return Delivery.SENT

    def _refused_as_stale(
        self,
        method: str,
        keys: set[LeaseKey],
        error: grpc.RpcError,
        rejected: Callable[[str], None] | None,
    ) -> Delivery:
        """An older coordinator's all-or-nothing refusal: nothing of the batch was applied."""
        named = stale_keys(error)
        self._drop_stale(named, method)
        rest = keys - named
        if named & keys and rest:
            raise StaleLeasesError(named & keys)  # the reporter sends the rest again
        if rest:  # it names none of them: which lease is stale cannot be told
            logger.warning("%s refused (FAILED_PRECONDITION) without naming a lease of the "
                           "batch: dropping it leases=%s details=%s", method,
                           describe_leases(rest), error.details())  # fmt: skip
            if rejected is not None:
                rejected(f"{method} refused as stale")
        return Delivery.DROP

    # ---- leases ---------------------------------------------------------------------

    def held_leases(self) -> list[LeaseKey]:
        """Every lease this worker holds, for Heartbeat.running.

        A lease is held from the Lease answer that granted it until its report
        is acknowledged, or until it is handed back or dropped, whatever the
        run is doing in between (queued, running, finished with the report
        not yet queued, queued for delivery, in flight).
        """
        with self._cond:
            return sorted(self._held)

    def _forget(self, keys: Iterable[LeaseKey]) -> None:
        """These leases are over for this worker (reported, handed back or given up)."""
        with self._cond:
            self._held.difference_update(keys)

    def _drop_stale(self, keys: set[LeaseKey], method: str) -> None:
        """The coordinator says these leases are no longer ours: stop and forget them.

        Their runs are stopped as for a stop command and their output and
        reports dropped; each lease is logged at WARNING once (leases already
        forgotten, e.g. a report the coordinator had applied before a retry,
        only at DEBUG).
        """
        if not keys:
            return
        with self._cond:
            ours = keys & (self._held | self._unfinished)
            self._held -= keys
            self._dropped |= keys & self._unfinished  # their outcome must not be reported
            self._reporter.outbox.discard(keys)
            running = keys & set(self._pool.active_keys())
            fresh = sorted(key for key in ours if key not in self._warned)
            for key in fresh:
                self._warned[key] = None
            while len(self._warned) > DEFAULT_WARNED_MEMORY:
                del self._warned[next(iter(self._warned))]
        if fresh:
            logger.warning("%s: the coordinator says this worker no longer holds these leases "
                           "(stopped, timed out or given to another worker): stopping their "
                           "runs, dropping their output and reports leases=%s",
                           method, describe_leases(fresh))  # fmt: skip
        if keys - ours:
            logger.debug("%s: leases already forgotten called stale leases=%s",
                         method, describe_leases(keys - ours))  # fmt: skip
        for key in running:
            self._pool.stop(key, Outcome.STOPPED)

    def _release(self, session: worker_pb2.WorkerSession, keys: Iterable[LeaseKey]) -> bool:
        """Hand leases back with Release (best effort, a few tries); True when it was applied.

        The coordinator queues them again at once. If it cannot be reached,
        it takes them back itself once heartbeats stop listing them.
        """
        left = set(keys)
        backoff = Backoff()
        for attempt in range(1, DEFAULT_RELEASE_TRIES + 1):
            refs: list[common_pb2.LeaseRef] = [lease_ref(key) for key in sorted(left)]
            if not refs:
                return True
            try:
                response = self._call(
                    "Release", worker_pb2.ReleaseRequest(session=session, leases=refs),
                    DEFAULT_RPC_TIMEOUT_S)  # fmt: skip
            except grpc.RpcError as error:
                code = error.code()
                named = stale_keys(error) & left
                if code == grpc.StatusCode.FAILED_PRECONDITION and named:
                    left -= named  # an older coordinator: nothing applied, resend the rest
                    continue
                final = code in SESSION_GONE or code in REJECTED or (
                    code == grpc.StatusCode.FAILED_PRECONDITION)
                if final or attempt == DEFAULT_RELEASE_TRIES:
                    logger.warning("Release failed code=%s leases=%s",
                                   code.name, describe_leases(left))  # fmt: skip
                    return False
                time.sleep(backoff.next_delay())
                continue
            gone = lease_keys(response.stale)
            if gone:
                logger.debug("Release: leases already gone leases=%s", describe_leases(gone))
            return True
        return False

    # ---- failures and sessions ----------------------------------------------------

    def _call(self, method: str, request: Any, timeout: float) -> Any:
        """Call `method` on the current coordinator; when it is away, on the next ones.

        The call moves on (`moves_on`) and is sent again at once, each address
        at most once; the last error is raised when every one failed in a row,
        and the caller's own rules (backoff, Delivery.RETRY) take over. Moving
        keeps the session: a coordinator that does not know it answers
        NOT_FOUND, and the usual session-lost rule registers again.
        """
        return self._link.call(
            lambda stub: getattr(stub, method)(request, timeout=timeout),
            lambda error: moves_on(method, error))

    @property
    def _stub(self) -> worker_pb2_grpc.WorkerServiceStub:
        """The stub of the current channel (tests assign a fake to it)."""
        return self._link.current()

    @_stub.setter
    def _stub(self, stub: worker_pb2_grpc.WorkerServiceStub) -> None:
        self._link.replace(stub)

    def _failed(self, method: str, error: grpc.RpcError, generation: int) -> bool:
        """React to a failed Lease or Heartbeat; True when the caller may go on at once."""
        code = error.code()
        if code in SESSION_GONE:
            self._lose_session(generation, code)
            return True
        self._log_failure(method, error)
        return False

    def _log_failure(self, method: str, error: grpc.RpcError) -> None:
        """Log a failed call; an outage is logged once, then only counted."""
        code = error.code()
        if code in REJECTED:
            logger.error("%s rejected code=%s details=%s", method, code.name, error.details())
            return
        with self._cond:
            self._failed_calls += 1
            first = self._failed_calls == 1
        if first:
            logger.warning("%s failed, retrying with backoff code=%s details=%s",
                           method, code.name, error.details())  # fmt: skip
        else:
            logger.debug("%s failed again code=%s", method, code.name)

    def _note_success(self) -> None:
        if self._failed_calls:
            with self._cond:
                failed, self._failed_calls = self._failed_calls, 0
            if failed:
                logger.info("coordinator answering again after failed_calls=%s", failed)

    def _lose_session(self, generation: int, code: grpc.StatusCode) -> None:
        """The coordinator forgot this worker: drop every lease, then register again."""
        with self._cond:
            if generation != self._generation or self._session is None:
                return
            logger.warning("session lost (%s): stopping runs, registering again", code.name)
            self._session = None
            self._generation += 1
            running = set(self._pool.active_keys())
            self._dropped |= self._unfinished
            self._held.clear()
            self._reporter.outbox.clear()
            self._cond.notify_all()
        for key in running:
            self._pool.stop(key, Outcome.STOPPED)

    def _has_session(self) -> bool:
        return self._session is not None
