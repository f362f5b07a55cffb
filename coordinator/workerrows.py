"""Queries of worker and coordinator rows: part of `store.Tx`.

scheduler_worker, scheduler_node and scheduler_leader are the rows several
coordinators on one PostgreSQL database share:
who holds each worker's session, which coordinators are alive, and which one
leads maintenance (with the epoch that fences a deposed leader's writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from taskgrid.coordinator import hotsql, schema
from taskgrid.coordinator.clock import from_db, to_db
from taskgrid.coordinator.errors import NotLeaderError
from taskgrid.coordinator.txbase import WORKER_TIMES, Row, TxBase, db_values, row_of

#: the database's clock, as naive UTC like every stored time
UTC_NOW = "(clock_timestamp() AT TIME ZONE 'UTC')"


class WorkerRows(TxBase):
    """Worker rows (sessions, liveness) and the coordinators' node and leader rows."""

    # -- workers -------------------------------------------------------------

    def worker_by_id(self, worker_id: int) -> Row | None:
        """One worker row by id."""
        stmt = sa.select(schema.worker).where(schema.worker.c.id == worker_id)
        r = self.conn.execute(stmt).mappings().first()
        return row_of(r, WORKER_TIMES) if r else None

    def worker_by_name(self, name: str) -> Row | None:
        """One worker row by name."""
        stmt = sa.select(schema.worker).where(schema.worker.c.worker_name == name)
        r = self.conn.execute(stmt).mappings().first()
        return row_of(r, WORKER_TIMES) if r else None

    def save_worker(self, worker_id: int | None, values: Mapping[str, Any]) -> int:
        """Insert a worker row, or overwrite the row `worker_id`; returns the id."""
        w = schema.worker
        if worker_id is None:
            return int(self.conn.execute(
                sa.insert(w).returning(w.c.id), [db_values(values)]).scalar_one())
        self.conn.execute(sa.update(w).where(w.c.id == worker_id).values(db_values(values)))
        return worker_id

    def workers(self, alive_only: bool = False) -> list[Row]:
        """Worker rows by id."""
        stmt = sa.select(schema.worker).order_by(schema.worker.c.id)
        if alive_only:
            stmt = stmt.where(schema.worker.c.alive.is_(True))
        return [row_of(r, WORKER_TIMES) for r in self.conn.execute(stmt).mappings()]

    def earliest_lost_worker(self) -> Any:
        """When the longest-dead worker was declared dead, or None."""
        w = schema.worker.c
        stmt = sa.select(sa.func.min(w.lost_at)).where(w.alive.is_(False))
        return from_db(self.conn.execute(stmt).scalar())

    def delete_lost_workers(self, cutoff: Any) -> list[str]:
        """Remove rows of workers dead since before `cutoff`; returns their names."""
        w = schema.worker.c
        cond = (w.alive.is_(False), w.lost_at < to_db(cutoff))
        names = list(self.conn.execute(sa.select(w.worker_name).where(*cond)).scalars())
        if names:
            self.conn.execute(sa.delete(schema.worker).where(*cond))
        return names

    def update_workers(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Write several workers' columns (status, heartbeat, liveness)."""
        w = schema.worker
        for worker_id, values in updates:
            self.conn.execute(sa.update(w).where(w.c.id == worker_id).values(db_values(values)))
            if self.notes is not None and "status" in values:
                self.notes.workers[worker_id] = values["status"]

    def mark_worker_dead(self, worker_id: int, lost_at: Any,
                         silent_since: Any | None = None) -> bool:
        """Mark a live worker row dead, once: a dead row keeps its first lost_at.

        With `silent_since`, only if its last heartbeat is still that old (a judgment
        from the rows must not kill a worker whose coordinator just wrote a newer one).
        """
        self._lock_session(worker_id)
        w = schema.worker.c
        cond = [w.id == worker_id, w.alive.is_(True)]
        if silent_since is not None:
            cond.append(w.last_heartbeat <= to_db(silent_since))
        result = self.conn.execute(sa.update(schema.worker).where(*cond).values(
            alive=False, lost_at=to_db(lost_at)))
        if self.notes is not None and result.rowcount == 1:
            self.notes.dead.add(worker_id)
        return bool(result.rowcount == 1)

    def adopt_worker(self, worker_id: int, token_hash: str, node: str, now: Any) -> Row | None:
        """Move a live session to this node (its worker came to this coordinator).

        Returns the worker row, or None if no live worker has this id and token.
        """
        self._lock_session(worker_id)
        w = schema.worker.c
        result = self.conn.execute(sa.update(schema.worker).where(
            w.id == worker_id, w.alive.is_(True), w.token_hash == token_hash).values(
            node_name=node, last_heartbeat=to_db(now)))
        if result.rowcount != 1:
            return None
        if self.notes is not None:
            self.notes.moved[worker_id] = node
        r = self.conn.execute(sa.select(schema.worker).where(w.id == worker_id)
                              ).mappings().first()
        return row_of(r, WORKER_TIMES) if r else None

    def holds_session(self, worker_id: int, node: str) -> bool:
        """Is this live worker's session held by `node`? Locks the row against a move.

        A key-share lock: heartbeat writes (plain updates) pass it, so claims never wait
        for, or deadlock with, a node beat; a move or a death (`_lock_session`) waits for
        the claim to commit, and a claim that comes after them sees them.
        """
        cur = self.cur
        lock = " FOR KEY SHARE" if self.is_postgres else ""
        cur.execute(self.d.sql("SELECT 1 FROM scheduler_worker WHERE id = ? AND alive "
                               f"AND node_name = ?{lock}"), (worker_id, node))
        return cur.fetchone() is not None

    def _lock_session(self, worker_id: int) -> None:
        """PostgreSQL: lock the worker row against claims (see holds_session) until commit."""
        if self.is_postgres:
            self.cur.execute("SELECT 1 FROM scheduler_worker WHERE id = %s FOR UPDATE",
                             (worker_id,))

    # -- coordinators (PostgreSQL) -----------------------------------------------

    def touch_node(self, values: Mapping[str, Any]) -> None:
        """Write this coordinator's node row (insert it the first time)."""
        n = schema.node
        result = self.conn.execute(sa.update(n).where(
            n.c.node_name == values["node_name"]).values(last_seen=to_db(values["last_seen"])))
        if result.rowcount == 0:
            self.conn.execute(sa.insert(n).values(db_values(values)))

    def remove_node(self, node: str) -> None:
        """Drop this coordinator's row (a clean stop)."""
        self.conn.execute(sa.delete(schema.node).where(schema.node.c.node_name == node))

    def nodes(self) -> list[Row]:
        """Every coordinator's row."""
        stmt = sa.select(schema.node).order_by(schema.node.c.node_name)
        return [row_of(r, ("started_at", "last_seen")) for r in self.conn.execute(stmt).mappings()]

    def claim_leader(self, node: str, ttl_s: float) -> int | None:
        """Renew this node's leadership, or take it if it lapsed; the epoch, or None.

        Expiry is judged on the database's clock, so coordinators' clocks need not
        agree; a new leader gets a new epoch, which fences the old one's writes.
        """
        self.conn.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
        row = self.conn.execute(sa.text(
            "UPDATE scheduler_leader SET epoch = CASE WHEN node_name = :node THEN epoch "
            f"ELSE epoch + 1 END, node_name = :node, expires_at = {UTC_NOW} + "
            "make_interval(secs => :ttl) WHERE id = 1 AND (node_name = :node OR expires_at "
            f"< {UTC_NOW}) RETURNING epoch"), {"node": node, "ttl": ttl_s}).first()
        return None if row is None else int(row[0])

    def release_leader(self, node: str) -> None:
        """Give leadership up at once (a clean stop): the next beat of another node takes it."""
        self.conn.execute(sa.text(
            f"UPDATE scheduler_leader SET expires_at = {UTC_NOW} - interval '1 second' "
            "WHERE id = 1 AND node_name = :node"), {"node": node})

    def leader(self) -> Row | None:
        """The leader row: node_name, epoch, expires_at."""
        r = self.conn.execute(sa.select(schema.leader)).mappings().first()
        return row_of(r, ("expires_at",)) if r else None

    def check_fence(self, node: str, epoch: int) -> None:
        """Raise NotLeaderError unless `node` leads with `epoch` now; holds the row till commit.

        The share lock makes a takeover (which updates the row) wait for this
        transaction, so a write checked here cannot land after a new leader took over.
        """
        cur = self.cur
        cur.execute(
            "SELECT 1 FROM scheduler_leader WHERE id = 1 AND node_name = %s AND epoch = %s "
            f"AND expires_at > {UTC_NOW} FOR SHARE", (node, epoch))
        if cur.fetchone() is None:
            raise NotLeaderError(f"coordinator {node} no longer leads (epoch {epoch})")

    def touch_workers(self, beats: Sequence[tuple[int, Any, int]]) -> None:
        """Write (id, last_heartbeat, rss_bytes) of live workers in one executemany.

        In id order, so two coordinators writing the same rows never deadlock.
        """
        if beats:
            d = self.d
            self.cur.executemany(hotsql.touch_worker_sql(d), [
                (d.time_in(last), rss, i, d.time_in(last)) for i, last, rss in sorted(beats)])
