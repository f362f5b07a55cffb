"""AdminService: list workers, set their status."""

from __future__ import annotations

import grpc

from taskgrid.coordinator.lifecycle import WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.servicers import convert, status
from taskgrid.v1 import admin_pb2, admin_pb2_grpc, common_pb2


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Serves the admin API over the shared runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @status.unary
    async def ListWorkers(self, request: admin_pb2.ListWorkersRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.ListWorkersResponse:
        """Sessions here from memory; other coordinators' and dead workers from the rows.

        `alive` is the row's word and a heartbeat within dead_after (`Registry.seems_alive`):
        after a restart, a worker gone for longer than that is not shown alive while the
        reaper still waits for it to come back.
        """
        registry = self.rt.registry
        live, rows, held = await registry.listing(request.include_dead)
        workers = []
        for w in live:
            msg = convert.live_worker_to_proto(w)
            msg.alive = registry.session_alive(w)
            workers.append(msg)
        for r in rows:
            msg = convert.worker_row_to_proto(r, held.get(r["worker_name"], []))
            msg.alive = registry.row_alive(r)
            workers.append(msg)
        return admin_pb2.ListWorkersResponse(workers=workers)

    @status.unary
    async def SetWorkerStatus(self, request: admin_pb2.SetWorkerStatusRequest,
                              context: grpc.aio.ServicerContext
                              ) -> admin_pb2.SetWorkerStatusResponse:
        """Command the workers of some groups, or one worker by name."""
        wanted = WorkerStatus(convert.status_name(request.status, common_pb2.WorkerStatus,
                                                  "WORKER_STATUS_"))
        names = await self.rt.registry.set_status(wanted, list(request.group_names),
                                                  request.worker_name)
        return admin_pb2.SetWorkerStatusResponse(worker_names=names)
