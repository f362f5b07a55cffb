"""The Python worker's side of the protocol against a scripted coordinator, with no process.

`Agent` runs on a fake pool (runs end when a test says so, in the pool's two steps: the run
leaves the pool, then the finish callback queues its report) and a fake stub whose answers
each test scripts per method: a response message, or an error with a status code and
optional trailing metadata. The reporter's thread is not started: tests call
`flush_once()` themselves, so each delivery attempt is one explicit step.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from taskgrid.v1 import common_pb2, worker_pb2
from taskgrid.worker import agent as agent_module
from taskgrid.worker.agent import EXIT_NAME_TAKEN, Agent, AgentConfig
from taskgrid.worker.capture import Chunk, OutputBuffer
from taskgrid.worker.records import ActiveRun, LeaseKey, Outcome, RunResult, TaskRun
from taskgrid.worker.reporter import DEFAULT_SERVER_ERROR_TRIES

Answer = Any  # a response message, or an RpcFailure to raise
WORKER_NAME = "unit-worker"


class RpcFailure(grpc.RpcError):
    """What a failed call raises: a code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str = "",
                 trailer: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._trailer = code, details, trailer

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailer


def stale_trailer(*keys: LeaseKey) -> tuple[tuple[str, str], ...]:
    return (("taskgrid-stale-leases", ",".join(f"{t}:{a}" for t, a in keys)),)


class FakeStub:
    """WorkerService calls answered from per-method scripts; every request is kept."""

    DEFAULTS: dict[str, Callable[[], Any]] = {
        "Register": lambda: worker_pb2.RegisterResponse(
            session=worker_pb2.WorkerSession(worker_id=7, session_token="secret"),
            heartbeat=3.0, status=common_pb2.WORKER_STATUS_ACTIVE, dead_after=9.0),
        "Lease": lambda: worker_pb2.LeaseResponse(status=common_pb2.WORKER_STATUS_ACTIVE),
        "Heartbeat": lambda: worker_pb2.HeartbeatResponse(
            status=common_pb2.WORKER_STATUS_ACTIVE),
        "SendOutput": worker_pb2.SendOutputResponse,
        "Report": worker_pb2.ReportResponse,
        "Release": worker_pb2.ReleaseResponse,
        "StartRuns": worker_pb2.StartRunsResponse,
    }

    def __init__(self) -> None:
        self.scripts: dict[str, deque[Answer]] = {name: deque() for name in self.DEFAULTS}
        self.requests: dict[str, list[Any]] = {name: [] for name in self.DEFAULTS}
        self.lock = threading.Lock()

    def answer(self, method: str, *answers: Answer) -> None:
        """Queue answers for the next calls of `method` (then the default answer)."""
        with self.lock:
            self.scripts[method].extend(answers)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method not in self.DEFAULTS:
            raise AttributeError(method)

        def call(request: Any, timeout: float | None = None) -> Any:
            with self.lock:
                self.requests[method].append(request)
                answer = (self.scripts[method].popleft() if self.scripts[method]
                          else self.DEFAULTS[method]())
            if isinstance(answer, grpc.RpcError):
                raise answer
            return answer

        return call


class FakePool:
    """The runner.Pool interface; a run ends only when the test calls `finish`."""

    def __init__(self, tasks_spec: str, size: int, on_finish: Callable[[RunResult], None],
                 **_: Any) -> None:
        self.size = size
        self.on_finish = on_finish
        self.runs: dict[LeaseKey, ActiveRun] = {}
        self.stopped: list[tuple[LeaseKey, Outcome]] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, task: TaskRun) -> None:
        with self.lock:
            self.runs[task.key] = ActiveRun(task, OutputBuffer(), 0.0)

    def stop(self, key: LeaseKey, outcome: Outcome = Outcome.STOPPED) -> bool:
        with self.lock:
            if key not in self.runs or any(k == key for k, _ in self.stopped):
                return False
            self.stopped.append((key, outcome))
        return True

    def stop_all(self, outcome: Outcome = Outcome.STOPPED) -> list[LeaseKey]:
        keys = self.active_keys()
        for key in keys:
            self.stop(key, outcome)
        return keys

    def free_slots(self) -> int:
        with self.lock:
            return max(0, self.size - len(self.runs))

    def active_keys(self) -> list[LeaseKey]:
        with self.lock:
            return list(self.runs)

    def active_runs(self) -> list[ActiveRun]:
        with self.lock:
            return list(self.runs.values())

    def child_pids(self) -> list[int]:
        return []

    def leave(self, key: LeaseKey, outcome: Outcome = Outcome.COMPLETED) -> RunResult:
        """The first half of a run's end, as the pool's I/O thread does it: the run leaves
        the pool; the finish callback (`on_finish`) has not been called yet."""
        with self.lock:
            run = self.runs.pop(key)
        return RunResult(run.task, outcome, "1" if outcome is Outcome.COMPLETED else None,
                         "", [])

    def finish(self, key: LeaseKey, outcome: Outcome = Outcome.COMPLETED) -> None:
        self.on_finish(self.leave(key, outcome))


