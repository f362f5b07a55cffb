"""Several coordinators on one PostgreSQL database: sessions move, one leader maintains,
notifications carry wake-ups, stops, commands and output between them, and a coordinator
cut off from the database stops serving.

Every test runs real coordinator processes on a database of the session's throwaway
PostgreSQL cluster, with real worker processes or a hand-driven worker over gRPC.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from taskgrid.coordinator.cluster import LEADER_TTL_S, NODE_BEAT_S
from taskgrid.v1 import admin_pb2, client_pb2, common_pb2
from tests.conformance.launch import go_binary
from tests.support.processes import CoordinatorProcess, TestProcesses, list_workers, stop_all
from tests.support.rpc import FakeWorker, Stubs, connect, queue, status_of
from tests.support.tcpproxy import FreezableProxy
from tests.support.wait import wait_until

pytestmark = pytest.mark.postgres

HEARTBEAT = 0.5
LEADER_LINE = re.compile(r"maintenance leader node=(\S+) epoch=(\d+)")
NODE_LINE = re.compile(r"serving db=.* node=(\S+)")


@pytest.fixture
def pg_url(pg_cluster: Any, pg_database: str) -> str:
    return str(pg_cluster.url(pg_database))


@pytest.fixture
def start_many(pg_url: str, processes: TestProcesses
               ) -> Callable[..., list[CoordinatorProcess]]:
    def start(n: int, **opts: Any) -> list[CoordinatorProcess]:
        url = opts.pop("db_url", pg_url)
        return [processes.start_coordinator(url, heartbeat=HEARTBEAT, **opts)
                for _ in range(n)]
    return start


@pytest.fixture
def start_worker(processes: TestProcesses) -> Callable[..., Any]:
    """A worker process on one coordinator, or on a comma-separated list of addresses."""
    def start(name: str, *, coordinator: CoordinatorProcess | str, **opts: Any) -> Any:
        address = coordinator if isinstance(coordinator, str) else coordinator.address
        return processes.start_worker(address, name, **opts)
    return start


@pytest.fixture
def stubs_of() -> Iterator[Callable[[CoordinatorProcess], Stubs]]:
    made: list[Stubs] = []

    def make(c: CoordinatorProcess) -> Stubs:
        s = connect(c.address)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def node_of(c: CoordinatorProcess) -> str:
    match = NODE_LINE.search(c.log_text())
    assert match, c.log_tail()
    return match.group(1)


def leader_row(url: str) -> tuple[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT node_name, epoch FROM scheduler_leader WHERE id = 1 AND expires_at > "
                "(clock_timestamp() AT TIME ZONE 'UTC')")).first()
    finally:
        engine.dispose()
    return (row[0], int(row[1])) if row else ("", 0)


def leader_of(url: str, coordinators: list[CoordinatorProcess]) -> CoordinatorProcess:
    names = {node_of(c): c for c in coordinators if c.is_alive()}
    node = wait_until(lambda: leader_row(url)[0] in names and leader_row(url)[0], timeout=15,
                      desc="a leader among the live coordinators")
    return names[node]


def workers_by_name(c: CoordinatorProcess) -> dict[str, Any]:
    return {w.worker_name: w for w in list_workers(c.address) if w.alive}


def run_count(url: str, task_id: int) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM scheduler_run WHERE task_id = :t"), {"t": task_id}
            ).scalar_one())
    finally:
        engine.dispose()


# -- 1. any number of coordinators (SQLite stays single: test_recovery.py) ------------


def test_coordinators_share_one_database_and_list_every_worker(start_many, start_worker,
                                                               stubs_of):
    a, b, c = start_many(3)
    start_worker("wa", coordinator=a, heartbeat=HEARTBEAT)
    start_worker("wb", coordinator=b, heartbeat=HEARTBEAT)
    for each in (a, b, c):  # any coordinator lists every worker, with the one it is on
        listed = wait_until(lambda each=each: (w := workers_by_name(each)).keys() >= {"wa", "wb"}
                            and w, timeout=10, desc="both workers listed everywhere")
        assert listed["wa"].coordinator == node_of(a)
        assert listed["wb"].coordinator == node_of(b)
    ids = [queue(stubs_of(x), "add", args="[1, 2]").id for x in (a, b, c)]
    for x, task_id in zip((c, a, b), ids, strict=True):
        wait_until(lambda x=x, task_id=task_id: status_of(stubs_of(x), task_id) == "COMPLETED",
                   timeout=15, desc=f"task {task_id} completed")


# -- 4. sessions move between coordinators without re-registering -------------------------------


def test_a_session_moves_to_another_coordinator_with_its_leases(start_many, stubs_of, pg_url):
    a, b = start_many(2)
    sa_, sb = stubs_of(a), stubs_of(b)
    worker = FakeWorker(sa_, "mover", ["add"], heartbeat=HEARTBEAT)
    task_id = queue(sa_, "add", args="[2, 3]").id
    [lease] = worker.lease(1, wait_s=5).leases
    worker.stubs = sb  # the worker's coordinator went away: the same session calls B
    beat = worker.heartbeat(lease.ref)
    assert list(beat.stale) == [] and list(beat.stop) == []
    listed = wait_until(lambda: workers_by_name(a).get("mover"), timeout=5, desc="listed")
    wait_until(lambda: workers_by_name(a)["mover"].coordinator == node_of(b), timeout=5,
               desc="the worker shown on B")
    assert listed.alive
    reply = worker.report(lease.ref, "COMPLETED", result="5")
    assert list(reply.stale) == []
    assert status_of(sb, task_id) == status_of(sa_, task_id) == "COMPLETED"
    assert run_count(pg_url, task_id) == 1
    worker.stubs = sa_  # and back to A: the session moves again, A serves it
    assert list(worker.heartbeat().stale) == []
    wait_until(lambda: workers_by_name(b)["mover"].coordinator == node_of(a), timeout=5,
               desc="the worker shown on A again")
    assert "worker session taken over worker=mover" in b.log_text()


def test_killing_a_coordinator_moves_its_workers_and_loses_no_task(start_many, start_worker,
                                                                   stubs_of, pg_url):
    coordinators = start_many(3)
    addresses = [c.address for c in coordinators]
    workers = []
    for i in range(3):  # each worker starts on a different coordinator; w2 is the Go worker
        order = addresses[i:] + addresses[:i]
        go = {"program": [go_binary()]} if i == 2 else {}
        workers.append(start_worker(f"w{i}", coordinator=",".join(order), heartbeat=HEARTBEAT,
                                    ready=False, extra_args=["--concurrency", "2"], **go))
    survivor = stubs_of(coordinators[1])
    wait_until(lambda: len(workers_by_name(coordinators[1])) == 3, timeout=20,
               desc="three workers registered")
    victim = coordinators[0]
    victim_node = node_of(victim)
    ids = [queue(stubs_of(coordinators[i % 3]), "sleep_for", args="[0.3]").id
           for i in range(30)]
    wait_until(lambda: any(status_of(survivor, t) == "RUNNING" for t in ids), timeout=15,
               desc="some tasks running")
    on_victim = [n for n, w in workers_by_name(coordinators[1]).items()
                 if w.coordinator == victim_node]
    assert on_victim, "a worker started on the victim"
    victim.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()

    def moved() -> bool:
        listed = workers_by_name(coordinators[1])
        return all(listed[n].coordinator not in ("", victim_node) for n in on_victim
                   if n in listed) and all(n in listed for n in on_victim)

    wait_until(moved, timeout=20, desc="the victim's workers moved to the others")
    moved_s = time.monotonic() - killed_at
    wait_until(lambda: all(status_of(survivor, t) == "COMPLETED" for t in ids), timeout=60,
               desc="every task completed")
    assert [t for t in ids if run_count(pg_url, t) != 1] == []  # no worker died: one run each
    assert all(w.is_alive() for w in workers)
    for w in workers:  # the sessions moved: nobody registered again
        assert w.log_text().count("worker registered") == 1, w.log_tail()
    print(f"workers moved {moved_s:.2f} s after the kill (heartbeat {HEARTBEAT} s)")
    assert moved_s <= 3 * HEARTBEAT  # the bound: within 3 heartbeats


def test_behind_a_load_balancer_a_killed_coordinator_loses_nothing(start_many, start_worker,
                                                                  stubs_of, pg_url):
    """Workers and clients know one address, a TCP load balancer's; it spreads connections
    over two coordinators. One dies: connections are made again through the balancer to the
    other, which takes the sessions over."""
    coordinators = start_many(2)
    balancer = FreezableProxy.balancing([c.address for c in coordinators])
    try:
        front = f"127.0.0.1:{balancer.port}"
        workers = [start_worker(f"lb{i}", coordinator=front, heartbeat=HEARTBEAT, ready=False,
                                extra_args=["--concurrency", "2"]) for i in range(2)]
        stubs = connect(front)
        try:
            wait_until(lambda: len(workers_by_name(coordinators[0])) == 2, timeout=20,
                       desc="both workers registered")
            ids = [queue(stubs, "sleep_for", args="[0.2]").id for _ in range(20)]
            survivor = coordinators[1]
            direct = stubs_of(survivor)
            wait_until(lambda: any(status_of(direct, t) == "COMPLETED" for t in ids),
                       timeout=20, desc="work under way")
            coordinators[0].signal_group(signal.SIGKILL)
            wait_until(lambda: all(w.coordinator == node_of(survivor)
                                   for w in workers_by_name(survivor).values())
                       and len(workers_by_name(survivor)) == 2, timeout=20,
                       desc="every worker on the survivor")
            wait_until(lambda: all(status_of(stubs, t) == "COMPLETED" for t in ids),
                       timeout=60, desc="every task completed", ignore=(grpc.RpcError,))
            assert [t for t in ids if run_count(pg_url, t) != 1] == []
            for w in workers:
                assert w.log_text().count("worker registered") == 1, w.log_tail()
        finally:
            stubs.close()
            stop_all(workers)  # while the balancer still carries their last words
    finally:
        balancer.close()


# -- 2. one leader runs maintenance ---------------------------------------------------------------


def test_killing_the_leader_hands_maintenance_over(start_many, start_worker, stubs_of, pg_url):
    coordinators = start_many(2)
    leader = leader_of(pg_url, coordinators)
    other = next(c for c in coordinators if c is not leader)
    _, epoch = leader_row(pg_url)
    worker = start_worker("doomed", coordinator=other, heartbeat=HEARTBEAT)
    rescuer = start_worker("rescuer", coordinator=other, heartbeat=HEARTBEAT,
                           groups=["spare"])
    stubs = stubs_of(other)
    task_id = queue(stubs, "sleep_for", args="[30]", retry_failed=0).id
    wait_until(lambda: status_of(stubs, task_id) == "RUNNING", timeout=15, desc="running")
    leader.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: leader_row(pg_url) == (node_of(other), epoch + 1), timeout=15,
               desc="the other coordinator leads, with a new epoch")
    took_over_s = time.monotonic() - killed_at
    # Maintenance now runs on the new leader: a worker that dies is declared dead by it.
    worker.kill()
    wait_until(lambda: "doomed" not in workers_by_name(other), timeout=15,
               desc="the dead worker declared dead by the new leader")
    wait_until(lambda: status_of(stubs, task_id) == "QUEUED", timeout=10,
               desc="its task given back")
    assert rescuer.is_alive()
    print(f"new leader {took_over_s:.2f} s after the kill")
    # the lease runs out, then the next beat takes it (and this test's poll sees it)
    assert took_over_s < LEADER_TTL_S + 2 * NODE_BEAT_S + 1.0


def test_a_worker_dying_on_a_coordinator_that_does_not_lead_is_found_by_the_leader(
        start_many, start_worker, stubs_of, pg_url):
    coordinators = start_many(2)
    leader = leader_of(pg_url, coordinators)
    follower = next(c for c in coordinators if c is not leader)
    worker = start_worker("quiet", coordinator=follower, heartbeat=HEARTBEAT)
    stubs = stubs_of(leader)
    task_id = queue(stubs, "sleep_for", args="[30]").id
    wait_until(lambda: status_of(stubs, task_id) == "RUNNING", timeout=15, desc="running")
    worker.kill()
    # Only the leader judges; it sees the row no longer refreshed by the follower's beats.
    wait_until(lambda: "quiet" not in workers_by_name(follower), timeout=15,
               desc="the dead worker declared dead")
    wait_until(lambda: status_of(stubs, task_id) == "QUEUED", timeout=10,
               desc="its task given back")
    assert "worker lost worker=quiet" in leader.log_text()
    assert "worker lost worker=quiet" not in follower.log_text()


# -- 3. notifications between coordinators --------------------------------------------------------


def test_stop_and_kill_sent_to_one_coordinator_reach_a_worker_on_another(
        start_many, start_worker, stubs_of):
    a, b = start_many(2)
    worker = start_worker("far", coordinator=b, heartbeat=HEARTBEAT)
    sa_ = stubs_of(a)
    task_id = queue(sa_, "sleep_for", args="[60]").id
    wait_until(lambda: status_of(sa_, task_id) == "RUNNING", timeout=15, desc="running on B")
    reply = sa_.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=task_id)))
    assert reply.stopped
    wait_until(lambda: status_of(sa_, task_id) == "STOPPED", timeout=10,
               desc="the stop sent to A reached the worker on B")
    sa_.admin.SetWorkerStatus(admin_pb2.SetWorkerStatusRequest(
        status=common_pb2.WORKER_STATUS_KILL, worker_name="far"))
    wait_until(lambda: not worker.is_alive(), timeout=10, desc="the worker killed through A")


def test_tail_through_one_coordinator_a_task_run_through_another(start_many, start_worker,
                                                                 stubs_of):
    a, b = start_many(2)
    start_worker("printer", coordinator=a, heartbeat=HEARTBEAT)
    sb = stubs_of(b)
    task_id = queue(stubs_of(a), "print_lines", args="[6, 0.4]").id
    seen: list[str] = []
    statuses: list[str] = []
    stream = sb.client.WatchTask(client_pb2.WatchTaskRequest(ref=client_pb2.TaskRef(id=task_id)),
                                 timeout=60)
    chunks_while_running = 0
    last = ""
    for event in stream:
        if event.HasField("output"):
            seen.append(event.output.data)
            chunks_while_running += last == "TASK_STATUS_RUNNING"
        else:
            last = common_pb2.TaskStatus.Name(event.task.status)
            statuses.append(last)
    text = "".join(seen)
    assert [f"line {i}" in text for i in range(6)] == [True] * 6, text
    assert statuses[-1] == "TASK_STATUS_COMPLETED"
    assert chunks_while_running >= 2, "output must arrive while the task runs, not at the end"


def test_wait_through_one_coordinator_a_task_run_through_another(start_many, start_worker,
                                                                 stubs_of):
    """The waiter on B is answered by A's notification, not by B's 5 s safety poll."""
    a, b = start_many(2)
    start_worker("runner", coordinator=a, heartbeat=HEARTBEAT)
    sa_, sb = stubs_of(a), stubs_of(b)
    task_id = queue(sa_, "sleep_for", args="[1.5]").id
    wait_until(lambda: status_of(sa_, task_id) == "RUNNING", timeout=15, desc="running on A")
    wait_until(lambda: b.list_workers(), timeout=15, desc="B sees the worker of A")
    reply = sb.client.WaitTask(client_pb2.WaitTaskRequest(
        ref=client_pb2.TaskRef(id=task_id), timeout=30), timeout=40)
    answered = time.time()
    assert reply.done and reply.task.status == common_pb2.TASK_STATUS_COMPLETED
    assert reply.run.run_result == "1.5"
    lag = answered - reply.task.finished_at.ToDatetime().timestamp()
    assert lag < 2.5, f"answered {lag:.2f} s after the task ended: by the poll, not a note"


def woken_by_notification(parked_on: CoordinatorProcess, stubs: Stubs, queued_on: Stubs,
                          name: str) -> float:
    """Park a Lease on one coordinator, queue a task through another; the seconds it took.

    The task is queued once the parked coordinator logs the Lease parked (it runs at DEBUG),
    so the test measures the wake-up, not a claim at the call. The parked Lease's safety
    poll would answer after 2 s: an answer well before that can only come from the other
    coordinator's notification.
    """
    far = FakeWorker(stubs, name, ["add"], heartbeat=5.0)
    parked = f"lease parked worker={name}"

    def queue_once_parked() -> None:
        wait_until(lambda: parked in parked_on.log_text(), timeout=15, desc="the Lease parked")
        queue(queued_on, "add", args="[1, 1]")

    threading.Thread(target=queue_once_parked, daemon=True).start()
    started = time.monotonic()
    reply = far.lease(1, wait_s=20)
    waited = time.monotonic() - started
    assert len(reply.leases) == 1
    return waited


def test_work_queued_through_one_coordinator_wakes_a_worker_parked_on_another(
        start_many, stubs_of):
    a, b = start_many(2, extra_args=["--log-level", "DEBUG"])
    waited = woken_by_notification(b, stubs_of(b), stubs_of(a), "parked")
    assert waited < 1.9, f"woken after {waited:.2f} s: by the safety poll, not a notification"


def test_a_listener_that_lost_its_connection_reconnects_and_hears_again(start_many, stubs_of,
                                                                        pg_url):
    a, b = start_many(2, extra_args=["--log-level", "DEBUG"])
    node_b = node_of(b)
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:  # end the LISTEN connections, as a network blip would
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid != pg_backend_pid() AND (query LIKE 'LISTEN%' "
                "OR query LIKE 'SELECT pg_notify(%')")).scalars().all()
    finally:
        engine.dispose()
    assert len(killed) == 2, f"two listening connections, found {len(killed)}"
    wait_until(lambda: all(c.log_text().count("listening for other coordinators") >= 2
                           for c in (a, b)), timeout=15, desc="both listeners connected again")
    for parked_on, queued_on in ((b, a), (a, b)):
        waited = woken_by_notification(parked_on, stubs_of(parked_on), stubs_of(queued_on),
                                       f"parked-{parked_on.name}")
        assert waited < 1.9, f"woken after {waited:.2f} s on {parked_on.name} ({node_b})"


# -- 5. a coordinator cut off from the database stops serving -------------------------------------


def test_a_coordinator_cut_off_from_the_database_stops_serving(processes, pg_cluster,
                                                               pg_database, start_worker,
                                                               stubs_of, pg_url):
    proxy = FreezableProxy.to_unix_socket(
        str(pg_cluster.socket_dir / f".s.PGSQL.{pg_cluster.port}"))
    try:
        cut_url = (f"postgresql+psycopg://{pg_cluster.superuser}@127.0.0.1:{proxy.port}/"
                   f"{pg_database}")
        a = processes.start_coordinator(cut_url, heartbeat=HEARTBEAT)
        b = processes.start_coordinator(pg_url, heartbeat=HEARTBEAT)
        worker = start_worker("wanderer", coordinator=f"{a.address},{b.address}",
                              heartbeat=HEARTBEAT, ready=False)
        wait_until(lambda: workers_by_name(b).get("wanderer") is not None and
                   workers_by_name(b)["wanderer"].coordinator == node_of(a), timeout=20,
                   desc="the worker on A")
        proxy.freeze()
        sa_ = stubs_of(a)

        def refused() -> bool:
            try:
                sa_.admin.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=2)
            except grpc.RpcError as error:
                return error.code() == grpc.StatusCode.UNAVAILABLE
            return False

        wait_until(refused, timeout=15, desc="A refusing calls once cut off")
        # While A is cut off the worker's row stops being refreshed, and ListWorkers leaves
        # a row silent past dead_after out until the worker is heard through B.
        wait_until(lambda: getattr(workers_by_name(b).get("wanderer"), "coordinator",
                                   None) == node_of(b),
                   timeout=20, desc="the worker moved to B")
        wait_until(lambda: leader_row(pg_url)[0] == node_of(b), timeout=15,
                   desc="B leading: A cannot renew its lease while cut off")
        assert "registered" not in worker.log_text().split("worker registered", 1)[1], (
            "the worker kept its session")
        sb = stubs_of(b)
        task_id = queue(sb, "add", args="[20, 22]").id
        wait_until(lambda: status_of(sb, task_id) == "COMPLETED", timeout=20,
                   desc="work goes on through B")
        assert worker.is_alive()
        proxy.thaw()
        wait_until(lambda: not refused(), timeout=20, desc="A serving again once reconnected")
    finally:
        proxy.close()
