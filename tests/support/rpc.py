"""Raw gRPC stubs for tests that speak the protocol directly (a hand-driven worker)."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc

from taskgrid.v1 import (
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    common_pb2,
    worker_pb2,
    worker_pb2_grpc,
)


@dataclasses.dataclass
class Stubs:
    """The three services on one channel."""

    channel: grpc.Channel
    client: client_pb2_grpc.ClientServiceStub
    worker: worker_pb2_grpc.WorkerServiceStub
    admin: admin_pb2_grpc.AdminServiceStub

    def close(self) -> None:
        self.channel.close()


def connect(address: str) -> Stubs:
    ch = grpc.insecure_channel(address)
    return Stubs(ch, client_pb2_grpc.ClientServiceStub(ch), worker_pb2_grpc.WorkerServiceStub(ch),
                 admin_pb2_grpc.AdminServiceStub(ch))


class FakeWorker:
    """A worker driven by the test, one RPC at a time."""

    def __init__(self, stubs: Stubs, name: str, functions: list[str],
                 groups: list[str] | None = None,
                 heartbeat: float = 0.5, capacity: int = 1) -> None:
        self.stubs = stubs
        reply = stubs.worker.Register(worker_pb2.RegisterRequest(
            worker_name=name, functions=functions, group_names=groups or ["main"],
            capacity=capacity, language="test", heartbeat=heartbeat))
        self.session = reply.session
        self.name = name

    def lease(self, n: int = 1, wait_s: float = 0.0, prefetch: bool = False) -> Any:
        return self.stubs.worker.Lease(worker_pb2.LeaseRequest(
            session=self.session, max_tasks=n, wait_s=wait_s, prefetch=prefetch))

    def heartbeat(self, *refs: Any) -> Any:
        return self.stubs.worker.Heartbeat(worker_pb2.HeartbeatRequest(
            session=self.session, running=list(refs)))

    def output(self, ref: Any, seq: int, data: str, clear: bool = False) -> Any:
        return self.stubs.worker.SendOutput(worker_pb2.SendOutputRequest(
            session=self.session, chunks=[common_pb2.OutputChunk(
                task_id=ref.task_id, attempt=ref.attempt, seq=seq, data=data, clear=clear)]))

    @staticmethod
    def run_report(ref: Any, status: str, result: str | None = None, traceback: str = "",
                   output: list[tuple[int, str]] | None = None) -> Any:
        run_status = common_pb2.RunStatus.Value(f"RUN_STATUS_{status}")
        rep = worker_pb2.RunReport(ref=ref, status=run_status,
                                   traceback=traceback,
                                   output=[common_pb2.OutputChunk(seq=s, data=d)
                                           for s, d in output or []])
        if result is not None:
            rep.result = result
        return rep

    def report(self, ref: Any, status: str, result: str | None = None, traceback: str = "",
               output: list[tuple[int, str]] | None = None) -> Any:
        rep = self.run_report(ref, status, result, traceback, output)
        return self.stubs.worker.Report(worker_pb2.ReportRequest(session=self.session,
                                                                 reports=[rep]))


def queue(stubs: Stubs, function: str, **fields: Any) -> client_pb2.QueueTaskResponse:
    return stubs.client.QueueTask(client_pb2.QueueTaskRequest(
        task=common_pb2.TaskSpec(function_name=function, **fields)))


def get(stubs: Stubs, task_id: int, all_runs: bool = False) -> client_pb2.GetTaskResponse:
    return stubs.client.GetTask(client_pb2.GetTaskRequest(ref=client_pb2.TaskRef(id=task_id),
                                                          all_runs=all_runs))


def status_of(stubs: Stubs, task_id: int) -> str:
    return common_pb2.TaskStatus.Name(get(stubs, task_id).task.status).removeprefix("TASK_STATUS_")