@pytest.fixture
def stub() -> FakeStub:
    return FakeStub()


@pytest.fixture
def make_agent(monkeypatch: pytest.MonkeyPatch, stub: FakeStub) -> Iterator[Callable[..., Agent]]:
    monkeypatch.setattr(agent_module, "Pool", FakePool)
    monkeypatch.setattr(agent_module.worker_pb2_grpc, "WorkerServiceStub", lambda channel: stub)

    def make(**config: Any) -> Agent:
        options: dict[str, Any] = {"tasks": "", "functions": ["f"], "concurrency": 4,
                                   "worker_name": WORKER_NAME}
        agent = Agent(AgentConfig(**{**options, **config}))
        agent._stub = stub  # what run() would make from the channel
        return agent

    yield make


@pytest.fixture
def agent(make_agent: Callable[..., Agent]) -> Agent:
    """A registered agent (threads not started)."""
    worker = make_agent()
    assert worker.register_once()
    return worker


def pool_of(worker: Agent) -> FakePool:
    pool = worker._pool
    assert isinstance(pool, FakePool)
    return pool


def lease(stub: FakeStub, worker: Agent, *keys: LeaseKey) -> None:
    """One Lease call answered with these leases (already started)."""
    stub.answer("Lease", worker_pb2.LeaseResponse(
        status=common_pb2.WORKER_STATUS_ACTIVE,
        leases=[worker_pb2.Lease(ref=common_pb2.LeaseRef(task_id=t, attempt=a), run_id=t,
                                 function_name="f", timeout=60, started=True)
                for t, a in keys]))
    assert worker.lease_once()


def refs(*keys: LeaseKey) -> list[common_pb2.LeaseRef]:
    return [common_pb2.LeaseRef(task_id=t, attempt=a) for t, a in keys]


def listed(request: worker_pb2.HeartbeatRequest) -> list[LeaseKey]:
    return [(ref.task_id, ref.attempt) for ref in request.running]


def beat(stub: FakeStub, worker: Agent) -> list[LeaseKey]:
    """Send one heartbeat; return the leases it listed."""
    assert worker.heartbeat_once()
    return listed(stub.requests["Heartbeat"][-1])


def reported(stub: FakeStub) -> list[list[LeaseKey]]:
    """Lease keys of every Report call, one list per call."""
    return [[(r.ref.task_id, r.ref.attempt) for r in request.reports]
            for request in stub.requests["Report"]]


# ---- rule 5: the heartbeat lists every held lease ------------------------------------------


def test_heartbeat_lists_a_run_that_finished_but_is_not_yet_in_the_outbox(stub, agent):
    """The run has left the pool but its finish callback has not queued the report yet."""
    lease(stub, agent, (1, 1))
    assert beat(stub, agent) == [(1, 1)]
    result = pool_of(agent).leave((1, 1))  # between the child's result and the outbox enqueue
    assert (1, 1) not in pool_of(agent).active_keys()
    assert not agent._reporter.outbox.held_keys()
    assert beat(stub, agent) == [(1, 1)]
    agent._on_finish(result)
    assert beat(stub, agent) == [(1, 1)]


def test_heartbeat_lists_a_finished_run_until_its_report_is_acknowledged(stub, agent):
    lease(stub, agent, (1, 1), (2, 1))
    pool_of(agent).finish((1, 1))
    assert beat(stub, agent) == [(1, 1), (2, 1)]
    stub.answer("Report", RpcFailure(grpc.StatusCode.UNAVAILABLE))
    assert not agent._reporter.flush_once()
    assert beat(stub, agent) == [(1, 1), (2, 1)]  # not delivered: still ours
    assert agent._reporter.flush_once()
    assert beat(stub, agent) == [(2, 1)]


