"""The worker protocol driven by hand: leases, fencing, ASSIGNED, output, bad input.

A FakeWorker speaks the raw gRPC API to a real coordinator, so each step can be
observed between two calls; the Python worker is covered in test_worker_*.py.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import struct_pb2

from taskgrid.v1 import admin_pb2, client_pb2, common_pb2, worker_pb2
from tests.support.rpc import FakeWorker, connect, get, queue, status_of
from tests.support.wait import wait_until


@pytest.fixture
def stubs(coordinator):
    s = connect(coordinator.address)
    yield s
    s.close()


def refs_of(items):
    return [(r.task_id, r.attempt) for r in items]


def code_of(call, *args):
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def test_lease_start_report_walks_queued_assigned_running_completed(stubs):
    tid = queue(stubs, "add", args="[1, 2]").id
    assert status_of(stubs, tid) == "QUEUED"
    w = FakeWorker(stubs, "hand", ["add"])
    [lease] = w.lease(prefetch=True).leases
    assert not lease.started and lease.run_id == 0
    assert status_of(stubs, tid) == "ASSIGNED"
    assert get(stubs, tid).runs == []
    assert "leased to worker hand" in get(stubs, tid).waiting_reason
    [started] = stubs.worker.StartRuns(worker_pb2.StartRunsRequest(
        session=w.session, leases=[lease.ref])).leases
    assert started.started and started.run_id > 0
    assert status_of(stubs, tid) == "RUNNING"
    w.output(lease.ref, 1, "partial\n")
    assert get(stubs, tid).runs[0].run_output == "partial\n"
    w.report(lease.ref, "COMPLETED", result="3", output=[(2, "done\n")])
    view = get(stubs, tid)
    assert status_of(stubs, tid) == "COMPLETED"
    assert view.task.times_run == 1 and view.task.assigned_worker_name == "hand"
    [run] = view.runs
    assert common_pb2.RunStatus.Name(run.status) == "RUN_STATUS_COMPLETED"
    assert run.run_result == "3" and run.run_output == "partial\ndone\n"
    assert run.worker_name == "hand" and run.stop_time.seconds > 0


def test_stale_report_is_rejected_and_changes_nothing(stubs):
    tid = queue(stubs, "add", retry_failed=1, period=0).id
    w = FakeWorker(stubs, "hand", ["add"])
    [first] = w.lease().leases
    w.report(first.ref, "FAILED", traceback="boom")
    [second] = w.lease().leases
    assert second.ref.attempt == first.ref.attempt + 1
    before = get(stubs, tid, all_runs=True)
    # Stale leases are answered in the response message; the call itself succeeds.
    assert refs_of(w.report(first.ref, "COMPLETED", "1").stale) == [(tid, first.ref.attempt)]
    assert refs_of(w.output(first.ref, 9, "late").stale) == [(tid, first.ref.attempt)]
    # A heartbeat may still list a lease the worker reported a moment ago (in flight);
    # an attempt it never held is stale.
    assert list(w.heartbeat(first.ref, second.ref).stale) == []
    bogus = common_pb2.LeaseRef(task_id=tid, attempt=second.ref.attempt + 7)
    assert refs_of(w.heartbeat(bogus, second.ref).stale) == [(tid, bogus.attempt)]
    assert get(stubs, tid, all_runs=True) == before


def test_a_batch_applies_its_fresh_reports_and_lists_the_stale_ones(stubs):
    tids = [queue(stubs, "add").id for _ in range(2)]
    w = FakeWorker(stubs, "hand", ["add"], capacity=2)
    leases = list(w.lease(n=2).leases)
    assert sorted(x.ref.task_id for x in leases) == sorted(tids)
    stale = common_pb2.LeaseRef(task_id=leases[0].ref.task_id, attempt=leases[0].ref.attempt + 3)
    reports = [w.run_report(stale, "COMPLETED", "1"), w.run_report(leases[1].ref, "COMPLETED", "2")]
    reply = w.stubs.worker.Report(worker_pb2.ReportRequest(session=w.session, reports=reports))
    assert refs_of(reply.stale) == [(stale.task_id, stale.attempt)]
    assert status_of(stubs, leases[1].ref.task_id) == "COMPLETED"
    assert status_of(stubs, leases[0].ref.task_id) == "RUNNING"


def test_reports_ride_on_the_next_lease(stubs):
    """ACK+FETCH: a Lease applies the finished runs it carries, exactly as Report does, then
    claims; a report sent again is stale; a malformed one fails the call and changes nothing."""
    first, second = (queue(stubs, "add", args="[1, 2]").id for _ in range(2))
    reply = stubs.worker.Register(worker_pb2.RegisterRequest(
        worker_name="acker", functions=["add"], group_names=["main"], capacity=1,
        language="test", heartbeat=0.5))
    assert reply.lease_takes_reports
    w = FakeWorker(stubs, "acker2", ["add"])
    [lease] = w.lease().leases
    done = w.run_report(lease.ref, "COMPLETED", "3", output=[(1, "out\n")])
    answer = stubs.worker.Lease(worker_pb2.LeaseRequest(
        session=w.session, max_tasks=1, wait_s=0, reports=[done]))
    assert list(answer.stale) == []
    [nxt] = answer.leases  # the slot the report freed is filled in the same call
    assert {lease.ref.task_id, nxt.ref.task_id} == {first, second}
    view = get(stubs, lease.ref.task_id)
    assert status_of(stubs, lease.ref.task_id) == "COMPLETED"
    assert view.runs[0].run_result == "3" and view.runs[0].run_output == "out\n"
    again = stubs.worker.Lease(worker_pb2.LeaseRequest(
        session=w.session, max_tasks=1, wait_s=0, reports=[done]))
    assert refs_of(again.stale) == [(lease.ref.task_id, lease.ref.attempt)]
    assert list(again.leases) == []
    bad = worker_pb2.RunReport(ref=nxt.ref, status=common_pb2.RUN_STATUS_RUNNING)
    third = queue(stubs, "add", args="[1, 2]").id
    error = code_of(stubs.worker.Lease, worker_pb2.LeaseRequest(
        session=w.session, max_tasks=2, wait_s=0, reports=[bad]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(stubs, nxt.ref.task_id) == "RUNNING"
    assert status_of(stubs, third) == "QUEUED"


def test_stale_lists_of_hundreds_of_leases_fit_in_the_reply(stubs):
    # They once travelled in trailing metadata, which failed past about 8 KiB.
    w = FakeWorker(stubs, "hand", ["add"])
    bogus = [common_pb2.LeaseRef(task_id=100_000 + i, attempt=1) for i in range(2000)]
    reply = w.heartbeat(*bogus)
    assert len(reply.stale) == 2000


def test_another_workers_lease_is_refused(stubs):
    queue(stubs, "add")
    owner = FakeWorker(stubs, "owner", ["add"])
    thief = FakeWorker(stubs, "thief", ["add"])
    [lease] = owner.lease().leases
    assert refs_of(thief.report(lease.ref, "COMPLETED", "1").stale) == [
        (lease.ref.task_id, lease.ref.attempt)]
    assert status_of(stubs, lease.ref.task_id) == "RUNNING"


def test_bad_session_token_is_not_found(stubs):
    w = FakeWorker(stubs, "hand", ["add"])
    w.session.session_token = "not-the-token"
    assert code_of(w.heartbeat).code() == grpc.StatusCode.NOT_FOUND
    w.session.worker_id = 10_000
    assert code_of(w.heartbeat).code() == grpc.StatusCode.NOT_FOUND


def test_function_and_group_routing(stubs):
    wrong_fn = queue(stubs, "mul").id
    wrong_group = queue(stubs, "add", group_name="other").id
    w = FakeWorker(stubs, "hand", ["add"], groups=["main"])
    assert list(w.lease(n=5).leases) == []
    assert "offers function 'mul'" in get(stubs, wrong_fn).waiting_reason
    assert "group 'other'" in get(stubs, wrong_group).waiting_reason
    mine = queue(stubs, "add").id
    assert [x.ref.task_id for x in w.lease(n=5).leases] == [mine]
    assert status_of(stubs, wrong_fn) == status_of(stubs, wrong_group) == "QUEUED"


def test_long_poll_wakes_when_work_is_queued(start_coordinator):
    import threading

    coordinator = start_coordinator(extra_args=["--log-level", "DEBUG"])  # logs each park
    stubs = connect(coordinator.address)
    w = FakeWorker(stubs, "hand", ["add"])
    got = {}

    def poll():
        t0 = time.monotonic()
        got["reply"] = w.lease(wait_s=10)
        got["waited"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    # the task must come while the call is parked, or the call would just find it
    wait_until(lambda: "lease parked worker=hand" in coordinator.log_text(), timeout=5,
               desc="the Lease call to park")
    tid = queue(stubs, "add").id
    t.join(10)
    assert [x.ref.task_id for x in got["reply"].leases] == [tid]
    assert got["waited"] < 5
    stubs.close()


def test_empty_long_poll_returns_after_wait(stubs):
    w = FakeWorker(stubs, "hand", ["add"])
    t0 = time.monotonic()
    assert list(w.lease(wait_s=0.3).leases) == []
    assert 0.25 < time.monotonic() - t0 < 3


def test_silent_worker_is_declared_dead_and_its_task_requeued(stubs):
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "ghost", ["add"], heartbeat=0.3)
    [lease] = w.lease().leases
    wait_until(lambda: status_of(stubs, tid) == "QUEUED", timeout=10, desc="requeued")
    view = get(stubs, tid, all_runs=True)
    assert view.task.lost_count == 1 and view.task.times_failed == 0
    [run] = view.runs
    assert common_pb2.RunStatus.Name(run.status) == "RUN_STATUS_FAILED"
    assert "worker ghost" in run.traceback
    assert code_of(w.heartbeat).code() == grpc.StatusCode.NOT_FOUND
    assert code_of(w.report, lease.ref, "COMPLETED", "1").code() == grpc.StatusCode.NOT_FOUND


def test_lost_worker_requeues_are_capped(start_coordinator):
    coord = start_coordinator(extra_args=["--max-lost-requeues", "1"])
    stubs = connect(coord.address)
    tid = queue(stubs, "add").id
    for i in range(2):
        w = FakeWorker(stubs, f"doomed{i}", ["add"], heartbeat=0.2)
        assert w.lease().leases
        wait_until(lambda: status_of(stubs, tid) != "RUNNING", timeout=10)
    assert status_of(stubs, tid) == "FAILED"
    assert get(stubs, tid).task.lost_count == 2


def test_stop_queued_and_running_tasks(stubs):
    queued = queue(stubs, "add").id
    reply = stubs.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=queued)))
    assert reply.stopped and status_of(stubs, queued) == "STOPPED"
    assert not get(stubs, queued).task.enabled
    running = queue(stubs, "add").id
    w = FakeWorker(stubs, "hand", ["add"])
    [lease] = w.lease().leases
    reply = stubs.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=running)))
    assert reply.stopped and status_of(stubs, running) == "RUNNING"
    assert [(r.task_id, r.attempt) for r in w.heartbeat(lease.ref).stop] == \
        [(lease.ref.task_id, lease.ref.attempt)]
    w.report(lease.ref, "STOPPED")
    assert status_of(stubs, running) == "STOPPED"
    again = stubs.client.StopTask(client_pb2.StopTaskRequest(ref=client_pb2.TaskRef(id=running)))
    assert not again.stopped and "already STOPPED" in again.message


@pytest.mark.parametrize(("request_factory", "field"), [
    (lambda: client_pb2.GetTaskRequest(), "ref"),
    (lambda: client_pb2.GetTaskRequest(ref=client_pb2.TaskRef(id=-3)), "ref.id"),
])
def test_malformed_requests_are_invalid_argument(stubs, request_factory, field):
    err = code_of(stubs.client.GetTask, request_factory())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_malformed_queue_and_list_requests(stubs):
    err = code_of(stubs.client.QueueTask, client_pb2.QueueTaskRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "task" in err.details()
    err = code_of(stubs.client.ListTasks, client_pb2.ListTasksRequest(page_token="zz"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.details()
    err = code_of(stubs.client.GetTask, client_pb2.GetTaskRequest(
        ref=client_pb2.TaskRef(id=12345)))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_validation_errors_write_nothing(stubs):
    reply = stubs.client.QueueTasks(client_pb2.QueueTasksRequest(tasks=[
        common_pb2.TaskSpec(function_name="add"),
        common_pb2.TaskSpec(function_name="add", timeout=0, args="{}", vars="{}",
                            vars_value=struct_pb2.Struct(fields={"a": struct_pb2.Value(
                                number_value=1)})),
    ]))
    assert reply.results[0].id == 0 and dict(reply.results[0].errors) == {}
    errors = dict(reply.results[1].errors)
    assert set(errors) == {"timeout", "args", "vars"}
    assert errors["vars"] == "give vars or vars_value, not both"
    listed = stubs.client.ListTasks(client_pb2.ListTasksRequest())
    assert list(listed.tasks) == []
    ok = queue(stubs, "add", uuid="u-1")
    dup = queue(stubs, "add", uuid="u-1")
    assert ok.id and dup.id == 0 and "uuid" in dup.errors


def test_list_tasks_pages_and_filters(stubs):
    ids = [queue(stubs, "add" if i % 2 else "mul").id for i in range(5)]
    page = stubs.client.ListTasks(client_pb2.ListTasksRequest(page_size=2))
    assert [t.id for t in page.tasks] == ids[::-1][:2] and page.next_page_token
    rest = stubs.client.ListTasks(client_pb2.ListTasksRequest(page_size=10,
                                                              page_token=page.next_page_token))
    assert [t.id for t in rest.tasks] == ids[::-1][2:] and not rest.next_page_token
    adds = stubs.client.ListTasks(client_pb2.ListTasksRequest(function_name="add"))
    assert {t.id for t in adds.tasks} == {ids[1], ids[3]}


def test_command_tasks_go_only_to_workers_that_run_commands(stubs):
    cmd = common_pb2.Command(executable="/bin/echo", args=["hi"], env={"A": "1"}, cwd="/tmp")
    tid = queue(stubs, "", command=cmd).id
    task = get(stubs, tid).task
    assert task.function_name == "@command" and task.task_name == "echo"
    assert task.command.executable == "/bin/echo" and list(task.command.args) == ["hi"]
    plain = FakeWorker(stubs, "plain", ["add"])
    assert list(plain.lease().leases) == []
    reply = stubs.worker.Register(worker_pb2.RegisterRequest(
        worker_name="runner", capabilities=["command"], heartbeat=0.5))
    lease = stubs.worker.Lease(worker_pb2.LeaseRequest(session=reply.session, max_tasks=1))
    [got] = lease.leases
    assert got.ref.task_id == tid and got.command.executable == "/bin/echo"
    assert dict(got.command.env) == {"A": "1"} and got.command.cwd == "/tmp"


def test_command_task_validation(stubs):
    empty = queue(stubs, "", command=common_pb2.Command(executable=""))
    assert empty.id == 0 and "command" in empty.errors
    both = queue(stubs, "add", command=common_pb2.Command(executable="/bin/true"))
    assert both.id == 0 and "function_name" in both.errors
    missing = queue(stubs, "@command")
    assert missing.id == 0 and "command" in missing.errors


@pytest.mark.parametrize(("field", "value"), [
    ("heartbeat", float("nan")), ("heartbeat", -1.0), ("heartbeat", 1e9), ("capacity", -2),
    ("register", None),
])
def test_bad_registration_is_invalid_argument(stubs, field, value):
    fields = {field: value} if value is not None else {"group_names": ["a\x00b"]}
    err = code_of(stubs.worker.Register, worker_pb2.RegisterRequest(worker_name="x", **fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details()
    listed = stubs.admin.ListWorkers(admin_pb2.ListWorkersRequest(include_dead=True))
    assert list(listed.workers) == []


def test_nan_wait_is_invalid_argument(stubs):
    w = FakeWorker(stubs, "hand", ["add"])
    err = code_of(w.lease, 1, float("nan"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_nul_in_task_output_is_stored_not_refused(stubs):
    tid = queue(stubs, "add").id
    w = FakeWorker(stubs, "hand", ["add"])
    [lease] = w.lease().leases
    w.output(lease.ref, 1, "bin\x00ary\n")
    w.report(lease.ref, "FAILED", traceback="Trace\x00back", output=[(2, "end\x00\n")])
    [run] = get(stubs, tid).runs
    assert run.run_output == "bin\ufffdary\nend\ufffd\n" and run.traceback == "Trace\ufffdback"
