"""Delivery of output and reports, and what the agent does when a call fails.

`DeliveryMixin` is the part of `Agent` (agent.py) that hands the reporter's
batches to the coordinator (``send_output`` / ``send_reports``, the
reporter.Sender protocol) and reacts to any failed call: a lost session
(NOT_FOUND) stops and drops every run before registering again, stale leases
named in a FAILED_PRECONDITION are stopped and forgotten, and an outage is
logged once, then only counted. It owns no thread and no loop: retry timing
belongs to the reporter and the agent's loops, message building to
``_convert``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from taskgrid.v1 import worker_pb2, worker_pb2_grpc
from taskgrid.worker._convert import chunk_to_pb, report_to_pb, stale_keys
from taskgrid.worker.capture import Chunk
from taskgrid.worker.records import LeaseKey, Outcome, RunResult
from taskgrid.worker.reporter import Delivery, Reporter, StaleLeasesError
from taskgrid.worker.runner import Pool

# The agent's logger: these lines were always logged as the agent's, and log filters
# and readers keyed on that name keep working.
logger = logging.getLogger("taskgrid.worker.agent")

DEFAULT_RPC_TIMEOUT_S = 10.0

_SESSION_GONE = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED}
_NEVER_RETRY = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}


class DeliveryMixin:
    """Delivery and call-failure handling of `Agent`, which sets these attributes."""

    _cond: threading.Condition
    _pool: Pool
    _reporter: Reporter
    _session: worker_pb2.WorkerSession | None
    _generation: int
    _dropped: set[LeaseKey]
    _failed_calls: int
    _stub: worker_pb2_grpc.WorkerServiceStub | None

    # ---- delivery (reporter.Sender) -----------------------------------------------

    def send_output(self, batch: dict[LeaseKey, list[Chunk]]) -> Delivery:
        """Deliver live output chunks in one SendOutput call."""
        chunks = [chunk_to_pb(key, chunk) for key, items in batch.items() for chunk in items]
        return self._deliver("SendOutput", lambda session: self._rpc().SendOutput(
            worker_pb2.SendOutputRequest(session=session, chunks=chunks),
            timeout=DEFAULT_RPC_TIMEOUT_S))  # fmt: skip

    def send_reports(self, batch: list[RunResult]) -> Delivery:
        """Deliver finished runs in one Report call."""
        reports = [report_to_pb(result) for result in batch]
        delivery = self._deliver("Report", lambda session: self._rpc().Report(
            worker_pb2.ReportRequest(session=session, reports=reports),
            timeout=DEFAULT_RPC_TIMEOUT_S))  # fmt: skip
        if delivery is Delivery.SENT:
            logger.debug("reported runs=%s", len(batch))
        return delivery

    def _deliver(self, method: str, call: Callable[[worker_pb2.WorkerSession], object]) -> Delivery:
        with self._cond:
            session, generation = self._session, self._generation
        if session is None:
            return Delivery.DROP
        try:
            call(session)
        except grpc.RpcError as error:
            stale = stale_keys(error)
            if self._failed(method, error, generation) and stale:
                raise StaleLeasesError(stale) from None
            code = error.code()
            return Delivery.DROP if code in _SESSION_GONE | _NEVER_RETRY else Delivery.RETRY
        self._note_success()
        return Delivery.SENT

    # ---- failures and sessions ----------------------------------------------------

    def _rpc(self) -> worker_pb2_grpc.WorkerServiceStub:
        assert self._stub is not None, "Agent.run() creates the channel"
        return self._stub

    def _failed(self, method: str, error: grpc.RpcError, generation: int) -> bool:
        """React to a failed call; True when the caller may go on without a backoff."""
        code = error.code()
        if code in _SESSION_GONE:
            self._lose_session(generation, code)
            return True
        stale = stale_keys(error)
        if code == grpc.StatusCode.FAILED_PRECONDITION and stale:
            self._drop_leases(stale, method)
            return True
        self._log_failure(method, error)
        return False

    def _log_failure(self, method: str, error: grpc.RpcError) -> None:
        """Log a failed call; an outage is logged once, then only counted."""
        code = error.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            logger.error("%s rejected as invalid: %s", method, error.details())
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

    def _drop_leases(self, keys: set[LeaseKey], method: str) -> None:
        """The coordinator says these leases are no longer ours: stop and forget them."""
        logger.warning("%s: coordinator rejected stale leases %s", method, sorted(keys))
        with self._cond:
            running = keys & set(self._pool.active_keys())
            self._dropped |= running
        self._reporter.outbox.discard(keys)
        for key in running:
            self._pool.stop(key, Outcome.STOPPED)

    def _lose_session(self, generation: int, code: grpc.StatusCode) -> None:
        """The coordinator forgot this worker: drop every lease, then register again."""
        with self._cond:
            if generation != self._generation or self._session is None:
                return
            logger.warning("session lost (%s): stopping runs, registering again", code.name)
            self._session = None
            self._generation += 1
            running = set(self._pool.active_keys())
            self._dropped |= running
            self._reporter.outbox.clear()
            self._cond.notify_all()
        for key in running:
            self._pool.stop(key, Outcome.STOPPED)

    def _has_session(self) -> bool:
        return self._session is not None