def test_a_lease_is_listed_from_the_lease_answer_on_even_before_its_run_starts(stub, agent):
    pool_of(agent).size = 1
    lease(stub, agent, (1, 1))
    assert agent.held_leases() == [(1, 1)] and beat(stub, agent) == [(1, 1)]


# ---- rule 1: stale leases in answers -----------------------------------------------------


def test_stale_leases_in_a_heartbeat_answer_stop_the_run_and_drop_its_report(stub, agent,
                                                                              caplog):
    lease(stub, agent, (1, 1), (2, 1))
    stub.answer("Heartbeat", worker_pb2.HeartbeatResponse(
        status=common_pb2.WORKER_STATUS_ACTIVE, stale=refs((1, 1))))
    with caplog.at_level(logging.WARNING, logger="taskgrid.worker.agent"):
        assert beat(stub, agent) == [(1, 1), (2, 1)]
        stub.answer("Heartbeat", worker_pb2.HeartbeatResponse(stale=refs((1, 1))))
        assert beat(stub, agent) == [(2, 1)]  # forgotten at once
    assert pool_of(agent).stopped == [((1, 1), Outcome.STOPPED)]
    warnings = [r for r in caplog.records if "no longer holds" in r.getMessage()]
    assert len(warnings) == 1 and "1:1" in warnings[0].getMessage()
    pool_of(agent).finish((1, 1), Outcome.STOPPED)  # the stopped run ends: never reported
    pool_of(agent).finish((2, 1))
    assert agent._reporter.flush_once()
    assert reported(stub) == [[(2, 1)]]
    assert stub.requests["Heartbeat"][-1].running == refs((2, 1))


def test_stale_leases_in_a_report_answer_are_dropped_and_the_rest_is_not_sent_again(stub,
                                                                                     agent):
    lease(stub, agent, (1, 1), (2, 1), (3, 1))
    for key in [(1, 1), (2, 1), (3, 1)]:
        pool_of(agent).finish(key)
    stub.answer("Report", worker_pb2.ReportResponse(stale=refs((2, 1))))
    assert agent._reporter.flush_once()
    assert reported(stub) == [[(1, 1), (2, 1), (3, 1)]]  # one call, never resent
    assert agent._reporter.outbox.is_empty()
    assert beat(stub, agent) == []


def test_stale_leases_in_a_send_output_answer_stop_the_run_and_drop_its_report(stub, agent):
    lease(stub, agent, (1, 1), (2, 1))
    for key in [(1, 1), (2, 1)]:
        agent._reporter.outbox.add_chunks(key, [Chunk(seq=1, data=f"{key}\n")])
    stub.answer("SendOutput", worker_pb2.SendOutputResponse(stale=refs((1, 1))))
    assert agent._reporter.flush_once()
    assert len(stub.requests["SendOutput"]) == 1
    assert pool_of(agent).stopped == [((1, 1), Outcome.STOPPED)]
    pool_of(agent).finish((1, 1), Outcome.STOPPED)
    assert agent._reporter.flush_once()
    assert reported(stub) == [] and agent.held_leases() == [(2, 1)]


def test_a_lease_found_stale_while_its_run_is_finishing_is_never_reported(stub, agent):
    lease(stub, agent, (1, 1))
    result = pool_of(agent).leave((1, 1))
    stub.answer("Heartbeat", worker_pb2.HeartbeatResponse(stale=refs((1, 1))))
    assert beat(stub, agent) == [(1, 1)]
    agent._on_finish(result)
    assert agent._reporter.outbox.is_empty() and agent.held_leases() == []
    assert agent._reporter.flush_once() and reported(stub) == []


def test_release_answer_stale_leases_are_only_noted(stub, agent):
    stub.answer("Release", worker_pb2.ReleaseResponse(stale=refs((1, 1))))
    assert agent._release(agent._session, {(1, 1), (2, 1)})
    assert [(r.task_id, r.attempt) for r in stub.requests["Release"][0].leases] == [(1, 1),
                                                                                   (2, 1)]


# ---- rule 1: an older coordinator's FAILED_PRECONDITION ----------------------------------


def test_old_failed_precondition_with_trailer_drops_those_and_resends_the_rest(stub, agent):
    lease(stub, agent, (1, 1), (2, 1))
    for key in [(1, 1), (2, 1)]:
        pool_of(agent).finish(key)
    stub.answer("Report", RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "stale",
                                     stale_trailer((1, 1))))
    assert agent._reporter.flush_once()
    assert reported(stub) == [[(1, 1), (2, 1)], [(2, 1)]]
    assert agent.held_leases() == [] and agent._reporter.outbox.is_empty()


