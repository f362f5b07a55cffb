"""What the worker owes the coordinator: finished runs and output chunks not yet sent.

The agent's reporter thread drains it in batches (one SendOutput and one
Report call carry everything pending, bounded in size) and puts a batch back
when the coordinator is unreachable, so nothing is lost while it is away.
Chunks of a run that has finished travel inside its report, in seq order,
so a run's live chunks never arrive after its report. Plain data: no gRPC
here (agent.py converts), so the ordering rules are unit-testable.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable

from taskgrid.worker.capture import Chunk
from taskgrid.worker.records import LeaseKey, RunResult

DEFAULT_MAX_BATCH_CHARS = 2 * 1024 * 1024
"""Output characters per call; keeps a batch under gRPC's default 4 MB limit."""
DEFAULT_MAX_BATCH_REPORTS = 500
"""Reports per Report call."""


def _chars(chunks: Iterable[Chunk]) -> int:
    return sum(len(chunk.data) for chunk in chunks)


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
    ) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[LeaseKey, list[Chunk]] = {}
        self._reports: dict[LeaseKey, RunResult] = {}
        self._in_flight: set[LeaseKey] = set()  # reports taken, not yet settled
        self._max_chars = max_batch_chars
        self._max_reports = max_batch_reports

    def add_chunks(self, key: LeaseKey, chunks: list[Chunk]) -> None:
        """Queue live chunks of a running (or just finished) run."""
        if chunks:
            with self._lock:
                self._chunks.setdefault(key, []).extend(chunks)

    def add_report(self, result: RunResult) -> None:
        """Queue the outcome of a finished run."""
        with self._lock:
            self._reports[result.task.key] = result

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
                self._chunks[key] = [*chunks, *self._chunks.get(key, [])]

    def restore_reports(self, batch: list[RunResult]) -> None:
        """Put back reports that could not be sent."""
        with self._lock:
            for report in batch:
                key = report.task.key
                self._in_flight.discard(key)
                earlier = self._chunks.pop(key, [])
                if earlier:
                    report = _with_output(report, earlier)
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
