"""OpenTelemetry tracing: one trace from the client's queue_task to the task's result.

The spans are collected by the SDK's in-memory exporter, so the client, a coordinator
(in this process, on its own loop thread) and the worker's side of the protocol all
export to it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskgrid import tracing
from taskgrid.client import Scheduler
from tests.support.inprocess import InProcessCoordinator
from tests.support.rpc import FakeWorker, connect, status_of
from tests.support.wait import wait_until

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The process's tracer provider, once, exporting to memory; emptied per test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def test_one_trace_runs_from_queue_task_to_the_result(db_url, spans):
    coordinator = InProcessCoordinator(db_url, tracing=True)
    stubs = connect(coordinator.address)
    try:
        worker = FakeWorker(stubs, "traced", ["add"])
        with Scheduler(coordinator.address, tracing=True) as client:
            queued = client.queue_task("add", pargs=[2, 3])
        [lease] = worker.lease(1, wait_s=5).leases
        assert lease.traceparent  # the context rides on the Lease to the worker
        # The worker's side, as the Python worker's agent does it around a run.
        run = tracing.start("taskgrid.run add", lease.traceparent,
                            {"taskgrid.task_id": lease.ref.task_id})
        tracing.finish(run, "COMPLETED")
        assert not list(worker.report(lease.ref, "COMPLETED", result="5").stale)
        wait_until(lambda: status_of(stubs, queued.id) == "COMPLETED", timeout=10,
                   desc="the task completed")
    finally:
        stubs.close()
        coordinator.stop()

    finished = {s.name: s for s in spans.get_finished_spans()}
    assert {"taskgrid.queue_task", "QueueTask", "taskgrid.lease", "taskgrid.run add",
            "taskgrid.report"} <= set(finished)
    root = finished["taskgrid.queue_task"]
    assert root.parent is None
    assert {s.context.trace_id for s in finished.values()} == {root.context.trace_id}
    server = finished["QueueTask"]
    assert server.parent.span_id == root.context.span_id
    for name in ("taskgrid.lease", "taskgrid.run add", "taskgrid.report"):
        assert finished[name].parent.span_id == server.context.span_id, name
    assert finished["taskgrid.run add"].attributes["taskgrid.outcome"] == "COMPLETED"


def test_the_python_worker_spans_each_run_on_the_lease_context(spans, make_traced_agent):
    agent, stub, pool = make_traced_agent
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    stub.answer("Lease", _lease_response(parent))
    assert agent.lease_once()
    [key] = pool.active_keys()
    pool.finish(key)
    [run] = [s for s in spans.get_finished_spans() if s.name == "taskgrid.run f"]
    assert f"{run.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{run.parent.span_id:016x}" == "b7ad6b7169203331"
    assert run.attributes["taskgrid.outcome"] == "COMPLETED"


def test_nothing_of_opentelemetry_is_imported_while_tracing_is_off():
    code = ("import sys\n"
            "import taskgrid.client, taskgrid.coordinator.app, taskgrid.worker.agent, "
            "taskgrid.tracing\n"
            "from taskgrid.client import Scheduler\n"
            "Scheduler('127.0.0.1:1').close()\n"
            "bad = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def _lease_response(traceparent: str):
    from taskgrid.v1 import common_pb2, worker_pb2
    return worker_pb2.LeaseResponse(
        status=common_pb2.WORKER_STATUS_ACTIVE,
        leases=[worker_pb2.Lease(ref=common_pb2.LeaseRef(task_id=7, attempt=1), run_id=7,
                                 function_name="f", timeout=60, started=True,
                                 traceparent=traceparent)])


@pytest.fixture
def make_traced_agent(monkeypatch):
    """A registered Python worker agent with tracing on, its pool and stub faked (the
    unit tests' fakes: tests/unit/test_worker_agent.py)."""
    from taskgrid.worker import agent as agent_module
    from tests.unit.test_worker_agent import WORKER_NAME, FakePool, FakeStub

    stub = FakeStub()
    monkeypatch.setattr(agent_module, "Pool", FakePool)
    monkeypatch.setattr(agent_module.worker_pb2_grpc, "WorkerServiceStub", lambda ch: stub)
    agent = agent_module.Agent(agent_module.AgentConfig(
        tasks="", functions=["f"], concurrency=2, worker_name=WORKER_NAME, tracing=True))
    agent._stub = stub
    assert agent.register_once()
    pool = agent._pool
    assert isinstance(pool, FakePool)
    return agent, stub, pool
