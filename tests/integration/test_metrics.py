"""The Prometheus endpoints of a real coordinator and a real worker, scraped under load."""

from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.rpc import connect, queue, status_of
from tests.support.wait import wait_until

METRICS_LINE = re.compile(r"metrics on (http://\S+/metrics)")


def endpoint(child) -> str:
    match = wait_until(lambda: METRICS_LINE.search(child.log_text()), timeout=20,
                       desc=f"{child.name} to serve metrics")
    return match.group(1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def test_metrics_move_with_the_load(start_coordinator, start_worker):
    coordinator = start_coordinator(extra_args=["--metrics-listen", "127.0.0.1:0"])
    url = endpoint(coordinator)
    before = scrape(url)
    assert value(before, "taskgrid_leases_total") == 0
    assert value(before, "taskgrid_coordinator_start_time_seconds") > 0

    stubs = connect(coordinator.address)
    try:
        # Queue before any worker: the queue gauges see them waiting.
        waiting = [queue(stubs, "add", args=f"[{i}, 1]").id for i in range(5)]
        failing = queue(stubs, "fail", args='["on purpose"]').id
        wait_until(lambda: value(scrape(url), "taskgrid_tasks", group="main",
                                 status="QUEUED") == 6, timeout=20,
                   desc="the queue depth gauge to show 6 queued")
        assert value(scrape(url), "taskgrid_oldest_due_task_age_seconds", group="main") >= 0

        worker = start_worker(extra_args=["--concurrency", "2", "--metrics-listen",
                                          "127.0.0.1:0"])
        wurl = endpoint(worker)
        wait_until(lambda: all(status_of(stubs, t) == "COMPLETED" for t in waiting)
                   and status_of(stubs, failing) == "FAILED", timeout=30, desc="the load done")

        def settled() -> dict | None:
            s = scrape(url)
            done = value(s, "taskgrid_tasks_finished_total", status="COMPLETED", function="add")
            return s if done == 5 and value(s, "taskgrid_tasks", status="QUEUED") == 0 else None

        after = wait_until(settled, timeout=20, desc="the coordinator's metrics to settle")
    finally:
        stubs.close()
    assert value(after, "taskgrid_leases_total", function="add") == 5
    assert value(after, "taskgrid_reports_total", status="COMPLETED", function="add") == 5
    assert value(after, "taskgrid_tasks_finished_total", status="FAILED", function="fail") == 1
    assert value(after, "taskgrid_task_run_seconds_count", function="add") == 5
    assert value(after, "taskgrid_queue_to_start_seconds_count", group="main") == 6
    assert value(after, "taskgrid_rpcs_total", method="QueueTask", code="OK") == 6
    assert value(after, "taskgrid_rpc_seconds_count", method="Lease") >= 1
    assert value(after, "taskgrid_db_transaction_seconds_count") > value(
        before, "taskgrid_db_transaction_seconds_count")
    assert value(after, "taskgrid_workers", group="main") == 1
    assert value(after, "taskgrid_worker_free_slots", group="main") == 2  # both slots idle

    w = wait_until(lambda: (s := scrape(wurl)) and value(
        s, "taskgrid_worker_runs_total", function="add", outcome="COMPLETED") == 5 and s,
        timeout=20, desc="the worker's metrics")
    assert value(w, "taskgrid_worker_runs_total", function="fail", outcome="FAILED") == 1
    assert value(w, "taskgrid_worker_leases_total") == 6
    assert value(w, "taskgrid_worker_run_seconds_count", function="add") == 5
    assert value(w, "taskgrid_worker_slots") == 2


def test_no_metrics_endpoint_without_the_flag(coordinator):
    assert METRICS_LINE.search(coordinator.log_text()) is None
