"""Admin view of workers: liveness, status, heartbeat age, RSS, retention of dead rows."""

from __future__ import annotations

import pytest

from taskgrid.client import Scheduler
from taskgrid.v1 import admin_pb2
from tests.support.inprocess import InProcessCoordinator
from tests.support.rpc import FakeWorker, connect
from tests.support.wait import wait_until


@pytest.fixture
def retained(db_url):
    coordinator = InProcessCoordinator(db_url, worker_retention_s=3600)
    yield coordinator
    coordinator.stop()


def names(stubs, include_dead):
    reply = stubs.admin.ListWorkers(admin_pb2.ListWorkersRequest(include_dead=include_dead))
    return {w.worker_name: w for w in reply.workers}


def test_dead_worker_rows_are_removed_after_retention(retained):
    stubs = connect(retained.address)
    FakeWorker(stubs, "ghost", ["add"], heartbeat=0.2)
    wait_until(lambda: "ghost" not in names(stubs, False), timeout=10, desc="declared dead")
    assert not names(stubs, True)["ghost"].alive
    retained.advance(3599)
    assert "ghost" in names(stubs, True)
    retained.advance(2)
    wait_until(lambda: "ghost" not in names(stubs, True), timeout=10, desc="row removed")


def test_workers_show_status_heartbeat_rss_and_running(client, coordinator, start_worker):
    start_worker("w1")
    r = client.queue_task("sleep_for", pargs=[30])
    wait_until(lambda: client.task_status(r.id).status == "RUNNING", timeout=10)
    wait_until(lambda: client.get_workers()["w1"].rss_bytes > 0, timeout=10, desc="rss")
    w = client.get_workers()["w1"]
    assert w.status == "ACTIVE" and w.alive and w.running == (r.id,)
    assert "sleep_for" in w.functions and w.last_heartbeat is not None
    assert client.stop_task(r.id)
    wait_until(lambda: client.task_status(r.id).status == "STOPPED", timeout=15)


def test_command_reaches_an_idle_worker_at_once(client, coordinator, start_worker):
    """An idle worker's parked Lease call is answered with the new status immediately."""
    import time

    w = start_worker("w1", heartbeat=5.0)
    t0 = time.monotonic()
    client.kill(worker_name="w1")
    assert w.wait(10) == 0
    assert time.monotonic() - t0 < 2.5  # far below one heartbeat (5 s)


def test_scheduler_against_in_process_coordinator_lists_workers(retained):
    s = Scheduler(retained.address)
    FakeWorker(connect(retained.address), "x", ["f"], heartbeat=5)
    assert set(s.get_workers()) == {"x"}
    s.close()


def test_a_worker_that_exits_is_gone_at_once(client, coordinator, start_worker):
    """The leaving heartbeat: no waiting for dead_after (15 s at heartbeat 5 s)."""
    import time

    w = start_worker("w1", heartbeat=5.0)
    client.kill(worker_name="w1")
    assert w.wait(10) == 0
    t0 = time.monotonic()
    wait_until(lambda: "w1" not in client.get_workers(), timeout=5, desc="w1 gone")
    assert time.monotonic() - t0 < 5
    assert not client.get_workers(include_dead=True)["w1"].alive
    assert "worker gone worker=w1 reason=left" in coordinator.log_text()
