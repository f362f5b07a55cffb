"""Worker sessions: registration, authentication, heartbeats, admin commands.

The worker row is the truth: a worker is alive while its row says so, and
only the reaper (through runs.lose) turns it dead, in the transaction that
takes its leases back. A heartbeat writes no row: this process judges
liveness from the heartbeats it receives (monotonic time), and the reaper
writes their times to the rows in one batch per reconcile pass. After a
restart every row still marked alive gets a fresh `dead_after` to heartbeat
again before it is declared dead.

`LiveWorker` is the session cache, written only here; its leases are a view
of `rt.leases`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from taskgrid.coordinator import lifecycle, runs
from taskgrid.coordinator.errors import (
    BadSessionError,
    DuplicateWorkerError,
    UnknownWorkerError,
)
from taskgrid.coordinator.leases import Held, Leases, Orphans
from taskgrid.coordinator.lifecycle import WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx
from taskgrid.coordinator.validation import COMMAND_FUNCTION

logger = logging.getLogger(__name__)

#: the capability a worker declares to run command tasks
COMMAND_CAPABILITY = "command"
#: a session silent for this many heartbeat intervals may be taken over by a new one of its name
SILENT_AFTER_BEATS = 1.5
#: after a restart, workers get this long beyond dead_after to reach the coordinator again:
#: they retry with a backoff of up to 5 s while it is away, and must not be declared dead
#: (their runs redone) merely for having backed off
RECONNECT_GRACE_S = 10.0


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass
class LiveWorker:
    """What the coordinator knows of a registered worker."""

    id: int
    name: str
    token_hash: str
    group_names: tuple[str, ...]
    functions: frozenset[str]
    capabilities: tuple[str, ...]
    capacity: int
    language: str
    hostname: str
    pid: int
    heartbeat_s: float
    status: WorkerStatus
    first_heartbeat: dt.datetime
    last_heartbeat: dt.datetime
    last_seen: float  # monotonic
    book: Leases
    rss_bytes: int = 0
    alive: bool = True
    #: its pending Lease call's wait, while one is parked (notify resolves it)
    parked: asyncio.Future[bool] | None = None
    #: signal epoch at which a claim last found nothing, and when work is next due
    empty_epoch: int = -1
    next_due: dt.datetime | None = None
    #: a heartbeat came since the reaper last wrote last_heartbeat to the row
    unflushed: bool = False
    #: this process heard from the session (False for sessions loaded at a restart)
    heard: bool = True

    @property
    def leases(self) -> dict[int, Held]:
        """The leases this worker holds, by task id (a view of the lease mirror)."""
        return self.book.of_worker(self.id)

    def notify(self) -> None:
        """Wake this worker's pending Lease call (status change, stop request)."""
        if self.parked is not None and not self.parked.done():
            self.parked.set_result(True)

    def to_row(self) -> dict[str, Any]:
        """The columns of its scheduler_worker row."""
        return {
            "worker_name": self.name, "status": self.status.value,
            "first_heartbeat": self.first_heartbeat, "last_heartbeat": self.last_heartbeat,
            "group_names": json.dumps(list(self.group_names)),
            "functions": json.dumps(sorted(self.functions)),
            "capabilities": json.dumps(list(self.capabilities)), "capacity": self.capacity,
            "language": self.language, "hostname": self.hostname, "pid": self.pid,
            "heartbeat": self.heartbeat_s, "token_hash": self.token_hash, "alive": self.alive,
            "lost_at": None, "rss_bytes": self.rss_bytes,
        }


def _offered(spec: dict[str, Any]) -> frozenset[str]:
    """The functions a worker may lease: its own, plus command tasks if it runs commands."""
    functions = set(spec["functions"])
    if COMMAND_CAPABILITY in spec["capabilities"]:
        functions.add(COMMAND_FUNCTION)
    return frozenset(functions)


