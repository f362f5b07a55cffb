"""Prometheus metrics of the coordinator (prometheus-client), served on --metrics-listen.

Counters and histograms move where the fact happens, after its commit (leasing,
runs, the store, the RPC interceptor); the gauges of queue depth, the oldest due
task and live workers are read on the event loop every REFRESH_S, and only while
someone scrapes, so an idle, unwatched coordinator asks its database nothing.
docs/metrics.md lists every metric.

Each coordinator exports its own view: with several coordinators on one
database, sum the counters and the worker gauges over them; the queue gauges
are the database's, the same on each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from taskgrid.coordinator.errors import StoreUnavailableError
from taskgrid.coordinator.lifecycle import TERMINAL_TASK_STATUSES, TaskStatus
from taskgrid.coordinator.runtime import repeat
from taskgrid.promserve import MetricsServer

if TYPE_CHECKING:
    from taskgrid.coordinator.runtime import Runtime

logger = logging.getLogger(__name__)

#: how often the gauges are read while scraped
REFRESH_S = 5.0
#: the gauges stop being read this long after the last scrape
IDLE_AFTER_S = 60.0
#: histogram buckets (seconds): from a fast claim to a long task
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
RUN_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _ScrapeClock(Collector):
    """Notes each scrape (in the HTTP thread), so the gauges are read only while watched."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        self.metrics.last_scrape = time.monotonic()
        return []


class Metrics:
    """Every metric of one coordinator, on a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.last_scrape = 0.0
        self._server = MetricsServer(r)
        self.leases = Counter("taskgrid_leases", "Leases granted", ["function"], registry=r)
        self.reports = Counter("taskgrid_reports", "Run outcomes applied", ["status", "function"],
                               registry=r)
        self.finished = Counter("taskgrid_tasks_finished", "Tasks that reached a final status",
                                ["status", "function"], registry=r)
        self.run_seconds = Histogram("taskgrid_task_run_seconds", "Run time of reported runs",
                                     ["function"], buckets=RUN_BUCKETS, registry=r)
        self.queue_to_start = Histogram(
            "taskgrid_queue_to_start_seconds", "From a task's due time to its run's start",
            ["group"], buckets=LATENCY_BUCKETS, registry=r)
        self.rpcs = Counter("taskgrid_rpcs", "gRPC calls served", ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("taskgrid_rpc_seconds", "gRPC unary call latency",
                                     ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.transaction_seconds = Histogram(
            "taskgrid_db_transaction_seconds", "Database transactions, from begin to commit",
            buckets=LATENCY_BUCKETS, registry=r)
        self.lost_requeues = Counter("taskgrid_lost_worker_requeues",
                                     "Tasks given back to the queue because their worker was lost",
                                     registry=r)
        self.stale_reports = Counter("taskgrid_stale_reports",
                                     "Reports refused: their lease was no longer held",
                                     registry=r)
        self.started = Gauge("taskgrid_coordinator_start_time_seconds",
                             "When this coordinator process started (a restart resets it)",
                             registry=r)
        self.started.set(time.time())
        self.tasks = Gauge("taskgrid_tasks", "Tasks waiting or running, by group and status",
                           ["group", "status"], registry=r)
        self.oldest_due = Gauge("taskgrid_oldest_due_task_age_seconds",
                                "How long the oldest due, queued task has waited", ["group"],
                                registry=r)
        self.workers = Gauge("taskgrid_workers", "Live workers attached to this coordinator",
                             ["group"], registry=r)
        self.free_slots = Gauge("taskgrid_worker_free_slots",
                                "Free slots of the live workers attached to this coordinator",
                                ["group"], registry=r)
        r.register(_ScrapeClock(self))

    # -- events (called on the loop after their commit) -------------------------------

    def leased(self, rows: Iterable[Mapping[str, Any]], now: dt.datetime) -> None:
        """Leases granted (started at `now` when not prefetched)."""
        for row in rows:
            self.leases.labels(row["function_name"]).inc()
            due = row.get("next_run_time")
            if due is not None and row.get("status") == TaskStatus.RUNNING:
                self.queue_to_start.labels(row["group_name"]).observe(
                    max(0.0, (now - due).total_seconds()))

    def ended(self, rows: Iterable[Mapping[str, Any]], outcomes: Mapping[int, str],
              now: dt.datetime) -> None:
        """Runs ended (their outcome by task id); tasks now in a final status are finished."""
        for row in rows:
            function = row["function_name"]
            outcome = outcomes.get(row["id"])
            if outcome is not None:
                self.reports.labels(outcome, function).inc()
                start = row.get("last_run_time")
                if start is not None:
                    self.run_seconds.labels(function).observe(
                        max(0.0, (now - start).total_seconds()))
            if row["status"] in TERMINAL_TASK_STATUSES:
                self.finished.labels(row["status"], function).inc()
            elif row["status"] == TaskStatus.QUEUED and outcome is None:
                self.lost_requeues.inc()  # given back without an outcome: its worker was lost

    # -- gauges (read on the loop while scraped) -----------------------------------------

    async def refresh(self, rt: Runtime) -> None:
        """Read the queue gauges from the database and the worker gauges from memory."""
        now = rt.clock.now()
        counts, oldest = await rt.store.run(lambda tx: (tx.active_counts(), tx.oldest_due(now)))
        self.tasks.clear()
        for (group, status), n in counts.items():
            self.tasks.labels(group, status).set(n)
        self.oldest_due.clear()
        for group, due in oldest.items():
            self.oldest_due.labels(group).set(max(0.0, (now - due).total_seconds()))
        self.workers.clear()
        self.free_slots.clear()
        for w in rt.registry.by_id.values():
            if not w.alive:
                continue
            for group in w.group_names:
                self.workers.labels(group).inc()
                self.free_slots.labels(group).inc(max(0, w.capacity - len(w.leases)))

    async def loop(self, rt: Runtime, stopping: asyncio.Event) -> None:
        """Refresh the gauges every REFRESH_S while someone scrapes."""
        async def step() -> None:
            if time.monotonic() - self.last_scrape < IDLE_AFTER_S:
                try:
                    await self.refresh(rt)
                except StoreUnavailableError as exc:  # an outage: the next turn tries again
                    logger.debug("metrics refresh failed error=%s", exc)
        await repeat(step, REFRESH_S, stopping, "metrics refresh")

    def serve(self, listen: str) -> int:
        """Serve /metrics on `listen` (HOST:PORT, port 0 picks one); returns the port."""
        return self._server.serve(listen, logger)

    def close(self) -> None:
        """Stop serving /metrics (blocking: call off the loop)."""
        self._server.close()


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Counts every call by method and status code, and times unary calls."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        """Wrap unary handlers to time them; count the others as they start."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler is None or handler.unary_unary is None:
            if handler is not None:
                self.metrics.rpcs.labels(method, "STREAM").inc()
            return handler
        behavior = handler.unary_unary
        metrics = self.metrics

        async def timed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except BaseException:
                code = _code_name(context.code()) or "UNKNOWN"
                raise
            finally:
                metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
                metrics.rpcs.labels(method, code).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _code_name(code: Any) -> str | None:
    if code is None:
        return None
    return str(getattr(code, "name", code))
