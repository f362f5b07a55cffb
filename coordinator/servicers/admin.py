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
        """Sessions here from memory; other coordinators' and dead workers from the rows."""
        live, rows, held = await self.rt.registry.listing(request.include_dead)
        return admin_pb2.ListWorkersResponse(
            workers=[convert.live_worker_to_proto(w) for w in live]
            + [convert.worker_row_to_proto(r, held.get(r["worker_name"], [])) for r in rows])

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