def _from_row(row: Row, now_mono: float, book: Leases) -> LiveWorker:
    return LiveWorker(
        id=row["id"], name=row["worker_name"], token_hash=row["token_hash"],
        group_names=tuple(json.loads(row["group_names"])),
        functions=frozenset(json.loads(row["functions"])),
        capabilities=tuple(json.loads(row["capabilities"])), capacity=row["capacity"],
        language=row["language"], hostname=row["hostname"], pid=row["pid"],
        heartbeat_s=row["heartbeat"], status=WorkerStatus(row["status"]),
        first_heartbeat=row["first_heartbeat"], last_heartbeat=row["last_heartbeat"],
        last_seen=now_mono, book=book, rss_bytes=row["rss_bytes"], alive=row["alive"],
        heard=False)


class Registry:
    """Live workers by id and name."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.by_id: dict[int, LiveWorker] = {}

    async def load(self) -> None:
        """Rebuild memory from the database after a (re)start."""
        def read(tx: Tx) -> tuple[list[Row], list[Row]]:
            return tx.workers(alive_only=True), tx.leased_tasks()
        rows, leased = await self.rt.store.run(read)
        now_mono = time.monotonic() + RECONNECT_GRACE_S
        for row in rows:
            w = _from_row(row, now_mono, self.rt.leases)
            self.by_id[w.id] = w
        # Leases of workers not alive are taken back by the reaper's first pass.
        self.rt.leases.replace(leased, self.live_ids())
        logger.info("loaded workers=%d leases=%d", len(rows), len(leased))

    def live_ids(self) -> dict[str, int]:
        """Names of live workers -> their ids."""
        return {w.name: w.id for w in self.by_id.values() if w.alive}

    async def listing(self, include_dead: bool) -> tuple[list[LiveWorker], list[Row]]:
        """Live workers (from memory) and, when asked, the rows of dead ones."""
        live = [w for w in self.by_id.values() if w.alive]
        if not include_dead:
            return live, []
        names = {w.name for w in live}
        rows = await self.rt.store.run(lambda tx: tx.workers())
        return live, [r for r in rows if r["worker_name"] not in names]

    def by_name(self, name: str) -> LiveWorker | None:
        """The live worker of that name, if any."""
        return next((w for w in self.by_id.values() if w.name == name), None)

    async def register(self, spec: dict[str, Any]) -> tuple[LiveWorker, str]:
        """Create or take over the worker row of this name; returns (worker, token)."""
        cfg = self.rt.config
        token = secrets.token_urlsafe(32)
        now = self.rt.clock.now()
        heartbeat_s = spec["heartbeat"] or cfg.heartbeat_s
        previous = self.by_name(spec["worker_name"])
        if previous is not None and previous.alive:
            silent = time.monotonic() - previous.last_seen
            if previous.heard and silent < SILENT_AFTER_BEATS * previous.heartbeat_s:
                raise DuplicateWorkerError(
                    f"worker name {previous.name!r} is in use by a live session (pid "
                    f"{previous.pid} on {previous.hostname or 'an unknown host'}, last heartbeat "
                    f"{silent:.1f} s ago); give each worker its own --name")
            logger.warning("worker registered again; previous session lost worker=%s",
                           previous.name)
            # The row is taken over below, so it is not marked dead.
            await self._end_session(previous, "registered again", mark_dead=False)
        w = LiveWorker(
            id=0, name=spec["worker_name"], token_hash=_hash(token),
            group_names=tuple(spec["group_names"]), functions=_offered(spec),
            capabilities=tuple(spec["capabilities"]), capacity=spec["capacity"],
            language=spec["language"], hostname=spec["hostname"], pid=spec["pid"],
            heartbeat_s=heartbeat_s, status=lifecycle.REGISTERED_WORKER_STATUS, first_heartbeat=now,
            last_heartbeat=now, last_seen=time.monotonic(), book=self.rt.leases)

        def save(tx: Tx) -> int:
            existing = tx.worker_by_name(w.name)
            return tx.save_worker(existing["id"] if existing else None, w.to_row())
        w.id = await self.rt.store.run(save)
        self.by_id.pop(w.id, None)
        self.by_id[w.id] = w
        logger.info("worker registered worker=%s groups=%s functions=%d capacity=%d",
                    w.name, ",".join(w.group_names), len(w.functions), w.capacity)
        self.rt.signal.fire()
        return w, token

    def authenticate(self, worker_id: int, token: str) -> LiveWorker:
        """The live worker this session belongs to.

        Raises:
            UnknownWorkerError: no live worker has this id (never registered, or declared dead).
            BadSessionError: the token does not match.
        """
        w = self.by_id.get(worker_id)
        if w is None or not w.alive:
            raise UnknownWorkerError(f"worker {worker_id} is not registered or was declared "
                                     "dead; register again")
        if not hmac.compare_digest(w.token_hash, _hash(token)):
            raise BadSessionError(f"bad session token for worker {worker_id}")
        return w

    def heartbeat(self, w: LiveWorker, refs: Sequence[tuple[int, int]], rss_bytes: int
                  ) -> tuple[list[tuple[int, int]], Orphans]:
        """Record a heartbeat; returns (stale refs it listed, leases it no longer holds).

        A lease the worker left out of two heartbeats in a row is orphaned: never
        listed at all means its Lease reply was lost (hand it back), listed
        before means the worker dropped it (a lost run).
        """
        stale = self.rt.leases.stale(w.id, refs, w.heartbeat_s, tolerate_recent=True)
        w.last_seen = time.monotonic()
        w.heard = True
        w.last_heartbeat = self.rt.clock.now()
        w.rss_bytes = rss_bytes
        w.unflushed = True
        held = [r for r in refs if r not in set(stale)]
        return stale, self.rt.leases.listing(w.id, held, w.heartbeat_s)

    async def set_status(
        self, wanted: WorkerStatus, group_names: Sequence[str], worker_name: str
    ) -> list[str]:
        """Apply an admin command to the named worker or to the workers of the groups."""
        targets = [w for w in self.by_id.values() if w.alive and (
            w.name == worker_name if worker_name
            else not group_names or set(group_names) & set(w.group_names))]
        changed = [w for w in targets if lifecycle.change_worker_status(w.status, wanted)]
        if not changed:
            return []

        def save(tx: Tx) -> None:
            tx.update_workers([(w.id, {"status": wanted.value}) for w in changed])
        await self.rt.store.run(save)
        for w in changed:
            w.status = wanted
            w.notify()
        logger.info("worker status set status=%s workers=%s", wanted,
                    ",".join(w.name for w in changed))
        self.rt.signal.fire()
        return [w.name for w in changed]

    def dead(self, now_mono: float | None = None) -> list[LiveWorker]:
        """Live workers silent for longer than their dead_after."""
        now = time.monotonic() if now_mono is None else now_mono
        return [w for w in self.by_id.values() if w.alive and now - w.last_seen
                > self.rt.config.dead_after_s(w.heartbeat_s)]

    def unflushed_beats(self) -> list[tuple[int, dt.datetime, int]]:
        """(id, last heartbeat, rss) of live workers heard from since the last flush."""
        out = [(w.id, w.last_heartbeat, w.rss_bytes) for w in self.by_id.values()
               if w.alive and w.unflushed]
        for w in self.by_id.values():
            w.unflushed = False
        return out

    async def declare_dead(self, w: LiveWorker, reason: str) -> None:
        """The worker is gone: its row turns dead with its leases taken back, in one commit."""
        await self._end_session(w, reason, mark_dead=True)
        logger.info("worker gone worker=%s reason=%s", w.name, reason)

    async def _end_session(self, w: LiveWorker, reason: str, mark_dead: bool) -> None:
        """No more claims for this session; its leases given back as a lost worker's."""
        w.alive = False  # first: a claim that runs after this takes nothing
        w.notify()
        lost_at = self.rt.clock.now()  # the row's lost_at and the purge timer agree
        await runs.lose(self.rt, w.name, reason, mark_dead=w.id if mark_dead else None,
                        now=lost_at)
        self.rt.leases.drop_worker(w.id)
        if mark_dead:
            self.rt.timers.note_lost_worker(lost_at)
