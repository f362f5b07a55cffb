"""Hearing the other coordinators: LISTEN on PostgreSQL, and acting on what they committed.

The store sends notes with each transaction that changed something other
coordinators cache (notes.py); here one dedicated connection per coordinator
listens for them and applies each to this node's memory:

- work queued or requeued wakes the parked Lease calls that can run it;
- a worker status set elsewhere (disable, terminate, kill) reaches the session here;
- a stop request reaches the lease mirror here, and the worker's pending Lease;
- a worker declared dead, or whose session another node took, is dropped here;
- a changed task wakes its WatchTask streams here, which read it again;
- tasks that expire or broadcast make the leader read its timers again.

Every one of these is also found by a poll (the parked Lease's safety poll,
the node beat, the reconcile pass, the watch poll), so a lost notification
costs seconds. After the listener (re)connects, everything is checked again at
once, since notifications sent while it was away are gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from taskgrid.coordinator import notes
from taskgrid.coordinator.errors import StoreUnavailableError
from taskgrid.coordinator.runtime import Runtime

logger = logging.getLogger(__name__)

#: backoff bounds between reconnects of the listening connection
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class Listener:
    """One LISTEN connection, reconnected with a backoff; notes are applied on the loop."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.connected = False
        self.received = 0

    async def loop(self, stopping: asyncio.Event) -> None:
        """Listen until `stopping` is set (the task is cancelled at shutdown)."""
        delay = RETRY_MIN_S
        while not stopping.is_set():
            try:
                async for payload in self.rt.store.notifications():
                    if payload is None:  # listening (again): what came meanwhile is lost
                        self.connected = True
                        delay = RETRY_MIN_S
                        logger.info("listening for other coordinators channel=%s",
                                    notes.CHANNEL)
                        recheck(self.rt)
                        continue
                    self.received += 1
                    apply(self.rt, payload)
            except StoreUnavailableError as exc:
                logger.warning("listener away; retrying in %.1f s error=%s", delay, exc)
            finally:
                self.connected = False
            await _sleep(stopping, delay)
            delay = min(RETRY_MAX_S, delay * 2)


async def _sleep(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass


def recheck(rt: Runtime) -> None:
    """After (re)connecting: notes sent meanwhile are lost, so look at everything again."""
    rt.signal.fire()
    for task_id in rt.feed.watched():
        rt.feed.publish(task_id, {"recheck": True})
    rt.reaper.next_reconcile = 0.0
    rt.wake_reaper.set()
    if rt.cluster.is_leader():
        rt.spawn(rt.timers.load(), "reload timers")


def apply(rt: Runtime, payload: str) -> None:
    """Act on one notification from another coordinator (our own are ignored)."""
    msg = notes.parse(payload)
    if msg is None or msg["node"] == rt.store.node:
        return
    if not rt.store.peers:  # a node just started (its hello) or one this node missed
        rt.store.peers = rt.cluster.peers = 1
    try:
        _apply(rt, msg)
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("ignored a malformed notification error=%r", exc)


def _apply(rt: Runtime, msg: dict[str, Any]) -> None:
    registry = rt.registry
    for worker_id, status in (msg.get("workers") or {}).items():
        registry.apply_status(int(worker_id), status)
    for worker_id in msg.get("dead") or ():
        registry.drop_session(int(worker_id), "declared dead by the leader")
    for worker_id, node in (msg.get("moved") or {}).items():
        if node != rt.store.node and int(worker_id) in registry.by_id:
            rt.spawn(registry.check_moved(int(worker_id)), "check a moved session")
    for task_id, attempt in msg.get("stops") or ():
        if rt.leases.request_stop(task_id, attempt):
            held = rt.leases.get(task_id)
            owner = registry.by_id.get(held.worker_id) if held is not None else None
            if owner is not None:
                owner.notify()
    for task_id in msg.get("tasks") or ():
        if rt.feed.is_watched(task_id):
            rt.feed.publish(task_id, {"recheck": True})
    work = msg.get("work")
    if work is not None:
        kinds = {(k[0], k[1], k[2]) for k in work.get("kinds") or ()}
        if work.get("any") or not kinds:
            rt.signal.fire()
        else:
            rt.signal.fire(kinds, int(work.get("count") or len(kinds)))
    if msg.get("timers") and rt.cluster.is_leader():
        rt.spawn(rt.timers.load(), "reload timers")