def test_old_failed_precondition_without_trailer_drops_the_whole_batch(stub, agent):
    lease(stub, agent, (1, 1), (2, 1))
    for key in [(1, 1), (2, 1)]:
        pool_of(agent).finish(key)
    stub.answer("Report", *[RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "stale")] * 10)
    assert agent._reporter.flush_once()
    assert len(stub.requests["Report"]) == 1  # never retried
    assert agent.held_leases() == [] and agent._reporter.outbox.is_empty()
    assert len(stub.requests["Release"]) == 1  # best effort: the fresh ones go back at once


def test_old_failed_precondition_naming_other_leases_does_not_loop(stub, agent):
    lease(stub, agent, (1, 1))
    pool_of(agent).finish((1, 1))
    stub.answer("Report", *[RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "stale",
                                       stale_trailer((9, 9)))] * 10)
    assert agent._reporter.flush_once()
    assert len(stub.requests["Report"]) == 1 and agent._reporter.outbox.is_empty()


def test_old_failed_precondition_on_a_heartbeat_resends_it_without_the_stale_leases(stub,
                                                                                    agent):
    lease(stub, agent, (1, 1), (2, 1))
    stub.answer("Heartbeat", RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "stale",
                                        stale_trailer((1, 1))))
    assert beat(stub, agent) == [(2, 1)]
    assert [listed(r) for r in stub.requests["Heartbeat"]] == [[(1, 1), (2, 1)], [(2, 1)]]
    assert pool_of(agent).stopped == [((1, 1), Outcome.STOPPED)]


# ---- rule 2: INTERNAL and UNKNOWN are retried a bounded number of times ------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
def test_a_report_the_coordinator_keeps_failing_on_is_handed_back_after_bounded_tries(
        stub, agent, caplog, code):
    lease(stub, agent, (1, 1))
    pool_of(agent).finish((1, 1))
    stub.answer("Report", *[RpcFailure(code, "boom")] * 100)
    with caplog.at_level(logging.ERROR, logger="taskgrid.worker.agent"):
        for _ in range(DEFAULT_SERVER_ERROR_TRIES - 1):
            assert not agent._reporter.flush_once()
            assert agent.held_leases() == [(1, 1)] and not stub.requests["Release"]
        agent._reporter.flush_once()
    assert len(stub.requests["Report"]) == DEFAULT_SERVER_ERROR_TRIES
    assert stub.requests["Release"][0].leases == refs((1, 1))
    assert agent.held_leases() == [] and agent._reporter.outbox.is_empty()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("giving up" in m and "1:1" in m for m in errors)


def test_a_poisoned_report_batch_does_not_block_later_reports(stub, agent):
    lease(stub, agent, (1, 1))
    pool_of(agent).finish((1, 1))
    stub.answer("Report", *[RpcFailure(grpc.StatusCode.INTERNAL, "boom")]
                * DEFAULT_SERVER_ERROR_TRIES)
    for _ in range(DEFAULT_SERVER_ERROR_TRIES):
        agent._reporter.flush_once()
    lease(stub, agent, (2, 1))
    pool_of(agent).finish((2, 1))
    assert agent._reporter.flush_once()
    assert reported(stub)[-1] == [(2, 1)] and agent.held_leases() == []


def test_an_outage_between_server_errors_does_not_reset_the_count(stub, agent):
    lease(stub, agent, (1, 1))
    pool_of(agent).finish((1, 1))
    internal = RpcFailure(grpc.StatusCode.INTERNAL)
    away = RpcFailure(grpc.StatusCode.UNAVAILABLE)
    stub.answer("Report", *[internal, away] * DEFAULT_SERVER_ERROR_TRIES)
    for _ in range(2 * DEFAULT_SERVER_ERROR_TRIES):
        agent._reporter.flush_once()
    assert stub.requests["Release"] and agent.held_leases() == []


