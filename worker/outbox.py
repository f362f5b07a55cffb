"""What the worker owes the coordinator: finished runs and output chunks not yet sent.

The agent's reporter thread drains it in batches (one SendOutput and one
Report call carry everything pending, bounded in size) and puts a batch back
when the coordinator is unreachable, so nothing is lost while it is away.
Chunks of a run that has finished travel inside its report, in seq order,
so a run's live chunks never arrive after its report. Plain data: no gRPC
here (agent.py converts), so the ordering rules are unit-testable.

While the coordinator is away, a noisy run must not fill the worker's
memory: at most DEFAULT_MAX_RUN_CHARS of a run's output are kept. The
oldest unsent text and the newest are kept; the middle is replaced by one
marker chunk saying how much was dropped (`cap_output`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Iterable

from .capture import Chunk
from .records import LeaseKey, RunResult

DEFAULT_MAX_BATCH_CHARS = 2 * 1024 * 1024
"""Output characters per call; keeps a batch under gRPC's default 4 MB limit."""
DEFAULT_MAX_BATCH_REPORTS = 500
"""Reports per Report call."""
DEFAULT_MAX_RUN_CHARS = 16 * 1024 * 1024
"""Unsent output characters kept per run (the coordinator's default output cap)."""
DROPPED_MARKER = "\n[taskgrid: {} characters of output dropped: coordinator unreachable]\n"
_DROPPED_RE = re.compile(r"\n\[taskgrid: (\d+) characters of output dropped: coordinator "
                         r"unreachable\]\n")

logger = logging.getLogger(__name__)


def _chars(chunks: Iterable[Chunk]) -> int:
    return sum(len(chunk.data) for chunk in chunks)


def _has_marker(chunks: list[Chunk]) -> bool:
    return any(_DROPPED_RE.fullmatch(chunk.data) for chunk in chunks)


def cap_output(chunks: list[Chunk], max_chars: int) -> list[Chunk]:
    """`chunks` (one run's, in seq order) cut to about `max_chars` characters.

    Chunks before the last ``clear`` one are dropped first: they would be
    discarded anyway. Past that, the first half of the budget (up to an
    earlier marker) and the latest text are kept, and the chunks between are
    replaced by one marker chunk taking the first dropped seq, so seq order
    and the coordinator's folding still hold. A marker already there absorbs
    the new count, so repeated cuts leave one marker.
    """
    if _chars(chunks) <= max_chars:
        return chunks
    last_clear = max((i for i, chunk in enumerate(chunks) if chunk.clear), default=0)
    chunks = chunks[last_clear:]
    if _chars(chunks) <= max_chars:
        return chunks
    head: list[Chunk] = []
    size = dropped = 0
    marker: Chunk | None = None
    for chunk in chunks:
        found = _DROPPED_RE.fullmatch(chunk.data)
        if found:
            marker, dropped = chunk, int(found.group(1))
            break
        if size + len(chunk.data) > max_chars // 2:
            break
        head.append(chunk)
        size += len(chunk.data)
    rest = chunks[len(head) + (marker is not None):]
    budget = max_chars - size - len(DROPPED_MARKER) - 20
    while rest and _chars(rest) > budget:
        gone = rest.pop(0)
        marker = marker or gone
        found = _DROPPED_RE.fullmatch(gone.data)
        dropped += int(found.group(1)) if found else len(gone.data)
    if marker is None:
        return chunks
    text = DROPPED_MARKER.format(dropped)
    return [*head, Chunk(seq=marker.seq, data=text, clear=marker.clear), *rest]


def _with_output(report: RunResult, chunks: list[Chunk]) -> RunResult:
    """Return `report` also carrying `chunks`, all in seq order."""
    merged = sorted([*chunks, *report.output], key=lambda chunk: chunk.seq)
    return dataclasses.replace(report, output=merged)


