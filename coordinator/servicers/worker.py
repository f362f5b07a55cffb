"""WorkerService: register, lease, start, heartbeat, output, report. Thin: convert, call."""

from __future__ import annotations

import math
import socket

import grpc

from taskgrid.coordinator import leasing, output, runs, sessions
from taskgrid.coordinator.errors import InvalidRequestError, UnknownWorkerError
from taskgrid.coordinator.lifecycle import RunStatus, WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.servicers import convert, status
from taskgrid.coordinator.workers import LiveWorker
from taskgrid.v1 import common_pb2, worker_pb2, worker_pb2_grpc

MAX_NAME = 255
#: scheduler_worker.language is VARCHAR(64)
MAX_LANGUAGE = 64
MAX_HEARTBEAT_S = 3600.0
MAX_CAPACITY = 10_000
_OUTCOMES = {
    common_pb2.RUN_STATUS_COMPLETED: RunStatus.COMPLETED,
    common_pb2.RUN_STATUS_FAILED: RunStatus.FAILED,
    common_pb2.RUN_STATUS_TIMEOUT: RunStatus.TIMEOUT,
    common_pb2.RUN_STATUS_STOPPED: RunStatus.STOPPED,
}


def _outcome(r: worker_pb2.RunReport) -> runs.Outcome:
    if r.status not in _OUTCOMES:
        names = ", ".join(s.value for s in _OUTCOMES.values())
        raise InvalidRequestError("reports.status", f"must be one of {names}")
    chunks = tuple({**convert.chunk_dict(c), "task_id": r.ref.task_id,
                    "attempt": r.ref.attempt} for c in r.output)
    return runs.Outcome(r.ref.task_id, r.ref.attempt, _OUTCOMES[r.status],
                           convert.text(r.result) if r.HasField("result") else None,
                           convert.text(r.traceback), chunks)


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Serves the worker protocol over the shared runtime."""

    #: status.unary: each method checks serving itself (a refused heartbeat still counts)
    checks_serving = True

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def _session(self, session: worker_pb2.WorkerSession, beat: bool = False
                       ) -> LiveWorker:
        """The caller's live session; on PostgreSQL, one held elsewhere is moved here."""
        if not self.rt.cluster.serving():
            if beat:
                self.rt.registry.heard(session.worker_id, session.session_token)
            self.rt.cluster.check_serving()
        try:
            return self.rt.registry.authenticate(session.worker_id, session.session_token)
        except UnknownWorkerError:
            if not self.rt.cluster.shared or session.worker_id <= 0:
                raise
        return await self.rt.registry.adopt(session.worker_id, session.session_token)

    @status.unary
    async def Register(self, request: worker_pb2.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> worker_pb2.RegisterResponse:
        """Announce a worker; returns its session."""
        name = request.worker_name or f"{request.hostname or socket.gethostname()}#{request.pid}"
        if len(name) > MAX_NAME:
            raise InvalidRequestError("worker_name", f"at most {MAX_NAME} characters")
        if not math.isfinite(request.heartbeat) or not 0 <= request.heartbeat <= MAX_HEARTBEAT_S:
            raise InvalidRequestError("heartbeat", f"must be 0 (the coordinator's default) to "
                                      f"{MAX_HEARTBEAT_S:.0f} seconds")
        names = [name, request.language, request.hostname, *request.group_names,
                 *request.functions, *request.capabilities]
        if len(request.language) > MAX_LANGUAGE:
            raise InvalidRequestError("language", f"at most {MAX_LANGUAGE} characters")
        if any("\x00" in n or len(n) > MAX_NAME for n in names):
            raise InvalidRequestError("register", f"names must have no NUL characters and at "
                                      f"most {MAX_NAME} characters")
        if not 0 <= request.capacity <= MAX_CAPACITY:
            raise InvalidRequestError("capacity", f"must be 0 to {MAX_CAPACITY}")
        spec = {"worker_name": name, "group_names": list(request.group_names) or ["main"],
                "functions": list(request.functions), "capabilities": list(request.capabilities),
                "capacity": request.capacity or 1, "language": request.language,
                "hostname": request.hostname, "pid": request.pid,
                "heartbeat": request.heartbeat}
        self.rt.cluster.check_serving()
        w, token = await self.rt.registry.register(spec)
        w.told = w.status
        return worker_pb2.RegisterResponse(
            session=worker_pb2.WorkerSession(worker_id=w.id, session_token=token),
            heartbeat=w.heartbeat_s, status=convert.worker_status(w.status),
            dead_after=self.rt.config.dead_after_s(w.heartbeat_s), lease_takes_reports=True)

    @status.unary
    async def Lease(self, request: worker_pb2.LeaseRequest,
                    context: grpc.aio.ServicerContext) -> worker_pb2.LeaseResponse:
        """Apply the finished runs it carries, then lease due tasks, long-polling up to wait_s.

        A DISABLED worker that knows it is long-polls too: its call is held open (its
        reports applied first) until it is resumed or told something else, so `resume`
        reaches it at once (`Registry.hold_while_disabled`).
        """
        w = await self._session(request.session)
        if request.max_tasks < 0 or not request.wait_s >= 0:
            raise InvalidRequestError("max_tasks" if request.max_tasks < 0 else "wait_s",
                                      "must not be negative")
        outcomes = [_outcome(r) for r in request.reports]
        wait_s, reported = request.wait_s, []
        if w.status is WorkerStatus.DISABLED and w.told is WorkerStatus.DISABLED and wait_s > 0:
            if outcomes:
                reported = await runs.report(self.rt, w, outcomes)
                outcomes = []
            wait_s = max(0.0, wait_s - await self.rt.registry.hold_while_disabled(w, wait_s))
        answer, stale = await leasing.report_and_lease(
            self.rt, w, outcomes, request.max_tasks or 1, wait_s, request.prefetch)
        stale = [*reported, *stale]
        w.told = answer.status
        if answer.leases:
            sessions.hand_back_if_undelivered(self.rt, w, context, [g.ref for g in answer.leases])
        return worker_pb2.LeaseResponse(
            leases=[convert.lease_to_proto(g) for g in answer.leases],
            status=convert.worker_status(answer.status), stop=convert.ref_msgs(answer.stop),
            stale=convert.ref_msgs(stale))

    @status.unary
    async def StartRuns(self, request: worker_pb2.StartRunsRequest,
                        context: grpc.aio.ServicerContext) -> worker_pb2.StartRunsResponse:
        """Start prefetched leases."""
        w = await self._session(request.session)
        granted, stale = await leasing.start_runs(self.rt, w, convert.refs(request.leases))
        return worker_pb2.StartRunsResponse(leases=[convert.lease_to_proto(g) for g in granted],
                                            stale=convert.ref_msgs(stale))

    @status.unary
    async def Heartbeat(self, request: worker_pb2.HeartbeatRequest,
                        context: grpc.aio.ServicerContext) -> worker_pb2.HeartbeatResponse:
        """Record liveness; reply with the worker's status, the runs to stop, stale leases."""
        w = await self._session(request.session, beat=True)
        beat = await sessions.heartbeat(self.rt, w, convert.refs(request.running),
                                        max(0, request.rss_bytes), request.draining,
                                        request.leaving)
        w.told = w.status
        return worker_pb2.HeartbeatResponse(status=convert.worker_status(w.status),
                                            stop=convert.ref_msgs(beat.stop),
                                            heartbeat=w.heartbeat_s,
                                            stale=convert.ref_msgs(beat.stale))

    @status.unary
    async def SendOutput(self, request: worker_pb2.SendOutputRequest,
                         context: grpc.aio.ServicerContext) -> worker_pb2.SendOutputResponse:
        """Store live output chunks of running tasks; chunks of stale leases are dropped."""
        w = await self._session(request.session)
        stale = await output.append(self.rt, w, [convert.chunk_dict(c) for c in request.chunks])
        return worker_pb2.SendOutputResponse(stale=convert.ref_msgs(stale))

    @status.unary
    async def Report(self, request: worker_pb2.ReportRequest,
                     context: grpc.aio.ServicerContext) -> worker_pb2.ReportResponse:
        """Apply finished runs' outcomes; reports of stale leases are dropped and listed."""
        w = await self._session(request.session)
        outcomes = [_outcome(r) for r in request.reports]
        stale = await runs.report(self.rt, w, outcomes) if outcomes else []
        return worker_pb2.ReportResponse(stale=convert.ref_msgs(stale))

    @status.unary
    async def Release(self, request: worker_pb2.ReleaseRequest,
                      context: grpc.aio.ServicerContext) -> worker_pb2.ReleaseResponse:
        """Take back leases the worker will not run."""
        w = await self._session(request.session)
        refs = convert.refs(request.leases)
        stale = await leasing.release(self.rt, w, refs) if refs else []
        return worker_pb2.ReleaseResponse(stale=convert.ref_msgs(stale))
