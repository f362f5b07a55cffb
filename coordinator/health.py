"""The standard gRPC health service (grpc.health.v1), kept true to the database.

Probes (Kubernetes' gRPC probes, load balancers, `grpc_health_probe`) ask
`Health/Check` with no credentials. The answer is SERVING only while the
coordinator can reach its database:

- PostgreSQL: its last node beat (cluster.py, every second) reached the database;
- SQLite: its last transaction did not fail for want of the database;
- and NOT_SERVING for good once a shutdown has begun.

The overall status ("") and each taskgrid service's carry the same value. The
status is recomputed every CHECK_INTERVAL_S from facts already known, so an
idle coordinator asks its database nothing for its probes.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from taskgrid.coordinator.runtime import Runtime, repeat

logger = logging.getLogger(__name__)

#: how often the status is recomputed
CHECK_INTERVAL_S = 0.5
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """The health servicer and the loop that keeps its status."""

    def __init__(self, rt: Runtime, services: list[str]) -> None:
        self.rt = rt
        self.services = ["", *services]
        self.servicer = health.aio.HealthServicer()
        self.status: int | None = None

    def serving(self) -> bool:
        """Can this coordinator reach its database now?"""
        if self.rt.cluster.shared:
            return self.rt.cluster.db_ok
        return self.rt.store.healthy

    async def update(self) -> None:
        """Publish the current status (and log a change)."""
        status = SERVING if self.serving() else NOT_SERVING
        if status == self.status:
            return
        if self.status is not None:
            logger.warning("health %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        self.status = status
        for service in self.services:
            await self.servicer.set(service, status)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Keep the status until `stopping` is set."""
        await repeat(self.update, CHECK_INTERVAL_S, stopping, "health update")

    async def shutting_down(self) -> None:
        """NOT_SERVING from now on: probes and balancers stop sending calls here."""
        await self.servicer.enter_graceful_shutdown()
