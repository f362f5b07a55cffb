"""Coordinator addresses and failover, without a server.

The address rules (taskgrid.client._addresses, shared by the worker): parsing, DNS expansion with
an injected resolver, IPv6, bad input, the plain-text token rule for lists. Then `Failover`
(one step per failure however many threads see it, each address once per call, names resolved
again after a full round) and what the client and the worker build on it: the queue resend
rule, the watch resume, a worker that keeps its session when it moves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from taskgrid.client import (
    JobGraph,
    NotFoundError,
    OutputChunk,
    Scheduler,
    TaskRecord,
    UnavailableError,
    _convert,
)
from taskgrid.client._addresses import (
    Address,
    AddressBook,
    expand_addresses,
    is_loopback_target,
    split_addresses,
)
from taskgrid.client._failover import Failover
from taskgrid.v1 import client_pb2, common_pb2, worker_pb2
from taskgrid.worker import agent as agent_module
from taskgrid.worker.agent import Agent, AgentConfig
from taskgrid.worker.channel import load_security
from tests.unit.test_worker_agent import FakePool, RpcFailure
from tests.unit.test_worker_agent import FakeStub as FakeWorkerStub

REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:1: " \
          "Failed to connect to remote host: Connection refused"


def resolver(table: dict[str, list[str]], calls: list[str] | None = None
             ) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]
    return resolve


# -- parsing ----------------------------------------------------------------------------------


def test_one_address_a_list_and_spaces():
    assert split_addresses("127.0.0.1:50051") == ("127.0.0.1:50051",)
    assert split_addresses(" a:1 ,b.example:2,  10.0.0.1:3 ") == ("a:1", "b.example:2",
                                                                  "10.0.0.1:3")


def test_ipv6_literals_go_in_brackets():
    assert split_addresses("[::1]:50051,[fd00::2]:7") == ("[::1]:50051", "[fd00::2]:7")
    assert expand_addresses(["[::1]:50051"], resolver({})) == (Address("[::1]:50051"),)
    for bad in ("::1:50051", "[::1]", "[::1]50051", "[::1:50051"):
        with pytest.raises(ValueError, match="bad coordinator address"):
            split_addresses(bad)


def test_grpc_targets_are_kept_as_they_are():
    entries = split_addresses("dns:///coord.example:50051,unix:/tmp/c.sock,127.0.0.1:1")
    assert entries == ("dns:///coord.example:50051", "unix:/tmp/c.sock", "127.0.0.1:1")
    calls: list[str] = []
    assert expand_addresses(entries, resolver({}, calls)) == (
        Address("dns:///coord.example:50051"), Address("unix:/tmp/c.sock"),
        Address("127.0.0.1:1"))
    assert calls == []  # gRPC resolves its own targets; IP literals need no lookup


@pytest.mark.parametrize("text", ["", " ", "a:1,", ",a:1", "a:1,,b:2", "a:1, ,b:2"])
def test_an_empty_entry_is_refused(text):
    with pytest.raises(ValueError, match="empty address"):
        split_addresses(text)


@pytest.mark.parametrize("text", ["localhost", "a:1,b", ":50051", "host:", "host:0",
                                  "host:65536", "host:port", "host:-1", "host:1:2"])
def test_a_missing_or_bad_port_is_refused(text):
    with pytest.raises(ValueError, match="bad coordinator address"):
        split_addresses(text)


# -- DNS expansion ----------------------------------------------------------------------------


def test_a_name_becomes_one_address_per_record_keeping_the_name_for_tls():
    resolve = resolver({"coord.example": ["10.0.0.1", "10.0.0.2", "fd00::3"]})
    assert expand_addresses(["coord.example:50051"], resolve) == (
        Address("10.0.0.1:50051", "coord.example:50051"),
        Address("10.0.0.2:50051", "coord.example:50051"),
        Address("[fd00::3]:50051", "coord.example:50051"),
    )


def test_expansion_drops_duplicates_and_keeps_the_order():
    resolve = resolver({"a.example": ["10.0.0.2", "10.0.0.1"], "b.example": ["10.0.0.1"]})
    got = expand_addresses(split_addresses("10.0.0.3:1,a.example:1,b.example:1,10.0.0.3:1"),
                           resolve)
    assert [a.target for a in got] == ["10.0.0.3:1", "10.0.0.2:1", "10.0.0.1:1"]
    assert got[1].authority == "a.example:1"  # the first name that gave a record keeps it


def test_a_name_that_does_not_resolve_is_dialed_as_it_is(caplog):
    with caplog.at_level(logging.WARNING):
        got = expand_addresses(["gone.example:5", "empty.example:6"],
                               resolver({"empty.example": []}))
    assert got == (Address("gone.example:5"), Address("empty.example:6"))
    assert "cannot resolve coordinator name gone.example:5" in caplog.text


def test_the_book_resolves_again_only_when_asked_and_sees_real_changes_only():
    table = {"coord.example": ["10.0.0.1", "10.0.0.2"]}
    calls: list[str] = []
    book = AddressBook("coord.example:1", resolver(table, calls))
    assert calls == []  # lazily, on first use
    assert [a.target for a in book.addresses] == ["10.0.0.1:1", "10.0.0.2:1"]
    table["coord.example"] = ["10.0.0.2", "10.0.0.1"]  # a DNS server rotating its records
    assert not book.refresh()
    assert [a.target for a in book.addresses] == ["10.0.0.1:1", "10.0.0.2:1"]
    table["coord.example"] = ["10.0.0.9"]
    assert book.refresh() and book.addresses == (Address("10.0.0.9:1", "coord.example:1"),)
    literal = AddressBook("10.0.0.1:1,[::1]:2", resolver({}, calls))
    assert not literal.refresh() and calls == ["coord.example"] * 3


def test_a_malformed_list_fails_when_the_book_is_made():
    with pytest.raises(ValueError, match="empty address"):
        AddressBook("a:1,,b:2")


# -- the plain-text token rule ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["127.0.0.1:1,127.0.0.2:2", "localhost:1, [::1]:2",
                                  "ipv4:127.0.0.1:1,127.0.0.2:2", "unix:/tmp/a,127.0.0.1:1"])
def test_a_list_is_loopback_when_every_address_is(text):
    assert is_loopback_target(text)
    Scheduler(text, token="secret").close()
    assert load_security(text, token="secret", environ={}).token == "secret"


@pytest.mark.parametrize("text", ["127.0.0.1:1,10.0.0.1:2", "[::1]:1,coord.example:2",
                                  "localhost:1,127.0.0.1.nip.io:2", "127.0.0.1:1,0.0.0.0:2",
                                  "127.0.0.1:1,dns:///coord.example:2"])
def test_one_address_beyond_this_machine_refuses_a_plain_text_token(text):
    assert not is_loopback_target(text)  # a name other than localhost: whatever it resolves to
    with pytest.raises(ValueError, match="refusing to send a token in plain text") as info:
        Scheduler(text, token="secret")
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="refusing to send the token in plain text"):
        load_security(text, token="secret", environ={})
    assert load_security(text, token="secret", insecure=True, environ={}).token


def test_insecure_or_no_token_lets_a_list_beyond_this_machine_through():
    Scheduler("127.0.0.1:1,10.0.0.1:2", token="secret", insecure=True).close()
    Scheduler("127.0.0.1:1,10.0.0.1:2", token="").close()  # no token, nothing to leak


def test_the_client_and_the_worker_refuse_a_malformed_list():
    with pytest.raises(ValueError, match="empty address"):
        Scheduler("127.0.0.1:1,")
    with pytest.raises(ValueError, match="empty address"):
        load_security("127.0.0.1:1,", environ={})


# -- Failover ---------------------------------------------------------------------------------


class FakeChannel:
    def __init__(self, address: Address) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Conn:
    """What a fake `connect` makes: the address and its channel."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.channel = FakeChannel(address)