class Outbox:
    """Thread-safe queue of unsent chunks (by lease) and unsent reports (by lease)."""

    def __init__(
        self,
        max_batch_chars: int = DEFAULT_MAX_BATCH_CHARS,
        max_batch_reports: int = DEFAULT_MAX_BATCH_REPORTS,
        max_run_chars: int = DEFAULT_MAX_RUN_CHARS,
    ) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[LeaseKey, list[Chunk]] = {}
        self._reports: dict[LeaseKey, RunResult] = {}
        self._in_flight: set[LeaseKey] = set()  # reports taken, not yet settled
        self._max_chars = max_batch_chars
        self._max_reports = max_batch_reports
        self._max_run_chars = max_run_chars

    def _capped(self, key: LeaseKey, chunks: list[Chunk]) -> list[Chunk]:
        """`cap_output` with this outbox's limit, logging a run's first cut."""
        capped = cap_output(chunks, self._max_run_chars)
        if capped is not chunks and _has_marker(capped) and not _has_marker(chunks):
            logger.warning("output of task=%s attempt=%s over %s unsent characters: "
                           "dropping its middle", key[0], key[1], self._max_run_chars)
        return capped

    def add_chunks(self, key: LeaseKey, chunks: list[Chunk]) -> None:
        """Queue live chunks of a running (or just finished) run."""
        if chunks:
            with self._lock:
                self._chunks[key] = self._capped(key, [*self._chunks.get(key, []), *chunks])

    def add_report(self, result: RunResult) -> None:
        """Queue the outcome of a finished run."""
        key = result.task.key
        with self._lock:
            output = self._capped(key, result.output)
            if output is not result.output:
                result = dataclasses.replace(result, output=output)
            self._reports[key] = result

    def has_reports(self) -> bool:
        """True when at least one report waits."""
        with self._lock:
            return bool(self._reports)

    def has_output(self) -> bool:
        """True when live chunks of a still-running run wait."""
        with self._lock:
            return any(key not in self._reports for key in self._chunks)

    def is_empty(self) -> bool:
        """True when nothing waits and no report is in flight."""
        with self._lock:
            return not self._reports and not self._chunks and not self._in_flight

    def held_keys(self) -> set[LeaseKey]:
        """Leases with something unsent or in flight: the worker still holds them."""
        with self._lock:
            return set(self._reports) | set(self._chunks) | self._in_flight

    def take_output(self) -> dict[LeaseKey, list[Chunk]]:
        """Remove and return live chunks of runs without a report, up to the batch size."""
        batch: dict[LeaseKey, list[Chunk]] = {}
        size = 0
        with self._lock:
            for key in [k for k in self._chunks if k not in self._reports]:
                chunks = self._chunks[key]
                if batch and size + _chars(chunks) > self._max_chars:
                    break
                batch[key] = self._chunks.pop(key)
                size += _chars(chunks)
        return batch

    def take_reports(self) -> list[RunResult]:
        """Remove and return reports, each carrying its run's unsent chunks first."""
        batch: list[RunResult] = []
        size = 0
        with self._lock:
            for key in list(self._reports):
                report = self._reports[key]
                earlier = self._chunks.get(key, [])
                chars = _chars(earlier) + _chars(report.output)
                if batch and (len(batch) >= self._max_reports or size + chars > self._max_chars):
                    break
                del self._reports[key]
                if earlier:
                    del self._chunks[key]
                    report = _with_output(report, earlier)
                    report = dataclasses.replace(
                        report, output=self._capped(key, report.output))
                batch.append(report)
                self._in_flight.add(key)
                size += chars
        return batch

    def settle_reports(self, batch: list[RunResult]) -> None:
        """Reports taken by `take_reports` were delivered (or dropped for good)."""
        with self._lock:
            self._in_flight.difference_update(report.task.key for report in batch)

    def restore_output(self, batch: dict[LeaseKey, list[Chunk]]) -> None:
        """Put back an output batch that could not be sent, ahead of newer chunks."""
        with self._lock:
            for key, chunks in batch.items():
                self._chunks[key] = self._capped(key, [*chunks, *self._chunks.get(key, [])])

    def restore_reports(self, batch: list[RunResult]) -> None:
        """Put back reports that could not be sent."""
        with self._lock:
            for report in batch:
                key = report.task.key
                self._in_flight.discard(key)
                earlier = self._chunks.pop(key, [])
                if earlier:
                    report = _with_output(report, earlier)
                    report = dataclasses.replace(
                        report, output=self._capped(key, report.output))
                self._reports[key] = report

    def discard(self, keys: Iterable[LeaseKey]) -> None:
        """Forget everything about these leases (stale or lost)."""
        with self._lock:
            for key in keys:
                self._chunks.pop(key, None)
                self._reports.pop(key, None)
                self._in_flight.discard(key)

    def clear(self) -> None:
        """Forget everything (the session is gone, and with it every lease)."""
        with self._lock:
            self._chunks.clear()
            self._reports.clear()
            self._in_flight.clear()
