"""Worker sessions: registration, authentication, heartbeats, admin commands.

Liveness lives in memory (`LiveWorker`): a heartbeat touches no database row,
so idle workers cost the database nothing. The database keeps the worker
rows (status, groups, functions, token hash) for restarts and for listing;
after a coordinator restart every worker row still marked alive gets a fresh
`dead_after` to heartbeat again before it is declared dead.

Leases are mirrored here too (task id -> attempt) so that heartbeats and
output can be checked against the lease a worker holds without a query.
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
from collections.abc import Iterable, Sequence
from typing import Any

from taskgrid.coordinator import leasing, lifecycle
from taskgrid.coordinator.errors import BadSessionError, StaleLeaseError, UnknownWorkerError
from taskgrid.coordinator.lifecycle import WorkerStatus
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Row, Tx
from taskgrid.coordinator.validation import COMMAND_FUNCTION

logger = logging.getLogger(__name__)

#: the capability a worker declares to run command tasks
COMMAND_CAPABILITY = "command"
#: a lease missing from this many heartbeat intervals of a live worker is orphaned
ORPHAN_AFTER_BEATS = 3.0
#: how long a finished lease is still tolerated in heartbeats sent before the report landed
RECENT_GRACE_BEATS = 4.0


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
    rss_bytes: int = 0
    alive: bool = True
    leases: dict[int, leasing.Held] = dataclasses.field(default_factory=dict)
    recent: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)
    stop: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    #: stops already handed out by a Lease reply (heartbeats re-send all of them)
    stop_told: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: signal epoch at which a claim last found nothing, and when work is next due
    empty_epoch: int = -1
    next_due: dt.datetime | None = None

    def forget(self, task_id: int, reported: bool = False) -> None:
        """Drop a lease that ended.

        One the worker itself reported stays tolerated for a few beats, since a
        heartbeat built before the report may still be on its way; one the
        coordinator took away (stop, lost, timeout) is stale at once.
        """
        held = self.leases.pop(task_id, None)
        if held is not None and reported:
            self.recent[(task_id, held.attempt)] = time.monotonic()
        self.stop = {s for s in self.stop if s[0] != task_id}
        self.stop_told &= self.stop

    def notify(self) -> None:
        """Wake this worker's pending Lease call (status change, stop request)."""
        self.wake.set()

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


def _from_row(row: Row, now_mono: float) -> LiveWorker:
    return LiveWorker(
        id=row["id"], name=row["worker_name"], token_hash=row["token_hash"],
        group_names=tuple(json.loads(row["group_names"])),
        functions=frozenset(json.loads(row["functions"])),
        capabilities=tuple(json.loads(row["capabilities"])), capacity=row["capacity"],
        language=row["language"], hostname=row["hostname"], pid=row["pid"],
        heartbeat_s=row["heartbeat"], status=WorkerStatus(row["status"]),
        first_heartbeat=row["first_heartbeat"], last_heartbeat=row["last_heartbeat"],
        last_seen=now_mono, rss_bytes=row["rss_bytes"], alive=row["alive"])


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
        now_mono = time.monotonic()
        by_name: dict[str, LiveWorker] = {}
        for row in rows:
            w = _from_row(row, now_mono)
            self.by_id[w.id] = w
            by_name[w.name] = w
        for task in leased:
            owner = by_name.get(task["assigned_worker_name"])
            if owner is not None:
                started = task["status"] == lifecycle.TaskStatus.RUNNING
                owner.leases[task["id"]] = leasing.held(self.rt, task, now_mono, started)
                if task["stop_requested"]:
                    owner.stop.add((task["id"], task["attempt"]))
        logger.info("loaded workers=%d leases=%d", len(rows), len(leased))

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
            logger.warning("worker re-registered; previous session lost worker=%s",
                           previous.name)
            await leasing.lose(self.rt, previous, "registered again")
        w = LiveWorker(
            id=0, name=spec["worker_name"], token_hash=_hash(token),
            group_names=tuple(spec["group_names"]), functions=_offered(spec),
            capabilities=tuple(spec["capabilities"]), capacity=spec["capacity"],
            language=spec["language"], hostname=spec["hostname"], pid=spec["pid"],
            heartbeat_s=heartbeat_s, status=lifecycle.REGISTERED_WORKER_STATUS, first_heartbeat=now,
            last_heartbeat=now, last_seen=time.monotonic())

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

    def check_refs(self, w: LiveWorker, refs: Iterable[tuple[int, int]], what: str) -> None:
        """Raise StaleLeaseError unless the worker holds every one of these leases."""
        stale = [(t, a) for t, a in refs
                 if (held := w.leases.get(t)) is None or held.attempt != a]
        if stale:
            raise StaleLeaseError(stale, f"{what} from worker {w.name}")

    def heartbeat(
        self, w: LiveWorker, refs: Sequence[tuple[int, int]], rss_bytes: int
    ) -> list[int]:
        """Record a heartbeat; returns task ids of leases the worker no longer holds.

        A lease the worker stopped listing (a lost Lease reply, a crashed child)
        is orphaned once it was granted long enough ago; the caller requeues it.
        """
        now_mono = time.monotonic()
        grace = RECENT_GRACE_BEATS * w.heartbeat_s
        w.recent = {k: t for k, t in w.recent.items() if now_mono - t < grace}
        self.check_refs(w, [r for r in refs if r not in w.recent], "heartbeat")
        w.last_seen = now_mono
        w.last_heartbeat = self.rt.clock.now()
        w.rss_bytes = rss_bytes
        listed = {t for t, _ in refs}
        orphan_after = ORPHAN_AFTER_BEATS * w.heartbeat_s
        return [t for t, held in w.leases.items()
                if t not in listed and now_mono - held.granted > orphan_after]

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

    def dead(self) -> list[LiveWorker]:
        """Live workers silent for longer than their dead_after."""
        now_mono = time.monotonic()
        return [w for w in self.by_id.values() if w.alive and now_mono - w.last_seen
                > self.rt.config.dead_after_s(w.heartbeat_s)]
