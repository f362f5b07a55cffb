"""The client, the CLI and the Python worker given several coordinator addresses.

Real coordinators, each on its own SQLite file: they share nothing, so what a test sees after
a move is the next coordinator's own tasks, and a worker that moves is answered NOT_FOUND for
its session and registers again. (Several coordinators on one PostgreSQL database, which take
the session over, are tested with the coordinator; the last test here uses them for a watch
that goes on through another coordinator.) An address where nothing listens stands for a
coordinator that is down; SIGKILL for one that dies. docs/connecting.md has the rules.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from taskgrid.client import (
    JobGraph,
    Scheduler,
    TaskgridError,
    TaskRecord,
    TaskStatus,
    TlsConfig,
    cli,
)
from tests.support import certs
from tests.support.processes import Access, list_workers
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: each coordinator of these tests gets a file of its own (`other_db`)."""
    return f"sqlite:///{tmp_path / 'a.sqlite'}"


@pytest.fixture
def other_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'b.sqlite'}"


def nothing_listening() -> str:
    """An address on this machine where no one listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def finished(client: Scheduler, task_id: int, timeout: float = 20.0):
    wait_until(lambda: str(client.task_status(task_id).status) in TERMINAL, timeout=timeout,
               desc=f"task {task_id} to finish")
    return client.task_status(task_id, output=True)


def kill(coordinator) -> None:
    coordinator.signal_group(signal.SIGKILL)
    coordinator.wait()


def listed_alive(address: str, name: str, access: Access | None = None) -> bool:
    workers = list_workers(address, timeout_s=2.0, **({"access": access} if access else {}))
    return any(w.worker_name == name and w.alive for w in workers)


def test_a_scheduler_skips_an_address_where_nothing_listens(coordinator):
    with Scheduler(f"{nothing_listening()}, {coordinator.address}") as s:
        queued = s.queue_task("add", pargs=[2, 3])
        assert queued.errors == {} and isinstance(queued.id, int)
        assert s.task_status(queued.id).status is TaskStatus.QUEUED
        assert s.task_status(queued.uuid).id == queued.id
        both = s.queue_tasks([{"function": "echo", "pargs": [1]}, {"function": "echo"}])
        job = JobGraph(s, "j")
        first = job.queue_task("echo")
        job.add_deps(job.queue_task("echo"), first)
        assert job.validate() is not None
        listed = {t.id for t in s.list_tasks()}
        assert listed == {queued.id, *(r.id for r in both), *(t.id for t in job.tasks)}
        assert s.stop_task(queued.id) and s.get_workers() == {}


def test_a_scheduler_keeps_working_after_its_coordinator_is_killed(start_coordinator,
                                                                   other_db):
    a = start_coordinator()
    b = start_coordinator(db_url=other_db)
    with Scheduler(b.address) as direct:  # a task only B has, to tell who answers
        only_b = direct.queue_task("echo", pargs=["b"], task_name="on-b")
    with Scheduler(f"{a.address},{b.address}") as s:
        on_a = s.queue_task("echo", pargs=["a"], task_name="on-a")
        assert [t.task_name for t in s.list_tasks()] == ["on-a"]
        answered_by: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def keep_reading() -> None:
            while not stop.is_set():
                try:
                    answered_by.append(",".join(t.task_name for t in s.list_tasks()))
                except TaskgridError as error:  # pragma: no cover - reported below
                    errors.append(error)

        reader = threading.Thread(target=keep_reading)
        reader.start()
        try:
            wait_until(lambda: answered_by, desc="reads from the first coordinator")
            kill(a)  # while the reader keeps calling
            wait_until(lambda: answered_by[-1] == "on-b", desc="reads answered by the second")
        finally:
            stop.set()
            reader.join()
        assert errors == [] and set(answered_by) == {"on-a", "on-b"}
        again = s.queue_task("echo", pargs=["b2"])  # queued on B, the only one left
        assert again.errors == {} and s.task_status(again.uuid).id == again.id
        assert s.task_status(only_b.id).task_name == "on-b"
        assert on_a.id is not None


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_takes_an_address_list(coordinator):
    addresses = f"{nothing_listening()},{coordinator.address}"
    code, out, err = run_cli("queue", "add", "[2, 3]", "--json", "--coordinator", addresses)
    assert code == 0, err
    task_id = json.loads(out)["id"]
    code, out, err = run_cli("status", str(task_id), "--json", "--coordinator", addresses)
    assert code == 0 and json.loads(out)["task"]["status"] == "QUEUED", err
    code, _, err = run_cli("tasks", "--coordinator", f"{coordinator.address},")
    assert code == 2 and "empty address" in err
    code, _, err = run_cli("tasks", "--coordinator", f"{nothing_listening()},"
                                                     f"{nothing_listening()}")
    assert code == 4 and "unavailable" in err


def test_a_worker_goes_on_through_the_second_coordinator_when_the_first_dies(
        start_coordinator, start_worker, other_db):
    a = start_coordinator()
    b = start_coordinator(db_url=other_db)
    worker = start_worker("mover", coordinator=f"{a.address},{b.address}", ready=False)
    wait_until(lambda: listed_alive(a.address, "mover"), timeout=20.0,
               desc="the worker registered with the first coordinator")
    with Scheduler(a.address) as on_a:
        assert finished(on_a, on_a.queue_task("add", pargs=[1, 2]).id).result == 3
    kill(a)
    with Scheduler(b.address) as on_b:
        queued = on_b.queue_task("add", pargs=[20, 22])
        assert finished(on_b, queued.id).result == 42
        assert listed_alive(b.address, "mover")
    log = worker.log_text()
    assert f"coordinator {a.address} away" in log and f"moving to {b.address}" in log
    assert "session lost" in log  # B never heard of it: registered again (separate databases)
    assert worker.is_alive()


def test_a_worker_whose_first_coordinator_is_down_registers_with_the_next(coordinator,
                                                                           start_worker):
    start_worker("late", coordinator=f"{nothing_listening()},{coordinator.address}",
                 ready=False)
    wait_until(lambda: listed_alive(coordinator.address, "late"), timeout=20.0,
               desc="the worker registered with the second address")
    with Scheduler(coordinator.address) as s:
        assert finished(s, s.queue_task("add", pargs=[2, 2]).id).result == 4


def name_only_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate naming localhost only (no IP): it validates only when
    the client checks it against the name, not the IP it dialed."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = certs._make_ca("taskgrid failover test CA")
    server, server_key = certs._make_leaf("localhost", ca, ca_key,
                                          ExtendedKeyUsageOID.SERVER_AUTH,
                                          [x509.DNSName("localhost")])
    files = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    certs._write(files[0], ca)
    certs._write(files[1], server, server_key, files[2])
    return files


def test_an_expanded_name_keeps_the_name_for_tls(start_coordinator, start_worker, tmp_path):
    ca, cert, key = name_only_certs(tmp_path / "certs")
    coord = start_coordinator(listen="localhost:0", access=Access(ca=ca),
                              extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    port = coord.address.rsplit(":", 1)[1]
    # localhost is expanded to 127.0.0.1 (and ::1 where it resolves so): TLS checks the name
    with Scheduler(f"{nothing_listening()},localhost:{port}", tls=TlsConfig(ca=ca)) as s:
        queued = s.queue_task("add", pargs=[5, 6])
        start_worker("tls-mover", coordinator=f"{nothing_listening()},localhost:{port}",
                     extra_args=["--tls-ca", str(ca)], ready=False)
        assert finished(s, queued.id).result == 11
    with Scheduler(f"127.0.0.1:{port}", tls=TlsConfig(ca=ca), timeout_s=5.0) as by_ip:
        with pytest.raises(TaskgridError):  # the certificate names no IP: refused
            by_ip.list_tasks()


# -- several coordinators on one PostgreSQL database ------------------------------------------


@pytest.fixture
def pg_url(pg_cluster, pg_database) -> str:
    return str(pg_cluster.url(pg_database))


def shown_text(events) -> tuple[str, list[str]]:
    """The output a terminal would hold after these events, and the statuses shown."""
    text, statuses = "", []
    for event in events:
        if isinstance(event, TaskRecord):
            statuses.append(str(event.status))
        else:
            text = event.data if event.clear else text + event.data
    return text, statuses


@pytest.mark.postgres
def test_a_watch_cut_off_by_a_killed_coordinator_shows_its_output_once(start_coordinator,
                                                                       start_worker, pg_url,
                                                                       caplog):
    a = start_coordinator(db_url=pg_url)
    b = start_coordinator(db_url=pg_url)
    start_worker("printer", coordinator=b.address)  # the worker stays up: only A dies
    with Scheduler(f"{a.address},{b.address}") as s:
        task_id = s.queue_task("print_lines", pargs=[12, 0.1]).id
        events = []
        caplog.set_level(logging.INFO, logger="taskgrid.client.scheduler")
        for event in s.watch(task_id):
            events.append(event)
            if a.is_alive() and "line 3" in shown_text(events)[0]:
                kill(a)  # mid-stream: the watch goes on through B
        text, statuses = shown_text(events)
        assert f"moving to {b.address}" in caplog.text  # the stream was restarted on B
        assert not a.is_alive()
        assert text == "".join(f"line {i}\n" for i in range(12)), text
        assert statuses[-1] == "COMPLETED" and statuses.count("COMPLETED") == 1
        assert [e.seq for e in events if not isinstance(e, TaskRecord)] == sorted(
            {e.seq for e in events if not isinstance(e, TaskRecord)})
        assert s.task_status(task_id, output=True).run.run_output == text
