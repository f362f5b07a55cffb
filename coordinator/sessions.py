"""A worker session's heartbeat, and leases whose Lease reply never reached the worker.

Each step that commits and then updates memory runs shielded: a heartbeat
cancelled at an await (its caller gone) still finishes what it started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import grpc

from taskgrid.coordinator import leasing, runs
from taskgrid.coordinator.lifecycle import WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.workers import LiveWorker

logger = logging.getLogger(__name__)

Ref = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Beat:
    """A heartbeat's answer besides the worker's status."""

    stop: list[Ref]
    stale: list[Ref]


async def heartbeat(rt: Runtime, w: LiveWorker, refs: Sequence[Ref], rss_bytes: int,
                    draining: bool, leaving: bool) -> Beat:
    """Record liveness and the leases the worker lists; act on draining and leaving."""
    stale, orphans = rt.registry.heartbeat(w, refs, rss_bytes)
    if leaving:
        await asyncio.shield(rt.registry.declare_dead(w, "left"))
        return Beat([], stale)
    if draining:
        await asyncio.shield(rt.registry.set_status(WorkerStatus.TERMINATE, [], w.name))
    if orphans.never_listed:
        held = rt.leases.of_worker(w.id)
        refs_back = [(t, held[t].attempt) for t in orphans.never_listed if t in held]
        await asyncio.shield(leasing.hand_back(
            rt, w, refs_back, "never listed by its worker (the Lease reply was lost)"))
    if orphans.dropped:
        held = rt.leases.of_worker(w.id)
        lost = [(t, held[t].attempt) for t in orphans.dropped if t in held]
        await asyncio.shield(runs.lose(rt, w.name, "no longer holds the lease", lost))
    return Beat(rt.leases.stops(w.id), stale)


def hand_back_if_undelivered(rt: Runtime, w: LiveWorker, context: grpc.aio.ServicerContext,
                             refs: Sequence[Ref]) -> None:
    """When the Lease call ends cancelled (its reply undelivered), hand its leases back."""
    def done(ctx: grpc.aio.ServicerContext) -> None:
        if ctx.cancelled():
            rt.spawn(leasing.hand_back(rt, w, list(refs), "its Lease reply was not delivered"),
                     f"hand back leases of worker {w.name}")

    try:
        context.add_done_callback(done)
    except (AttributeError, NotImplementedError):  # pragma: no cover - older grpcio
        logger.debug("no done callback on this grpc context; orphan checks cover it")