def test_output_the_coordinator_keeps_failing_on_is_dropped_and_the_run_goes_on(stub, agent):
    lease(stub, agent, (1, 1))
    stub.answer("SendOutput", *[RpcFailure(grpc.StatusCode.INTERNAL)] * 100)
    for i in range(DEFAULT_SERVER_ERROR_TRIES):
        agent._reporter.outbox.add_chunks((1, 1), [Chunk(seq=i + 1, data="x\n")])
        agent._reporter.flush_once()
    assert len(stub.requests["SendOutput"]) == DEFAULT_SERVER_ERROR_TRIES
    assert not agent._reporter.outbox.has_output()
    assert pool_of(agent).stopped == [] and agent.held_leases() == [(1, 1)]
    assert not stub.requests["Release"]


def test_a_heartbeat_failing_internal_is_retried_and_keeps_every_lease(stub, agent):
    lease(stub, agent, (1, 1))
    stub.answer("Heartbeat", *[RpcFailure(grpc.StatusCode.INTERNAL)] * 10)
    for _ in range(10):
        assert not agent.heartbeat_once()
    assert beat(stub, agent) == [(1, 1)] and pool_of(agent).stopped == []


# ---- rule 3: UNAVAILABLE is retried without limit ----------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
def test_reports_wait_out_an_outage_of_any_length(stub, agent, code):
    lease(stub, agent, (1, 1))
    pool_of(agent).finish((1, 1))
    stub.answer("Report", *[RpcFailure(code)] * (3 * DEFAULT_SERVER_ERROR_TRIES))
    for _ in range(3 * DEFAULT_SERVER_ERROR_TRIES):
        assert not agent._reporter.flush_once()
    assert agent.held_leases() == [(1, 1)] and not stub.requests["Release"]
    assert agent._reporter.flush_once()
    assert reported(stub)[-1] == [(1, 1)] and agent.held_leases() == []


def test_a_lost_session_drops_every_lease(stub, agent):
    lease(stub, agent, (1, 1), (2, 1))
    pool_of(agent).finish((1, 1))
    stub.answer("Report", RpcFailure(grpc.StatusCode.NOT_FOUND))
    agent._reporter.flush_once()
    assert agent._session is None and agent.held_leases() == []
    assert pool_of(agent).stopped == [((2, 1), Outcome.STOPPED)]
    pool_of(agent).finish((2, 1), Outcome.STOPPED)
    assert agent._reporter.outbox.is_empty()


# ---- rule 4: Register answered ALREADY_EXISTS ---------------------------------------------


def test_register_already_exists_is_retried_while_a_dead_predecessor_may_hold_the_name(
        stub, make_agent):
    worker = make_agent(heartbeat=3.0)
    assert worker.name_wait_s() == pytest.approx(15.0)  # dead_after 9 s + 2 heartbeats
    stub.answer("Register", RpcFailure(grpc.StatusCode.ALREADY_EXISTS, "name in use"))
    assert not worker.register_once()
    assert worker._leaving is None  # keeps trying
    assert worker.register_once()  # the predecessor was declared dead
    assert worker._session is not None and worker._exit_code == 0


def test_register_already_exists_for_too_long_exits_naming_the_name(stub, make_agent, caplog):
    worker = make_agent(heartbeat=0.05)
    stub.answer("Register", *[RpcFailure(grpc.StatusCode.ALREADY_EXISTS, "name in use")] * 1000)
    with caplog.at_level(logging.WARNING):
        code = worker.run()
    assert code == EXIT_NAME_TAKEN
    assert len(stub.requests["Register"]) >= 2  # it retried before giving up
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(repr(WORKER_NAME) in m and "taken" in m for m in errors)


# ---- reports ride on a Lease only when the coordinator takes them --------------------------


@pytest.mark.parametrize("takes", [False, True])
def test_reports_ride_on_the_next_lease_only_when_the_coordinator_takes_them(
        stub, make_agent, takes):
    stub.answer("Register", worker_pb2.RegisterResponse(
        session=worker_pb2.WorkerSession(worker_id=7, session_token="secret"), heartbeat=3.0,
        status=common_pb2.WORKER_STATUS_ACTIVE, dead_after=9.0, lease_takes_reports=takes))
    worker = make_agent()
    assert worker.register_once()
    lease(stub, worker, (1, 1))
    pool_of(worker).finish((1, 1))
    assert worker.lease_once()
    carried = [(r.ref.task_id, r.ref.attempt) for r in stub.requests["Lease"][-1].reports]
    assert carried == ([(1, 1)] if takes else [])
    if not takes:  # it goes by Report instead
        assert worker._reporter.flush_once() and reported(stub) == [[(1, 1)]]
