"""Several coordinators on one PostgreSQL database: this node's beat, the leader, serving.

Every coordinator on PostgreSQL is a *node*. Once per NODE_BEAT_S it runs its
beat, off the store's executor so a busy pool never delays it:

1. one transaction writes its node row, the heartbeat times its workers sent
   since the last beat (one executemany), and reads back the live worker rows
   (who holds which session, their status) and how many other nodes are alive;
2. one transaction renews its leadership, or takes it if it lapsed
   (`Tx.claim_leader`: a leader row with a lease judged on the database's clock,
   and an epoch that grows with each new leader).

Exactly one node at a time runs maintenance (the reaper's passes and the
timers): the one whose lease is still running by its own monotonic clock,
measured from *before* the renewal was sent, minus a margin. Every store body a
maintenance pass submits is fenced (`fenced`): it first checks, under a share
lock on the leader row, that this node still holds its epoch, so a deposed or
cut-off leader's late writes change nothing.

A node whose beats have not reached the database for NODE_TTL_S stops
serving: worker and client calls get UNAVAILABLE, and workers move to another
coordinator, which takes their sessions over (workers.Registry.adopt).

SQLite keeps one coordinator per file: there the node is always the leader,
always serving, and writes no node row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from taskgrid.coordinator.errors import StoreUnavailableError
from taskgrid.coordinator.runtime import repeat
from taskgrid.coordinator.store import FENCE, Row, Tx
from taskgrid.coordinator.workers import RECONNECT_GRACE_S

if TYPE_CHECKING:
    from taskgrid.coordinator.runtime import Runtime

logger = logging.getLogger(__name__)

#: how often a node writes its row and its workers' heartbeat times, and renews leadership
NODE_BEAT_S = 1.0
#: a leader's lease in the database; another node takes over once it has run out
LEADER_TTL_S = 4.0
#: a leader stops leading this long before its lease ends by the database's reckoning
LEADER_MARGIN_S = 0.5
#: a node whose beat has not reached the database for this long stops serving; a node row
#: this old belongs to a node that is gone
NODE_TTL_S = 4.0


def node_name() -> str:
    """A name no other coordinator process has: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Cluster:
    """This node's view of the others: leadership, serving, the latest worker rows."""

    def __init__(self, rt: Runtime, shared: bool, node: str, listen: str) -> None:
        self.rt = rt
        self.shared = shared
        self.node = node
        self.listen = listen
        self.epoch: int | None = None
        now = time.monotonic()
        self.leader_until = 0.0
        self.served_until = now + NODE_TTL_S
        #: judgments from the rows count silence only from here: at a start, workers get
        #: RECONNECT_GRACE_S to come back (unless another node has been serving for that long);
        #: after an outage, the others get two beats to write the heartbeats they heard
        self.healthy_since = now + RECONNECT_GRACE_S
        #: the live worker rows of the last beat, and when that beat began (monotonic)
        self.rows: list[Row] = []
        self.rows_at = 0.0
        self.peers = 0
        self.started_at = rt.clock.now()
        self._down_since: float | None = None

    def is_leader(self, now_mono: float | None = None) -> bool:
        """Does this node run maintenance now?"""
        if not self.shared:
            return True
        return (time.monotonic() if now_mono is None else now_mono) < self.leader_until

    def serving(self, now_mono: float | None = None) -> bool:
        """Has this node reached the database recently enough to serve?"""
        if not self.shared:
            return True
        return (time.monotonic() if now_mono is None else now_mono) < self.served_until

    @property
    def db_ok(self) -> bool:
        """Did the last node beat reach the database?"""
        return self._down_since is None

    def check_serving(self) -> None:
        """Raise StoreUnavailableError while this node is cut off from the database.

        Callers go to another coordinator (workers and clients given several addresses
        move on at once); a worker's heartbeat is still counted before it is refused
        (WorkerServicer), so its silence is judged truly when the database is back.
        """
        if not self.serving():
            raise StoreUnavailableError(
                "this coordinator cannot reach its database; use another coordinator")

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """Fence the store bodies submitted inside: they apply only while this epoch leads."""
        if not self.shared or self.epoch is None:
            yield
            return
        token = FENCE.set((self.node, self.epoch))
        try:
            yield
        finally:
            FENCE.reset(token)

    async def beat(self) -> None:
        """One beat: the node row and heartbeat times, then leadership (see the module doc)."""
        rt = self.rt
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        now = rt.clock.now()
        beats = rt.registry.unflushed_beats()
        values = {"node_name": self.node, "hostname": socket.gethostname(), "pid": os.getpid(),
                  "listen": self.listen, "started_at": self.started_at, "last_seen": now}
        cutoff = now.timestamp() - NODE_TTL_S

        settled = now.timestamp() - RECONNECT_GRACE_S

        def write(tx: Tx) -> tuple[list[Row], int, bool]:
            tx.touch_node(values)
            tx.touch_workers(beats)
            others = [n for n in tx.nodes() if n["node_name"] != self.node
                      and n["last_seen"].timestamp() > cutoff]
            # Another node has served long enough that live workers' rows are fresh.
            watched = any(n["started_at"].timestamp() < settled for n in others)
            return tx.workers(alive_only=True), len(others), watched

        try:
            rows, peers, watched = await loop.run_in_executor(None, rt.store.transact, write)
        except StoreUnavailableError as exc:
            rt.registry.unflush(beats)
            if self._down_since is None:
                self._down_since = started
                logger.warning("node beat failed; serving for %.0f s more error=%s",
                               max(0.0, self.served_until - started), exc)
            return
        if self._down_since is not None or not self.serving(started):
            # Heartbeats heard meanwhile are written now (here) or at the others' next beats.
            self.healthy_since = max(self.healthy_since, time.monotonic() + 2 * NODE_BEAT_S)
            logger.warning("node beat reached the database again after %.1f s",
                           started - (self._down_since or started))
            self._down_since = None
        if watched and self.rows_at == 0.0:
            self.healthy_since = started  # no start grace: the others kept the rows fresh
        self.served_until = started + NODE_TTL_S
        self.rows, self.rows_at = rows, started
        if peers != self.peers:
            logger.info("coordinators on this database: %d (this one and %d others)",
                        peers + 1, peers)
        self.peers = rt.store.peers = peers
        rt.registry.sync(rows, started)
        await self._lead(loop)

    async def _lead(self, loop: asyncio.AbstractEventLoop) -> None:
        started = time.monotonic()
        was = self.is_leader(started)
        try:
            epoch = await loop.run_in_executor(
                None, self.rt.store.transact, lambda tx: tx.claim_leader(self.node, LEADER_TTL_S))
        except Exception as exc:  # noqa: BLE001 - a lock wait or an outage: the lease runs out
            logger.warning("leader renewal failed error=%s", exc)
            return
        if epoch is None:
            self.leader_until = 0.0
            if was:
                logger.warning("no longer the maintenance leader node=%s epoch=%s", self.node,
                               self.epoch)
            return
        self.leader_until = started + LEADER_TTL_S - LEADER_MARGIN_S
        if not was or epoch != self.epoch:
            self.epoch = epoch
            logger.info("maintenance leader node=%s epoch=%d", self.node, epoch)
            await self.rt.reaper.elected()

    async def loop(self, stopping: asyncio.Event) -> None:
        """Beat every NODE_BEAT_S until `stopping` is set (`leave` then ends the node)."""
        await repeat(self.beat, NODE_BEAT_S, stopping, "node beat")

    def leave(self) -> None:
        """At a clean stop: give leadership up at once and remove the node row (blocking)."""
        def leave(tx: Tx) -> None:
            tx.release_leader(self.node)
            tx.remove_node(self.node)
        self.leader_until = 0.0
        try:
            self.rt.store.transact(leave)
        except Exception as exc:  # noqa: BLE001 - the lease and the row run out on their own
            logger.warning("could not hand leadership over at stop error=%s", exc)
