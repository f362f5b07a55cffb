"""Prometheus metrics of a Python worker (prometheus-client), served on --metrics-listen.

The worker's own view of its runs: what it started and how each ended, how long
they ran, and its slots. The coordinator exports the same runs from the database's
side (coordinator/metrics.py); docs/metrics.md lists both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from taskgrid.promserve import MetricsServer

from .records import RunResult, TaskRun

logger = logging.getLogger(__name__)

#: run time buckets (seconds), as the coordinator's
RUN_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class WorkerMetrics:
    """Every metric of one worker, on a registry of its own; safe from any thread."""

    def __init__(self, slots: int, free_slots: Callable[[], int]) -> None:
        r = self.registry = CollectorRegistry()
        self.runs = Counter("taskgrid_worker_runs", "Runs this worker ended, by outcome",
                            ["function", "outcome"], registry=r)
        self.run_seconds = Histogram("taskgrid_worker_run_seconds",
                                     "Run time, from the child's start to its end",
                                     ["function"], buckets=RUN_BUCKETS, registry=r)
        self.leases = Counter("taskgrid_worker_leases", "Leases this worker started", ["function"],
                              registry=r)
        self.slots = Gauge("taskgrid_worker_slots", "Slots (child processes) of this worker",
                           registry=r)
        self.slots.set(slots)
        self.free = Gauge("taskgrid_worker_free_slots_now", "Slots free at the scrape",
                          registry=r)
        self.free.set_function(free_slots)
        self._started: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()
        self._server = MetricsServer(r)

    def started(self, task: TaskRun) -> None:
        """A lease's run began."""
        self.leases.labels(task.function_name).inc()
        with self._lock:
            self._started[task.key] = time.monotonic()

    def finished(self, result: RunResult) -> None:
        """A run ended (any outcome)."""
        task = result.task
        with self._lock:
            began = self._started.pop(task.key, None)
        if began is not None:
            self.run_seconds.labels(task.function_name).observe(time.monotonic() - began)
        # Counted after the duration: a scrape that sees the run counted sees its duration too.
        self.runs.labels(task.function_name, result.outcome.value).inc()

    def serve(self, listen: str) -> int:
        """Serve /metrics on `listen` (HOST:PORT, port 0 picks one); returns the port."""
        return self._server.serve(listen, logger)

    def close(self) -> None:
        """Stop serving /metrics."""
        self._server.close()
