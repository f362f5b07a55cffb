"""Worker sessions: registration, authentication, heartbeats, admin commands.

The worker row is the truth: a worker is alive while its row says so, and
only the maintenance leader (through runs.lose) turns it dead, in the
transaction that takes its leases back. A heartbeat writes no row: the
coordinator holding the session judges liveness from the heartbeats it
receives (monotonic time) and writes their times to the rows in batches (each
reconcile pass; on PostgreSQL, each node beat). After a restart every row
still marked alive gets a fresh `dead_after` to heartbeat again before it is
declared dead.

On PostgreSQL several coordinators share the rows, and the row's node_name
says which holds the session. A worker that calls a coordinator not holding
its session (its own went away) has the session moved here (`adopt`): same
id, same token, its leases loaded from the rows. Each node beat drops the
sessions whose row moved elsewhere or died, and applies status changes made
through other coordinators (`sync`).

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
    StoreUnavailableError,
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
#: how far behind the heartbeats a row of another coordinator's worker may be (they are
#: written each node beat, cluster.NODE_BEAT_S): ListWorkers allows it on top of dead_after
ROW_HEARTBEAT_LAG_S = 1.0


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
    #: monotonic: when that claim found nothing (the safety poll claims again after a while)
    empty_at: float = 0.0
    next_due: dt.datetime | None = None
    #: a heartbeat came since the reaper last wrote last_heartbeat to the row
    unflushed: bool = False
    #: this process heard from the session (False for sessions loaded at a restart)
    heard: bool = True
    #: the coordinator (node) holding the session
    node: str = ""
    #: monotonic: when the session came to this node, and when its status was last set here
    #: (a node beat's rows read before then must not undo either)
    since: float = 0.0
    status_set: float = 0.0
    #: the status its last answer (Register, Lease, Heartbeat) told it; None: not told yet
    told: WorkerStatus | None = None

    @property
    def runs(self) -> tuple[tuple[str, str], ...]:
        """The (group, function) pairs it can run."""
        return tuple((g, f) for g in self.group_names for f in self.functions)

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
            "lost_at": None, "rss_bytes": self.rss_bytes, "node_name": self.node,
        }


def _offered(spec: dict[str, Any]) -> frozenset[str]:
    """The functions a worker may lease: its own, plus command tasks if it runs commands."""
    functions = set(spec["functions"])
    if COMMAND_CAPABILITY in spec["capabilities"]:
        functions.add(COMMAND_FUNCTION)
    return frozenset(functions)


def _from_row(row: Row, now_mono: float, book: Leases, heard: bool = False) -> LiveWorker:
    return LiveWorker(
        id=row["id"], name=row["worker_name"], token_hash=row["token_hash"],
        group_names=tuple(json.loads(row["group_names"])),
        functions=frozenset(json.loads(row["functions"])),
        capabilities=tuple(json.loads(row["capabilities"])), capacity=row["capacity"],
        language=row["language"], hostname=row["hostname"], pid=row["pid"],
        heartbeat_s=row["heartbeat"], status=WorkerStatus(row["status"]),
        first_heartbeat=row["first_heartbeat"], last_heartbeat=row["last_heartbeat"],
        last_seen=now_mono, book=book, rss_bytes=row["rss_bytes"], alive=row["alive"],
        heard=heard, node=row["node_name"], since=now_mono)


class Registry:
    """Live workers by id and name."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.by_id: dict[int, LiveWorker] = {}
        #: sessions being moved here, by worker id (concurrent calls share one move)
        self._adopting: dict[int, asyncio.Task[LiveWorker]] = {}

    @property
    def node(self) -> str:
        """This coordinator's node name."""
        return self.rt.store.node

    async def load(self) -> None:
        """Rebuild memory from the database after a (re)start.

        On PostgreSQL no session is loaded: a restarted node has a new name, and
        workers bring their sessions back when they call (`adopt`).
        """
        if not self.rt.store.is_sqlite:
            return

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

    def seems_alive(self, alive: bool, last_heartbeat: dt.datetime, heartbeat_s: float,
                    lag_s: float = 0.0) -> bool:
        """What ListWorkers says of a worker: alive, and heard from within its dead_after.

        The row (or session) alone is not enough: after a restart every row still
        marked alive is kept alive for dead_after plus RECONNECT_GRACE_S, for its
        worker to come back, and only then declared dead (its runs taken back); a
        worker gone for longer than dead_after is not shown alive meanwhile.
        """
        if not alive:
            return False
        silent = (self.rt.clock.now() - last_heartbeat).total_seconds()
        return silent <= self.rt.config.dead_after_s(heartbeat_s) + lag_s

    def session_alive(self, w: LiveWorker) -> bool:
        """`seems_alive` of a session of this node.

        A session heard from since this process started is alive until the reaper
        declares it dead (its next pass after dead_after); one loaded at a restart and
        not heard from since is judged by its row's last heartbeat, since the reaper
        gives it dead_after plus RECONNECT_GRACE_S.
        """
        if w.heard:
            return w.alive
        return self.seems_alive(w.alive, w.last_heartbeat, w.heartbeat_s)

    def row_alive(self, row: Row) -> bool:
        """`seems_alive` of a stored row (another coordinator's worker, or a dead one)."""
        return self.seems_alive(bool(row["alive"]), row["last_heartbeat"], row["heartbeat"],
                                ROW_HEARTBEAT_LAG_S)

    async def listing(self, include_dead: bool
                      ) -> tuple[list[LiveWorker], list[Row], dict[str, list[int]]]:
        """Live workers of this node (memory) and the rows of the others.

        Returns (sessions here, other rows, task ids leased by the workers of those
        rows). Rows of other coordinators' live workers come on PostgreSQL; rows of
        dead workers when asked. Without `include_dead`, sessions and rows that do not
        `seems_alive` (silent for longer than dead_after, e.g. after a restart) are
        left out; with it they are listed, and the caller reports them not alive.
        """
        live = [w for w in self.by_id.values() if w.alive]
        if not include_dead and self.rt.store.is_sqlite:
            return [w for w in live if self.session_alive(w)], [], {}

        def read(tx: Tx) -> tuple[list[Row], list[Row]]:
            leased = tx.leased_tasks() if not self.rt.store.is_sqlite else []
            return tx.workers(alive_only=not include_dead), leased

        rows, leased = await self.rt.store.run(read)
        live = [w for w in self.by_id.values() if w.alive]  # sessions may have moved meanwhile
        names = {w.name for w in live}
        held: dict[str, list[int]] = {}
        for t in leased:
            held.setdefault(t["assigned_worker_name"], []).append(t["id"])
        others = [r for r in rows if r["worker_name"] not in names]
        if not include_dead:
            live = [w for w in live if self.session_alive(w)]
            others = [r for r in others if self.row_alive(r)]
        return live, others, held

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
        if not self.rt.store.is_sqlite:
            await self._take_name_from_other_node(spec["worker_name"])
        w = LiveWorker(
            id=0, name=spec["worker_name"], token_hash=_hash(token),
            group_names=tuple(spec["group_names"]), functions=_offered(spec),
            capabilities=tuple(spec["capabilities"]), capacity=spec["capacity"],
            language=spec["language"], hostname=spec["hostname"], pid=spec["pid"],
            heartbeat_s=heartbeat_s, status=lifecycle.REGISTERED_WORKER_STATUS, first_heartbeat=now,
            last_heartbeat=now, last_seen=time.monotonic(), book=self.rt.leases,
            node=self.node, since=time.monotonic())

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

    async def _take_name_from_other_node(self, name: str) -> None:
        """Register on PostgreSQL: refuse a name another node's live session uses.

        A session of that name silent for SILENT_AFTER_BEATS (by its row's
        heartbeat time) is lost: its leases are given back before the row is
        taken over.
        """
        row = await self.rt.store.run(lambda tx: tx.worker_by_name(name))
        if row is None or not row["alive"] or row["node_name"] in ("", self.node):
            return
        silent = (self.rt.clock.now() - row["last_heartbeat"]).total_seconds()
        if silent < SILENT_AFTER_BEATS * row["heartbeat"] + 1.0:  # + a node beat's lag
            raise DuplicateWorkerError(
                f"worker name {name!r} is in use by a live session (pid {row['pid']} on "
                f"{row['hostname'] or 'an unknown host'}, through coordinator "
                f"{row['node_name']}, last heartbeat {silent:.1f} s ago); give each worker "
                "its own --name")
        logger.warning("worker registered again; previous session lost worker=%s", name)
        await runs.lose(self.rt, name, "registered again")

    async def adopt(self, worker_id: int, token: str) -> LiveWorker:
        """Move a live session held by another coordinator here (PostgreSQL).

        Calls of one worker that arrive together share one move.

        Raises:
            UnknownWorkerError: no live worker has this id.
            BadSessionError: the token does not match.
        """
        pending = self._adopting.get(worker_id)
        if pending is None:
            pending = asyncio.ensure_future(self._adopt(worker_id, token))
            self._adopting[worker_id] = pending
            pending.add_done_callback(lambda _: self._adopting.pop(worker_id, None))
        w = await asyncio.shield(pending)
        if not hmac.compare_digest(w.token_hash, _hash(token)):
            raise BadSessionError(f"bad session token for worker {worker_id}")
        return w

    async def _adopt(self, worker_id: int, token: str) -> LiveWorker:
        token_hash = _hash(token)
        now = self.rt.clock.now()

        def move(tx: Tx) -> tuple[str, Row | None, str, list[Row]]:
            before = tx.worker_by_id(worker_id)
            if before is None or not before["alive"]:
                return "unknown", None, "", []
            if not hmac.compare_digest(before["token_hash"], token_hash):
                return "bad token", None, "", []
            row = tx.adopt_worker(worker_id, token_hash, self.node, now)
            if row is None:  # declared dead or registered again meanwhile
                return "unknown", None, "", []
            return "ok", row, before["node_name"], tx.leased_by(row["worker_name"])

        verdict, row, came_from, leased = await self.rt.store.run(move)
        if verdict == "bad token":
            raise BadSessionError(f"bad session token for worker {worker_id}")
        if row is None:
            raise UnknownWorkerError(f"worker {worker_id} is not registered or was declared "
                                     "dead; register again")
        now_mono = time.monotonic()
        w = _from_row(row, now_mono, self.rt.leases, heard=True)  # functions as offered
        old = self.by_id.pop(w.id, None)
        if old is not None:
            self.rt.leases.drop_worker(old.id)
        self.by_id[w.id] = w
        for t in leased:
            started = t["status"] == lifecycle.TaskStatus.RUNNING
            self.rt.leases.grant(w.id, t["id"], t["attempt"], started, now_mono)
            if t["stop_requested"]:
                self.rt.leases.request_stop(t["id"], t["attempt"])
        logger.info("worker session taken over worker=%s from=%s leases=%d", w.name,
                    came_from or "none", len(leased))
        self.rt.signal.fire()
        return w

    def drop_session(self, worker_id: int, why: str) -> None:
        """Forget a session another coordinator now holds, or the leader declared dead.

        Memory only: the rows already say so.
        """
        w = self.by_id.pop(worker_id, None)
        if w is None:
            return
        w.alive = False
        w.notify()
        self.rt.leases.drop_worker(w.id)
        logger.info("worker session dropped worker=%s why=%s", w.name, why)

    def sync(self, rows: Sequence[Row], read_at: float) -> None:
        """Apply a node beat's worker rows (PostgreSQL): moves, deaths and status changes.

        Sessions that came here, or whose status was set here, after `read_at`
        (when the beat began) are newer than the rows and left alone.
        """
        by_id = {r["id"]: r for r in rows}
        changed = False
        for w in list(self.by_id.values()):
            if not w.alive or w.since > read_at:
                continue
            row = by_id.get(w.id)
            if row is None:
                self.drop_session(w.id, "its row is dead")
            elif row["node_name"] != self.node:
                self.drop_session(w.id, f"moved to coordinator {row['node_name']}")
            elif row["status"] != w.status.value and w.status_set <= read_at:
                w.status = WorkerStatus(row["status"])
                w.notify()
                changed = True
        if changed:
            self.rt.signal.fire()

    def apply_status(self, worker_id: int, status: str) -> None:
        """A status set through another coordinator (its notification) reaches the session."""
        w = self.by_id.get(worker_id)
        if w is not None and w.alive and w.status.value != status:
            w.status = WorkerStatus(status)
            w.status_set = time.monotonic()
            w.notify()
            self.rt.signal.fire()

    async def check_moved(self, worker_id: int) -> None:
        """Another node says it took this session: drop it unless the row says it is ours."""
        try:
            row = await self.rt.store.run(lambda tx: tx.worker_by_id(worker_id))
        except StoreUnavailableError:
            return  # the next node beat decides
        if row is None or not row["alive"] or row["node_name"] != self.node:
            where = row["node_name"] if row is not None else "nowhere"
            self.drop_session(worker_id, f"moved to coordinator {where}")

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
        """Apply an admin command to the named worker or to the workers of the groups.

        On PostgreSQL the targets are read from the rows, so workers attached to
        other coordinators are reached too (their coordinators hear of it through
        a notification, or at their next node beat).
        """
        local = self.by_name(worker_name) if worker_name else None
        if self.rt.store.is_sqlite or (local is not None and local.alive):
            targets = [(w.id, w.name, w.status) for w in self.by_id.values() if w.alive and (
                w.name == worker_name if worker_name
                else not group_names or set(group_names) & set(w.group_names))]
        else:
            rows = await self.rt.store.run(lambda tx: tx.workers(alive_only=True))
            targets = [(r["id"], r["worker_name"], WorkerStatus(r["status"])) for r in rows
                       if (r["worker_name"] == worker_name if worker_name else not group_names
                           or set(group_names) & set(json.loads(r["group_names"])))]
        changed = [(i, name) for i, name, status in targets
                   if lifecycle.change_worker_status(status, wanted)]
        if not changed:
            return []

        def save(tx: Tx) -> None:
            tx.update_workers([(i, {"status": wanted.value}) for i, _ in changed])
        await self.rt.store.run(save)
        now_mono = time.monotonic()
        for i, _ in changed:
            w = self.by_id.get(i)
            if w is not None and w.alive:
                w.status = wanted
                w.status_set = now_mono
                w.notify()
        logger.info("worker status set status=%s workers=%s", wanted,
                    ",".join(name for _, name in changed))
        self.rt.signal.fire()
        return [name for _, name in changed]

    async def hold_while_disabled(self, w: LiveWorker, timeout_s: float) -> float:
        """Keep a DISABLED worker's Lease call open; returns the seconds it waited.

        A worker that knows it is DISABLED (its last answer said so) still long-polls
        Lease, and the call waits here until its status changes (`resume`, TERMINATE,
        KILL: `set_status` wakes it through `notify`), a run of it is to be stopped, the
        session ends, or `timeout_s` passes. So `resume` reaches it as fast as `disable`
        does, not at its next heartbeat. A worker not yet told (its Lease crossed the
        `disable`) is answered at once, to learn it.
        """
        started = time.monotonic()
        deadline = started + max(0.0, min(timeout_s, self.rt.config.max_lease_wait_s))
        loop = asyncio.get_running_loop()
        while (w.alive and w.status is WorkerStatus.DISABLED
               and w.told is WorkerStatus.DISABLED and not self.rt.leases.untold_stops(w.id)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            future: asyncio.Future[bool] = loop.create_future()
            w.parked = future
            logger.debug("lease held while disabled worker=%s", w.name)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                break
            finally:
                if w.parked is future:
                    w.parked = None
        return time.monotonic() - started

    def dead(self, now_mono: float | None = None) -> list[LiveWorker]:
        """Live sessions silent for longer than their dead_after."""
        now = time.monotonic() if now_mono is None else now_mono
        return [w for w in self.by_id.values() if w.alive and now - w.last_seen
                > self.rt.config.dead_after_s(w.heartbeat_s)]

    def heard(self, worker_id: int, token: str) -> None:
        """Count a heartbeat this node refuses (cut off from the database).

        The worker is alive all the same: its silence is then judged truly once the
        database is back.
        """
        w = self.by_id.get(worker_id)
        if w is not None and w.alive and hmac.compare_digest(w.token_hash, _hash(token)):
            w.last_seen = time.monotonic()
            w.last_heartbeat = self.rt.clock.now()
            w.unflushed = True

    def unflushed_beats(self) -> list[tuple[int, dt.datetime, int]]:
        """(id, last heartbeat, rss) of live workers heard from since the last flush."""
        out = [(w.id, w.last_heartbeat, w.rss_bytes) for w in self.by_id.values()
               if w.alive and w.unflushed]
        for w in self.by_id.values():
            w.unflushed = False
        return out

    def unflush(self, beats: Sequence[tuple[int, dt.datetime, int]]) -> None:
        """Beats whose write failed: write them with the next batch."""
        for worker_id, _, _ in beats:
            w = self.by_id.get(worker_id)
            if w is not None:
                w.unflushed = True

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
