"""The rows are the truth: leases, recovery, and the faults once found, each named after it."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from taskgrid.coordinator import schema
from taskgrid.coordinator.store import Store
from taskgrid.coordinator.validation import validate_task
from taskgrid.v1 import client_pb2, common_pb2, worker_pb2
from tests.support.inprocess import InProcessCoordinator
from tests.support.rpc import FakeWorker, connect, get, queue, status_of
from tests.support.wait import wait_until


@pytest.fixture
def stubs(coordinator):
    s = connect(coordinator.address)
    yield s
    s.close()


def task_row(db_url: str, task_id: int) -> dict[str, Any]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(schema.task).where(schema.task.c.id == task_id))
            return dict(row.mappings().one())
    finally:
        engine.dispose()


def run_rows(db_url: str, task_id: int) -> list[dict[str, Any]]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(schema.run).where(schema.run.c.task_id == task_id)
                                .order_by(schema.run.c.id))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def insert_behind_the_coordinators_back(db_url: str, **fields: Any) -> int:
    """A task written straight into the database: no coordinator signal announces it."""
    row, errors = validate_task({"function_name": "add", "args": "[1, 2]", **fields}, {},
                                dt.datetime.now(dt.UTC), 1 << 20)
    assert not errors and row is not None
    store = Store(db_url)
    try:
        [task_id] = store.transact(lambda tx: tx.insert_tasks([row]))
        return task_id
    finally:
        store.close()


# -- 2. cancellation-safe RPCs ------------------------------------------------------------------


def test_cancelled_lease_hands_its_tasks_back_at_once(db_url):
    """A Lease whose caller is gone while its claim commits gives the tasks back, counting
    nothing (they were once left RUNNING forever)."""
    inproc = InProcessCoordinator(db_url)
    store = inproc.coordinator.runtime.store
    real = store._transact_many  # every transaction the store runs goes through it
    claimed = threading.Event()

    def slow_claim(fns):
        result = real(fns)
        if any(getattr(fn, "__name__", "") == "claim" for fn in fns):
            claimed.set()  # committed; the caller's deadline passes meanwhile
            time.sleep(0.5)  # fault injection: a claim slower than the caller's deadline
        return result

    store._transact_many = slow_claim
    s = connect(inproc.address)
    try:
        tid = queue(s, "add", args="[1, 2]").id
        w = FakeWorker(s, "victim", ["add"])
        with pytest.raises(grpc.RpcError) as info:
            s.worker.Lease(worker_pb2.LeaseRequest(session=w.session, max_tasks=1, wait_s=0),
                           timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert claimed.wait(5)
        wait_until(lambda: status_of(s, tid) == "QUEUED", timeout=5, desc="handed back")
        task = get(s, tid, all_runs=True)
        assert task.task.lost_count == 0 and task.task.times_failed == 0
        assert list(task.runs) == []
        store._transact_many = real
        [again] = w.lease().leases
        assert again.ref.task_id == tid and again.ref.attempt == 2
    finally:
        store._transact_many = real
        s.close()
        inproc.stop()


# -- 1. restart recovery reads the rows ---------------------------------------------------------


def test_leases_of_a_worker_that_is_not_alive_are_taken_back_after_restart(
        db_url, start_coordinator, start_worker):
    """A task left RUNNING for a worker no session knows is requeued by the reconcile pass."""
    coordinator = start_coordinator()
    s = connect(coordinator.address)
    tid = queue(s, "add", args="[2, 3]").id
    ghost = FakeWorker(s, "ghost", ["add"])
    [lease] = ghost.lease().leases
    coordinator.stop()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # the worker row dies, the lease is left behind
        conn.execute(sa.update(schema.worker).values(alive=False))
    engine.dispose()
    coordinator.restart()
    s.close()
    s = connect(coordinator.address)
    start_worker("real")
    wait_until(lambda: status_of(s, tid) == "COMPLETED", timeout=20, desc="recovered")
    runs = run_rows(db_url, tid)
    assert [r["status"] for r in runs] == ["FAILED", "COMPLETED"]
    assert "ghost" in runs[0]["traceback"] and runs[0]["attempt"] == lease.ref.attempt
    s.close()


# -- 4. the smaller faults ------------------------------------------------------------------------


def test_duplicate_live_worker_name_is_refused_unless_the_old_session_is_silent(stubs):
    first = FakeWorker(stubs, "same-name", ["add"], heartbeat=0.5)
    first.heartbeat()
    with pytest.raises(grpc.RpcError) as info:
        FakeWorker(stubs, "same-name", ["add"], heartbeat=0.5)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "same-name" in info.value.details()
    # Silent for longer than 1.5 heartbeats: a restarted worker of that name takes over.
    second = wait_until(lambda: _try_register(stubs, "same-name"), timeout=5,
                        desc="takeover after silence")
    assert second.session.worker_id == first.session.worker_id
    with pytest.raises(grpc.RpcError) as info:
        first.heartbeat()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _try_register(stubs, name):
    try:
        return FakeWorker(stubs, name, ["add"], heartbeat=0.5)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
        return None


def test_lease_never_listed_in_two_heartbeats_is_handed_back_uncounted(stubs):
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "forgetful", ["add"], heartbeat=0.2)
    w.lease()
    time.sleep(0.25)  # past one interval since the grant: only then is a missing entry evidence
    w.heartbeat()
    assert status_of(stubs, tid) == "RUNNING"  # one miss is not enough
    w.heartbeat()
    wait_until(lambda: status_of(stubs, tid) == "QUEUED", timeout=5, desc="handed back")
    task = get(stubs, tid, all_runs=True)
    assert task.task.lost_count == 0 and list(task.runs) == []


def test_lease_listed_then_dropped_is_lost(stubs):
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "dropper", ["add"], heartbeat=0.2)
    [lease] = w.lease().leases
    w.heartbeat(lease.ref)
    time.sleep(0.25)  # past one interval since the grant (see above)
    w.heartbeat()
    w.heartbeat()
    wait_until(lambda: status_of(stubs, tid) == "QUEUED", timeout=5, desc="lost")
    task = get(stubs, tid, all_runs=True)
    assert task.task.lost_count == 1
    assert [r.status for r in task.runs] == [common_pb2.RUN_STATUS_FAILED]


def test_broadcast_children_of_a_lost_worker_end_expired(stubs, coordinator):
    stay = FakeWorker(stubs, "stay", ["add"], heartbeat=0.5)
    gone = FakeWorker(stubs, "gone", ["add"], heartbeat=0.5)
    parent = queue(stubs, "add", broadcast=True, period=3600).id
    wait_until(lambda: _children(stubs, parent, 2), timeout=10, desc="fan-out")
    # "gone" leaves at once; its child must not stay QUEUED forever.
    gone.stubs.worker.Heartbeat(worker_pb2.HeartbeatRequest(session=gone.session, leaving=True))
    stay.heartbeat()

    def ended():
        stay.heartbeat()
        statuses = sorted(common_pb2.TaskStatus.Name(c.status) for c in _all_children(stubs,
                                                                                      parent))
        return statuses if "TASK_STATUS_EXPIRED" in statuses else None
    statuses = wait_until(ended, timeout=10, desc="orphaned child ended")
    assert statuses == ["TASK_STATUS_EXPIRED", "TASK_STATUS_QUEUED"]


def _all_children(stubs, parent):
    reply = stubs.client.ListTasks(client_pb2.ListTasksRequest(page_size=100))
    return [t for t in reply.tasks if t.id != parent]


def _children(stubs, parent, n):
    found = _all_children(stubs, parent)
    return found if len(found) == n else None


def test_lease_reply_is_bounded_by_bytes(start_coordinator):
    coordinator = start_coordinator(extra_args=["--max-message-bytes", str(3 * 1024 * 1024),
                                                "--max-args-bytes", str(1024 * 1024)])
    s = connect(coordinator.address)
    big = '["' + "x" * 700_000 + '"]'
    for _ in range(6):
        assert not queue(s, "add", args=big).errors
    w = FakeWorker(s, "big", ["add"], capacity=6)
    sizes = []
    taken = 0
    while taken < 6:
        reply = w.lease(n=6)
        sizes.append(reply.ByteSize())
        taken += len(reply.leases)
        assert reply.leases
    assert len(sizes) > 1 and max(sizes) < 3 * 1024 * 1024
    s.close()


def test_pending_stop_wins_over_a_simultaneous_failure(stubs):
    tid = queue(stubs, "add", retry_failed=3, period=0).id
    w = FakeWorker(stubs, "w", ["add"])
    [lease] = w.lease().leases
    reply = stubs.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=tid)))
    assert reply.stopped
    w.report(lease.ref, "FAILED", traceback="died as it was being stopped")
    assert status_of(stubs, tid) == "STOPPED"


def test_pending_stop_wins_over_the_backstop_timeout(start_coordinator):
    coordinator = start_coordinator(extra_args=["--timeout-grace", "0.2"])
    s = connect(coordinator.address)
    tid = queue(s, "add", timeout=1, retry_failed=3, period=0).id
    w = FakeWorker(s, "silent-reporter", ["add"], heartbeat=0.5)
    [lease] = w.lease().leases
    s.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=tid)))

    def settled():
        w.heartbeat(lease.ref)  # alive, but never reports
        return status_of(s, tid) != "RUNNING"
    wait_until(settled, timeout=15, desc="backstop")
    assert status_of(s, tid) == "STOPPED"
    s.close()


def test_concurrent_queue_task_with_one_uuid_gets_a_field_error(coordinator):
    channels = [connect(coordinator.address) for _ in range(8)]
    barrier = threading.Barrier(len(channels))

    def one(s):
        barrier.wait()
        return s.client.QueueTask(client_pb2.QueueTaskRequest(
            task=common_pb2.TaskSpec(function_name="add", uuid="the-one-uuid")))
    with concurrent.futures.ThreadPoolExecutor(len(channels)) as pool:
        replies = list(pool.map(one, channels))
    ok = [r for r in replies if not r.errors]
    assert len(ok) == 1
    assert all(dict(r.errors) == {"uuid": "already in use"} for r in replies if r.errors)
    for s in channels:
        s.close()


def test_safety_poll_repairs_a_missed_wake_up(db_url, start_coordinator):
    coordinator = start_coordinator(extra_args=["--log-level", "DEBUG"])  # logs each park
    stubs = connect(coordinator.address)
    w = FakeWorker(stubs, "parked", ["add"], heartbeat=60)  # no heartbeat needed while parked
    got: dict[str, Any] = {}

    def park():
        got["reply"] = w.lease(wait_s=20)
    thread = threading.Thread(target=park)
    thread.start()
    # the task must appear while the call is parked (else the call just finds it: no test)
    wait_until(lambda: "lease parked worker=parked" in coordinator.log_text(), timeout=5,
               desc="the Lease call to park")
    started = time.monotonic()
    tid = insert_behind_the_coordinators_back(db_url)
    thread.join(15)
    assert [x.ref.task_id for x in got["reply"].leases] == [tid]
    assert time.monotonic() - started < 10
    stubs.close()


# -- 5. one coordinator per database ------------------------------------------------------------


def test_a_second_coordinator_is_refused_on_sqlite_and_welcome_on_postgres(db_url,
                                                                          start_coordinator):
    first = start_coordinator()
    if not db_url.startswith("sqlite"):
        second = start_coordinator()  # any number share one PostgreSQL database
        for c in (first, second):
            s = connect(c.address)
            assert not queue(s, "add").errors
            s.close()
        return
    result = subprocess.run(
        [sys.executable, "-m", "taskgrid", "coordinator", "--db", db_url, "--listen",
         "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "already served by another coordinator" in result.stderr
    s = connect(first.address)
    assert not queue(s, "add").errors  # the first one carries on
    s.close()


@pytest.mark.postgres
def test_database_outage_is_unavailable_and_the_coordinator_recovers(
        pg_cluster, pg_database, processes):
    import psycopg

    coordinator = processes.start_coordinator(pg_cluster.url(pg_database))
    s = connect(coordinator.address)
    assert not queue(s, "add", args="[1, 1]").errors
    admin = psycopg.connect(**pg_cluster.connect_kwargs(), autocommit=True)
    try:
        admin.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", (pg_database,))
        for call in (lambda: queue(s, "add", args="[2, 2]"), lambda: get(s, 1)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    finally:
        admin.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true')
        admin.close()

    def answers():
        try:
            return queue(s, "add", args="[3, 3]")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return None
    tid = wait_until(answers, timeout=20, desc="answering again").id
    processes.start_worker(coordinator.address, "after-outage")
    wait_until(lambda: status_of(s, tid) == "COMPLETED", timeout=20, desc="work resumes")
    assert coordinator.is_alive()
    assert "writer lock lost" not in coordinator.log_text()
    s.close()


# -- 3. a poisoned item fails only itself -------------------------------------------------------


@pytest.mark.parametrize("poison", ["decision", "transaction"])
def test_poisoned_report_item_fails_only_itself(db_url, monkeypatch, poison):
    """A report item whose decision raises, or whose write fails, ends FAILED with the reason;
    the rest of the batch applies (fault injection: one task's outcome is poisoned)."""
    from taskgrid.coordinator import lifecycle, output

    inproc = InProcessCoordinator(db_url)
    s = connect(inproc.address)
    try:
        good, bad = (queue(s, "add", args="[1, 2]").id for _ in range(2))
        w = FakeWorker(s, "w", ["add"], capacity=2, heartbeat=60)
        leases = {x.ref.task_id: x for x in w.lease(n=2).leases}
        if poison == "decision":
            real = lifecycle.finish

            def finish(task, *args, **kwargs):
                if task["id"] == bad:
                    raise OverflowError("poisoned decision")
                return real(task, *args, **kwargs)
            monkeypatch.setattr(lifecycle, "finish", finish)
        else:
            real_fold = output.fold

            def fold(chunks):
                chunks = list(chunks)
                if any(c.get("data") == "poison" for c in chunks):
                    raise ValueError("poisoned output")
                return real_fold(chunks)
            monkeypatch.setattr(output, "fold", fold)
        reports = [w.run_report(leases[good].ref, "COMPLETED", "3"),
                   w.run_report(leases[bad].ref, "COMPLETED", "3", output=[(1, "poison")])]
        reply = s.worker.Report(worker_pb2.ReportRequest(session=w.session, reports=reports))
        assert list(reply.stale) == []
        assert status_of(s, good) == "COMPLETED"
        assert status_of(s, bad) == "FAILED"
        [run] = get(s, bad, all_runs=True).runs
        assert "CoordinatorError" in run.traceback and "poisoned" in run.traceback
    finally:
        s.close()
        inproc.stop()


def test_a_quiet_coordinator_skips_its_reconcile_passes(db_url):
    """No lease anywhere, none granted or ended, the same sessions: the reconcile pass reads
    nothing (an idle system stays off the database), until a lease or a minute changes that."""
    from taskgrid.coordinator.reaper import QUIET_RECONCILE_S, RECONCILE_INTERVAL_S

    inproc = InProcessCoordinator(db_url)
    rt = inproc.coordinator.runtime
    s = connect(inproc.address)
    try:
        w = FakeWorker(s, "idle", ["add"], heartbeat=60)  # never declared dead in this test
        t0 = time.monotonic() + RECONCILE_INTERVAL_S

        def tick(offset):
            inproc._call(rt.reaper.run_once(now_mono=t0 + offset))

        tick(0)  # a new session: this pass runs
        # Counted in reconcile passes, not store bodies: on PostgreSQL the node beat and a
        # (re)election's timer reload also read, at moments of their own.
        quiet_from, bodies = rt.reaper.passes, rt.store.bodies
        step = RECONCILE_INTERVAL_S + 0.1
        for i in range(1, 8):  # about 20 s of reconcile intervals
            tick(i * step)
        assert rt.reaper.passes == quiet_from
        if rt.store.is_sqlite:  # nothing else reads there: the store was not asked at all
            assert rt.store.bodies == bodies
        tick(QUIET_RECONCILE_S + 1)  # still one pass a minute (heartbeat times, a safety net)
        assert rt.reaper.passes == quiet_from + 1
        queue(s, "add", args="[1, 2]")
        assert len(w.lease().leases) == 1
        after_lease = rt.reaper.passes
        tick(QUIET_RECONCILE_S + 1 + step)  # a lease is known: the pass runs
        assert rt.reaper.passes == after_lease + 1
    finally:
        s.close()
        inproc.stop()
