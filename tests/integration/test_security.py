"""Tokens and roles, listening rules, limits and lease hand-back, against a real coordinator."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from taskgrid.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    common_pb2,
    worker_pb2,
)
from tests.support.rpc import FakeWorker, Stubs, connect, get, queue, status_of
from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)

TOKENS = {"client": "client-token-0123456789", "worker": "worker-token-0123456789",
          "admin": "admin-token-0123456789"}


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token):
        self.token = token

    def _add(self, details):
        metadata = list(details.metadata or []) + [("authorization", f"Bearer {self.token}")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else \
            _Details(details.method, details.timeout, metadata, details.credentials,
                     details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._add(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._add(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (
            credentials, wait_for_ready, compression)


def stubs_with(address, token) -> Stubs:
    s = connect(address)
    if token is None:
        return s
    ch = grpc.intercept_channel(s.channel, _Bearer(token))
    from taskgrid.v1 import worker_pb2_grpc
    return Stubs(ch, client_pb2_grpc.ClientServiceStub(ch), worker_pb2_grpc.WorkerServiceStub(ch),
                 admin_pb2_grpc.AdminServiceStub(ch))


@pytest.fixture
def secured(start_coordinator, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# role token\n" + "".join(f"{r} {t}\n" for r, t in TOKENS.items()))
    return start_coordinator(extra_args=["--tokens-file", str(path)])


def code(call, *args):
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code()


def test_missing_or_bad_token_is_unauthenticated(secured):
    anon = stubs_with(secured.address, None)
    assert code(anon.client.ListTasks, client_pb2.ListTasksRequest()) == \
        grpc.StatusCode.UNAUTHENTICATED
    wrong = stubs_with(secured.address, "not-a-known-token-at-all")
    assert code(wrong.client.ListTasks, client_pb2.ListTasksRequest()) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert "not-a-known-token" not in secured.log_text()


def test_roles_limit_what_a_token_may_call(secured):
    client = stubs_with(secured.address, TOKENS["client"])
    assert queue(client, "add").id
    client.client.ListTasks(client_pb2.ListTasksRequest())
    assert code(client.admin.SetWorkerStatus, admin_pb2.SetWorkerStatusRequest(
        status=common_pb2.WORKER_STATUS_KILL)) == grpc.StatusCode.PERMISSION_DENIED
    assert code(client.worker.Register, worker_pb2.RegisterRequest(worker_name="x")) == \
        grpc.StatusCode.PERMISSION_DENIED
    worker = stubs_with(secured.address, TOKENS["worker"])
    assert code(worker.client.ListTasks, client_pb2.ListTasksRequest()) == \
        grpc.StatusCode.PERMISSION_DENIED
    FakeWorker(worker, "w", ["add"])
    admin = stubs_with(secured.address, TOKENS["admin"])
    admin.admin.ListWorkers(admin_pb2.ListWorkersRequest())
    admin.client.ListTasks(client_pb2.ListTasksRequest())
    for token in TOKENS.values():
        assert token not in secured.log_text()


def test_streaming_call_is_checked_too(secured):
    anon = stubs_with(secured.address, None)
    stream = anon.client.WatchTask(client_pb2.WatchTaskRequest(ref=client_pb2.TaskRef(id=1)))
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stream))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_worker_cannot_report_another_workers_lease(secured):
    worker = stubs_with(secured.address, TOKENS["worker"])
    client = stubs_with(secured.address, TOKENS["client"])
    tid = queue(client, "add").id
    owner = FakeWorker(worker, "owner", ["add"])
    thief = FakeWorker(worker, "thief", ["add"])
    [lease] = owner.lease().leases
    stale = thief.report(lease.ref, "COMPLETED", "1").stale
    assert [(r.task_id, r.attempt) for r in stale] == [(lease.ref.task_id, lease.ref.attempt)]
    assert status_of(client, tid) == "RUNNING"


def test_non_loopback_listen_needs_tokens_or_insecure(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.sqlite'}"
    result = subprocess.run(
        [sys.executable, "-m", "taskgrid", "coordinator", "--db", db, "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_insecure_flag_allows_it(start_coordinator):
    coord = start_coordinator(listen="0.0.0.0:0", extra_args=["--insecure"])
    assert coord.address.endswith(tuple("0123456789"))


def test_args_over_the_limit_are_a_field_error(start_coordinator):
    coord = start_coordinator(extra_args=["--max-args-bytes", "100"])
    stubs = connect(coord.address)
    r = queue(stubs, "add", args='["' + "x" * 200 + '"]')
    assert r.id == 0 and "limit is 100" in r.errors["args"]


def test_result_over_the_limit_fails_the_run_and_output_is_cut(start_coordinator):
    coord = start_coordinator(extra_args=["--max-result-bytes", "50", "--max-output-bytes",
                                          "20"])
    stubs = connect(coord.address)
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "w", ["add"])
    [lease] = w.lease().leases
    w.output(lease.ref, 1, "0123456789")
    w.output(lease.ref, 2, "abcdefghijklmnop")
    w.report(lease.ref, "COMPLETED", result='"' + "y" * 100 + '"', output=[(3, "more")])
    view = get(stubs, tid)
    [run] = view.runs
    assert status_of(stubs, tid) == "FAILED"
    assert "ResultTooLarge" in run.traceback and "limit is 50" in run.traceback
    assert run.run_output.startswith("0123456789abcdefghij")
    assert "output cut here" in run.run_output


def test_released_lease_is_requeued_without_counting(coordinator):
    stubs = connect(coordinator.address)
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "w", ["add"])
    [lease] = w.lease().leases
    stubs.worker.Release(worker_pb2.ReleaseRequest(session=w.session, leases=[lease.ref]))
    view = get(stubs, tid, all_runs=True)
    assert status_of(stubs, tid) == "QUEUED" and list(view.runs) == []
    assert view.task.times_failed == 0 and view.task.lost_count == 0
    [again] = w.lease().leases
    assert again.ref.attempt == lease.ref.attempt + 1