def failover(text: str, resolve: Callable[[str, int], list[str]] | None = None
             ) -> tuple[Failover[Conn], list[Conn]]:
    opened: list[Conn] = []

    def connect(address: Address) -> tuple[FakeChannel, Conn]:
        conn = Conn(address)
        opened.append(conn)
        return conn.channel, conn

    book = AddressBook(text, resolve or resolver({}))
    return Failover(book, connect), opened


def unavailable(details: str = "Socket closed") -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNAVAILABLE, details)


def test_rotate_moves_one_step_even_when_two_callers_report_the_same_failure(caplog):
    link, opened = failover("10.0.0.1:1,10.0.0.2:2,10.0.0.3:3")
    first = link.current()
    with caplog.at_level(logging.INFO):
        assert link.rotate(first, "UNAVAILABLE")
        assert not link.rotate(first, "UNAVAILABLE")  # the second thread: moved already
    assert link.current().address.target == "10.0.0.2:2"
    assert first.channel.closed and not link.current().channel.closed
    assert "coordinator 10.0.0.1:1 away (UNAVAILABLE): moving to 10.0.0.2:2" in caplog.text
    assert len(opened) == 2


def test_rotate_from_many_threads_at_once_moves_once():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2,10.0.0.3:3")
    failed = link.current()
    start = threading.Barrier(8)
    moved: list[bool] = []

    def fail() -> None:
        start.wait()
        moved.append(link.rotate(failed, "UNAVAILABLE"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert moved.count(True) == 1 and link.address.target == "10.0.0.2:2"


def test_a_single_address_keeps_its_channel():
    link, opened = failover("10.0.0.1:1")
    conn = link.current()
    assert not link.rotate(conn, "UNAVAILABLE")
    assert link.current() is conn and not conn.channel.closed and len(opened) == 1


def test_call_tries_each_address_once_then_raises_the_last_error():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2,10.0.0.3:3")
    tried: list[str] = []

    def send(conn: Conn) -> str:
        tried.append(conn.address.target)
        raise unavailable(f"down {conn.address.target}")

    with pytest.raises(grpc.RpcError, match="down 10.0.0.3:3"):
        link.call(send)
    assert tried == ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"]
    tried.clear()
    with pytest.raises(grpc.RpcError):
        link.call(send)  # the next call starts where the last one ended: a full round again
    assert tried == ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"]


def test_call_goes_on_to_the_next_address_and_stays_there():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2")

    def send(conn: Conn) -> str:
        if conn.address.target == "10.0.0.1:1":
            raise unavailable(REFUSED)
        return conn.address.target

    assert link.call(send) == "10.0.0.2:2"
    assert link.call(send) == "10.0.0.2:2"
    assert link.address.target == "10.0.0.2:2"


def test_other_errors_neither_move_nor_resend():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2")
    calls: list[str] = []

    def send(conn: Conn) -> str:
        calls.append(conn.address.target)
        raise RpcFailure(grpc.StatusCode.NOT_FOUND, "no such session")

    with pytest.raises(grpc.RpcError, match="NOT_FOUND"):
        link.call(send)
    assert calls == ["10.0.0.1:1"] and link.address.target == "10.0.0.1:1"


def test_a_refused_resend_moves_on_but_raises():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2")
    calls: list[str] = []

    def send(conn: Conn) -> str:
        calls.append(conn.address.target)
        raise unavailable()

    with pytest.raises(grpc.RpcError):
        link.call(send, resend=lambda error: False)
    assert calls == ["10.0.0.1:1"] and link.address.target == "10.0.0.2:2"


def test_a_call_cut_off_by_another_threads_move_is_sent_again_without_counting():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2,10.0.0.3:3")
    calls: list[str] = []

    def send(conn: Conn) -> str:
        calls.append(conn.address.target)
        if len(calls) < 3:
            link.rotate(conn, "UNAVAILABLE")  # meanwhile another thread moved on
        if len(calls) == 1:  # and closed the channel under this call...
            raise RpcFailure(grpc.StatusCode.CANCELLED, "Channel closed!")
        if len(calls) == 2:  # ...or before it started
            raise ValueError("Cannot invoke RPC on closed channel!")
        return conn.address.target

    assert link.call(send) == "10.0.0.3:3"
    assert calls == ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"]
    with pytest.raises(grpc.RpcError, match="CANCELLED"):  # closed by its owner: no resend
        link.close()
        link.call(lambda conn: (_ for _ in ()).throw(RpcFailure(grpc.StatusCode.CANCELLED)))


def test_a_full_round_of_failures_resolves_the_names_again():
    table = {"coord.example": ["10.0.0.1", "10.0.0.2"]}
    calls: list[str] = []
    link, _ = failover("coord.example:1", resolver(table, calls))

    def send(conn: Conn) -> str:
        if conn.address.target != "10.0.0.7:1":
            raise unavailable()
        return conn.address.authority or ""

    link.current()
    table["coord.example"] = ["10.0.0.7"]  # the coordinators moved while we were away
    with pytest.raises(grpc.RpcError):
        link.call(send)  # the old records both fail; the round's end looks the name up again
    assert calls == ["coord.example", "coord.example"]
    assert link.call(send) == "coord.example:1"


def test_close_ends_the_channel_and_nothing_moves_after():
    link, _ = failover("10.0.0.1:1,10.0.0.2:2")
    conn = link.current()
    link.close()
    assert conn.channel.closed and not link.rotate(conn, "UNAVAILABLE")
    assert not link.is_moved_from(conn)


# -- the Scheduler on two fake coordinators ---------------------------------------------------


class Coordinator:
    """A fake coordinator: per-method answers (a value, an error, or a function of the request)."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.requests: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(request: Any, timeout: float | None = None) -> Any:
            self.requests.append((method, request))
            answer = self.answers[method]
            if callable(answer) and not isinstance(answer, grpc.RpcError):
                answer = answer(request)
            if isinstance(answer, grpc.RpcError):
                raise answer
            return answer

        return call

    def methods(self) -> list[str]:
        return [name for name, _ in self.requests]


class FakeStubs:
    def __init__(self, coordinator: Coordinator) -> None:
        self.tasks = coordinator
        self.admin = coordinator


@pytest.fixture
def two(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Scheduler, Coordinator, Coordinator]]:
    """A Scheduler on "A,B" whose channels reach two fake coordinators."""
    a, b = Coordinator(), Coordinator()
    by_target = {"127.0.0.1:1": a, "127.0.0.1:2": b}

    def connect(self: Scheduler, address: Address) -> tuple[FakeChannel, FakeStubs]:
        return FakeChannel(address), FakeStubs(by_target[address.target])

    monkeypatch.setattr(Scheduler, "_connect", connect)
    scheduler = Scheduler("127.0.0.1:1,127.0.0.1:2")
    yield scheduler, a, b
    scheduler.close()


def task_message(task_id: int, uuid: str, status: int = common_pb2.TASK_STATUS_QUEUED) -> Any:
    return client_pb2.GetTaskResponse(task=common_pb2.Task(id=task_id, uuid=uuid, status=status))


def test_reads_move_to_the_next_coordinator(two):
    s, a, b = two
    a.answers["GetTask"] = unavailable(REFUSED)
    b.answers["GetTask"] = task_message(4, "u4")
    assert s.task_status(4).uuid == "u4"
    assert s.task_status(4).id == 4 and a.methods() == ["GetTask"]  # stays on B
    b.answers["GetTask"] = unavailable()
    a.answers["GetTask"] = unavailable()
    with pytest.raises(UnavailableError):
        s.task_status(4)


def test_queue_task_gets_a_uuid_and_is_resent_when_it_never_left(two):
    s, a, b = two
    a.answers["QueueTask"] = unavailable(REFUSED)
    b.answers["QueueTask"] = lambda r: client_pb2.QueueTaskResponse(id=1, uuid=r.task.uuid)
    result = s.queue_task("add", pargs=[1, 2])
    sent = [r.task.uuid for _, r in a.requests + b.requests]
    assert result.id == 1 and result.uuid == sent[0] == sent[1] and len(sent[0]) == 36


def test_a_queue_task_applied_before_its_coordinator_died_is_not_queued_twice(two):
    s, a, b = two
    landed: dict[str, int] = {}

    def apply_then_die(request: Any) -> Any:
        landed[request.task.uuid] = 9  # committed on the shared database...
        raise unavailable("Socket closed")  # ...and the answer never came back

    a.answers["QueueTask"] = apply_then_die
    b.answers["QueueTask"] = lambda r: client_pb2.QueueTaskResponse(
        errors={"uuid": "already in use"} if r.task.uuid in landed else {})
    b.answers["GetTask"] = lambda r: task_message(landed[r.ref.uuid], r.ref.uuid)
    result = s.queue_task("add", pargs=[1, 2])
    assert result.errors == {} and result.id == 9 and result.uuid in landed


def test_a_queue_task_with_the_callers_uuid_is_resent_only_if_it_never_left(two):
    s, a, b = two
    a.answers["QueueTask"] = unavailable("Socket closed")  # may have been applied
    b.answers["QueueTask"] = lambda r: client_pb2.QueueTaskResponse(id=3, uuid=r.task.uuid)
    with pytest.raises(UnavailableError):
        s.queue_task("add", uuid="mine")
    assert b.requests == []  # not sent again: a duplicate uuid could not be told from ours...
    assert s.queue_task("add", uuid="mine").id == 3  # ...but the client moved to B all the same
    b.answers["QueueTask"] = unavailable(REFUSED)
    a.answers["QueueTask"] = lambda r: client_pb2.QueueTaskResponse(id=5, uuid=r.task.uuid)
    assert s.queue_task("add", uuid="mine2").id == 5  # never left: safe to send again


def test_a_callers_uuid_really_in_use_is_reported_not_taken_over(two):
    s, a, b = two
    a.answers["QueueTask"] = unavailable(REFUSED)
    b.answers["QueueTask"] = client_pb2.QueueTaskResponse(errors={"uuid": "already in use"})
    result = s.queue_task("add", uuid="taken")
    assert result.id is None and result.errors == {"uuid": "already in use"}
    assert "GetTask" not in b.methods()


def test_queue_tasks_and_a_job_applied_before_a_failover_answer_their_ids(two):
    s, a, b = two
    landed: dict[str, int] = {}

    def apply_then_die(request: Any) -> Any:
        for i, task in enumerate(request.tasks):
            landed[task.uuid] = 20 + len(landed) + i
        raise unavailable("Connection reset by peer")

    a.answers["QueueTasks"] = a.answers["QueueJob"] = apply_then_die
    b.answers["QueueTasks"] = lambda r: client_pb2.QueueTasksResponse(results=[
        client_pb2.QueueTaskResponse(errors={"uuid": "already in use"}) for _ in r.tasks])
    b.answers["QueueJob"] = client_pb2.QueueJobResponse(errors={"uuid": "already in use: x"})
    b.answers["GetTask"] = lambda r: task_message(landed[r.ref.uuid], r.ref.uuid)
    results = s.queue_tasks([{"function": "add"}, {"function": "add", "uuid": "caller-uuid"}])
    assert [r.errors for r in results] == [{}, {}]
    assert [r.uuid for r in results][1] == "caller-uuid"
    assert [r.id for r in results] == [landed[r.uuid or ""] for r in results]

    s._link.rotate(s._link.current(), "test")  # back to A for the job
    job = JobGraph(s, "j")
    first, second, third = job.queue_task("a"), job.queue_task("b"), job.queue_task("c")
    job.add_deps(second, first)
    job.add_deps(third, first)
    layers = job.validate()
    assert job.errors == {} and layers == [{first.id}, {second.id, third.id}]
    assert {first.uuid, second.uuid, third.uuid} <= set(landed)


# -- the watch resume -------------------------------------------------------------------------


class Stream:
    def __init__(self, messages: list[Any], error: grpc.RpcError | None = None) -> None:
        self.messages, self.error = messages, error

    def __iter__(self) -> Iterator[Any]:
        yield from self.messages
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        pass


def snapshot(status: int) -> Any:
    return client_pb2.TaskEvent(task=common_pb2.Task(id=7, uuid="u7", status=status))


def chunk(seq: int, data: str, clear: bool = False, run_id: int = 70) -> Any:
    record = OutputChunk(task_id=7, attempt=1, run_id=run_id, seq=seq, data=data, clear=clear)
    return client_pb2.TaskEvent(output=_convert.output_to_proto(record))


def shown(events: list[Any]) -> list[Any]:
    return [e.status.value if isinstance(e, TaskRecord) else (e.seq, e.data, e.clear)
            for e in events]


def test_a_watch_restarted_elsewhere_shows_nothing_twice(two):
    s, a, b = two
    running = common_pb2.TASK_STATUS_RUNNING
    a.answers["WatchTask"] = Stream([snapshot(running), chunk(1, "hel"), chunk(2, "lo")],
                                    unavailable())
    b.answers["WatchTask"] = Stream([
        chunk(1, "hello wor"),  # the new stream's catch-up: all the output so far
        snapshot(running),  # the same snapshot again
        chunk(5, "ld\n"),
        snapshot(common_pb2.TASK_STATUS_COMPLETED),
    ])
    assert shown(list(s.watch(7))) == [
        "RUNNING", (1, "hel", False), (2, "lo", False), (3, " wor", False), (5, "ld\n", False),
        "COMPLETED",
    ]


def test_a_watch_restarted_after_a_clear_shows_the_new_text_with_clear(two):
    s, a, b = two
    running = common_pb2.TASK_STATUS_RUNNING
    a.answers["WatchTask"] = Stream([snapshot(running), chunk(1, "10%"), chunk(2, " 20%")],
                                    unavailable())
    b.answers["WatchTask"] = Stream([chunk(1, "50%"), snapshot(common_pb2.TASK_STATUS_COMPLETED)])
    assert shown(list(s.watch(7))) == [
        "RUNNING", (1, "10%", False), (2, " 20%", False), (3, "50%", True), "COMPLETED"]


def test_a_watch_raises_when_every_coordinator_is_away(two):
    s, a, b = two
    a.answers["WatchTask"] = Stream([], unavailable(REFUSED))
    b.answers["WatchTask"] = Stream([], unavailable(REFUSED))
    with pytest.raises(UnavailableError):
        list(s.watch(7))
    asked = len(b.requests)
    a.answers["WatchTask"] = Stream([], RpcFailure(grpc.StatusCode.NOT_FOUND, "no task 7"))
    with pytest.raises(NotFoundError):  # an answer: no failover
        list(s.watch(7))
    assert len(b.requests) == asked


# -- the worker keeps its session when it moves -----------------------------------------------


@pytest.fixture
def worker_on_two(monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[Agent, FakeWorkerStub, FakeWorkerStub]:
    a, b = FakeWorkerStub(), FakeWorkerStub()
    by_target = {"127.0.0.1:1": a, "127.0.0.1:2": b}
    monkeypatch.setattr(agent_module, "Pool", FakePool)
    monkeypatch.setattr(Agent, "_connect",
                        lambda self, address: (FakeChannel(address), by_target[address.target]))
    agent = Agent(AgentConfig(tasks="", functions=["f"], concurrency=2, worker_name="w",
                              coordinator="127.0.0.1:1, 127.0.0.1:2"))
    return agent, a, b


def test_a_worker_moves_to_the_next_coordinator_with_its_session_and_leases(worker_on_two,
                                                                            caplog):
    agent, a, b = worker_on_two
    assert agent.register_once()
    a.answer("Lease", worker_pb2.LeaseResponse(
        status=common_pb2.WORKER_STATUS_ACTIVE,
        leases=[worker_pb2.Lease(ref=common_pb2.LeaseRef(task_id=1, attempt=1), run_id=1,
                                 function_name="f", timeout=60, started=True)]))
    assert agent.lease_once()
    a.answer("Heartbeat", unavailable("Socket closed"))
    with caplog.at_level(logging.INFO):
        assert agent.heartbeat_once()  # answered by B at once
    assert "coordinator 127.0.0.1:1 away (UNAVAILABLE): moving to 127.0.0.1:2" in caplog.text
    assert "secret" not in caplog.text  # the session token is never logged
    sent = b.requests["Heartbeat"][0]
    assert sent.session.worker_id == 7 and [r.task_id for r in sent.running] == [1]
    assert b.requests["Register"] == [] and agent.held_leases() == [(1, 1)]
    b.answer("Lease", RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED))  # a long poll: no move
    assert not agent.lease_once()
    assert agent._link.address.target == "127.0.0.1:2"


def test_a_worker_call_fails_to_its_caller_only_when_every_coordinator_failed(worker_on_two):
    agent, a, b = worker_on_two
    assert agent.register_once()
    a.answer("Heartbeat", RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED))
    b.answer("Heartbeat", unavailable(REFUSED))
    assert not agent.heartbeat_once()  # both failed: the heartbeat loop backs off
    assert len(a.requests["Heartbeat"]) == len(b.requests["Heartbeat"]) == 1
    assert agent._session is not None  # nothing lost: the session is kept for the next try
    assert agent.heartbeat_once() and len(a.requests["Heartbeat"]) == 2


def test_a_coordinator_that_does_not_know_the_session_makes_the_worker_register_there(
        worker_on_two):
    agent, a, b = worker_on_two
    assert agent.register_once()
    a.answer("Heartbeat", unavailable())
    b.answer("Heartbeat", RpcFailure(grpc.StatusCode.NOT_FOUND, "unknown session"))
    agent.heartbeat_once()
    assert agent._session is None
    assert agent.register_once() and len(b.requests["Register"]) == 1
