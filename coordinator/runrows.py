"""Queries of runs and live output (scheduler_run, scheduler_output): part of `store.Tx`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from taskgrid.coordinator import hotsql, schema
from taskgrid.coordinator.txbase import RUN_TIMES, Row, TxBase, row_of


class RunRows(TxBase):
    """Runs and their live output chunks."""

    # -- runs ----------------------------------------------------------------

    def insert_runs(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert run rows; returns their ids in order."""
        if not rows:
            return []
        d = self.d
        return self._insert_returning_ids(hotsql.insert_run_sql(d),
                                          [hotsql.run_params(d, r) for r in rows])

    def run_ids(self, refs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Run ids by (task_id, attempt)."""
        return {k: v[0] for k, v in self.runs_by_ref(refs).items()}

    def runs_by_ref(self, refs: Iterable[tuple[int, int]]
                    ) -> dict[tuple[int, int], tuple[int, bool]]:
        """(run id, has live chunks) by (task_id, attempt), in one query."""
        wanted = set(refs)
        task_ids = sorted({t for t, _ in wanted})
        if not task_ids:
            return {}
        d, cur = self.d, self.cur
        out: dict[tuple[int, int], tuple[int, bool]] = {}
        for part in hotsql.chunks(task_ids):
            sql = hotsql.runs_of_tasks_sql(d, len(part))
            for run_id, task_id, attempt, chunked in cur.execute(sql, d.id_params(part)):
                if (task_id, attempt) in wanted:
                    out[(task_id, attempt)] = (run_id, bool(chunked))
        return out

    def runs_of(self, task_id: int, latest_only: bool) -> list[Row]:
        """A task's runs oldest first, or just its latest."""
        r = schema.run.c
        stmt = sa.select(schema.run).where(r.task_id == task_id)
        stmt = stmt.order_by(r.id.desc()).limit(1) if latest_only else stmt.order_by(r.id)
        return [row_of(x, RUN_TIMES) for x in self.conn.execute(stmt).mappings()]

    def update_runs(self, updates: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Write several runs' final values (one executemany per shape)."""
        d, cur = self.d, self.cur
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for run_id, values in updates:
            keys = tuple(sorted(values))
            groups.setdefault(keys, []).append(
                (*(d.value_in(values[k]) for k in keys), run_id))
        for keys, rows in groups.items():
            cur.executemany(hotsql.run_update_sql(d, keys), rows)

    def delete_runs(self, run_ids: Sequence[int]) -> None:
        """Remove run records and their live chunks (successes with nothing to keep)."""
        d, cur = self.d, self.cur
        for part in hotsql.chunks(list(run_ids)):
            for sql in hotsql.delete_runs_sql(d, len(part)):
                cur.execute(sql, d.id_params(part))

    # -- live output ---------------------------------------------------------

    def insert_chunks(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append output chunks; a chunk sent twice (same run and seq) is kept once."""
        if not rows:
            return
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        stmt = dialect_insert(schema.output).on_conflict_do_nothing(
            index_elements=["run_id", "seq"])
        self.conn.execute(stmt, list(rows))

    def chunks(self, run_ids: Iterable[int]) -> dict[int, list[Row]]:
        """Live output chunks by run id, in sequence order."""
        ids = list(run_ids)
        out: dict[int, list[Row]] = {i: [] for i in ids}
        if not ids:
            return out
        o = schema.output.c
        stmt = sa.select(o.run_id, o.seq, o.data, o.clear).where(o.run_id.in_(ids)).order_by(
            o.run_id, o.seq)
        for r in self.conn.execute(stmt).mappings():
            out[r["run_id"]].append(dict(r))
        return out

    def chunk_bytes(self, run_ids: Iterable[int]) -> dict[int, int]:
        """Bytes of live output stored per run (runs with none are absent)."""
        ids = list(run_ids)
        if not ids:
            return {}
        o = schema.output.c
        # length() counts characters on both databases; the limit is in bytes
        size = (sa.func.octet_length(o.data) if self.is_postgres
                else sa.func.length(sa.cast(o.data, sa.LargeBinary)))
        stmt = sa.select(o.run_id, sa.func.sum(size)).where(
            o.run_id.in_(ids)).group_by(o.run_id)
        return {run_id: int(total or 0) for run_id, total in self.conn.execute(stmt)}

    def delete_chunks(self, run_ids: Iterable[int]) -> None:
        """Drop live chunks once they are folded into run_output."""
        ids = list(run_ids)
        if ids:
            self.conn.execute(sa.delete(schema.output).where(schema.output.c.run_id.in_(ids)))
