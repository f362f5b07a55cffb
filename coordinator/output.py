"""Live output: chunks from workers, stored append-only, folded at the end of a run.

`!clear!` is applied by the worker, which marks the chunk that follows the
last marker with `clear`; folding keeps only what comes from the last such
chunk on (semantics.md §10.2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.store import Tx

if TYPE_CHECKING:
    from taskgrid.coordinator.workers import LiveWorker

logger = logging.getLogger(__name__)


CUT_MARKER = "\n[taskgrid: output cut here: more than {limit} bytes]\n"


def cap(text: str, limit: int) -> str:
    """The text cut to `limit` bytes with a visible marker, or unchanged when it fits."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + CUT_MARKER.format(limit=limit)


def fold(chunks: Iterable[Mapping[str, Any]]) -> str:
    """The output text of a run from its chunks (any order, duplicates ignored)."""
    by_seq = {c["seq"]: c for c in chunks}
    text: list[str] = []
    for seq in sorted(by_seq):
        chunk = by_seq[seq]
        if chunk["clear"]:
            text.clear()
        text.append(chunk["data"])
    return "".join(text)


def last_seq(chunks: Iterable[Mapping[str, Any]]) -> int:
    """The highest sequence number among the chunks, 0 when none."""
    return max((c["seq"] for c in chunks), default=0)


async def append(rt: Runtime, w: LiveWorker, chunks: Sequence[dict[str, Any]]
                 ) -> list[tuple[int, int]]:
    """Store chunks of running tasks of this (already authenticated) worker.

    Each chunk dict has task_id, attempt, seq, data, clear. Chunks of leases the
    worker no longer holds are dropped and their leases returned (stale); chunks
    of a task that keeps no run record are dropped silently.
    """
    stale = rt.leases.stale(w.id, {(c["task_id"], c["attempt"]) for c in chunks},
                            w.heartbeat_s)
    gone = set(stale)
    chunks = [c for c in chunks if (c["task_id"], c["attempt"]) not in gone]
    if not chunks:
        return stale
    refs = {(c["task_id"], c["attempt"]) for c in chunks}

    limit = rt.config.max_output_bytes

    def write(tx: Tx) -> list[dict[str, Any]]:
        run_ids = tx.run_ids(refs)
        stored = tx.chunk_bytes(run_ids.values())
        rows, kept = [], []
        for c in chunks:
            run_id = run_ids.get((c["task_id"], c["attempt"]))
            if run_id is None:
                continue
            room = limit - stored.get(run_id, 0)
            if room <= 0:
                continue  # already cut: the marker is stored
            data = c["data"] if len(c["data"].encode()) <= room else cap(c["data"], room)
            stored[run_id] = stored.get(run_id, 0) + len(c["data"].encode())
            rows.append({"run_id": run_id, "seq": c["seq"], "data": data, "clear": c["clear"]})
            kept.append(c)
        tx.insert_chunks(rows)
        tx.note_changed({c["task_id"] for c in kept})
        return [{**c, "run_id": r["run_id"], "data": r["data"]}
                for c, r in zip(kept, rows, strict=True)]

    stored = await rt.store.run(write)
    for chunk in stored:  # watchers see what was stored: cut where the output limit cut it
        if rt.feed.is_watched(chunk["task_id"]):
            rt.feed.publish(chunk["task_id"], chunk)
    return stale
