"""Housekeeping through the API and the client: requeue, enable/disable, update, delete, purge.

Real coordinators on SQLite and PostgreSQL, real worker processes. The purge runs on
an in-process coordinator whose clock the test moves (its retention is days).
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from taskgrid.client import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Scheduler,
)
from taskgrid.v1 import client_pb2, client_pb2_grpc
from tests.support.processes import Access
from tests.support.wait import wait_until

TOKENS = {"client": "client-token-0123456789", "worker": "worker-token-0123456789",
          "admin": "admin-token-0123456789"}


def status(client, ref):
    task = client.task_status(ref)
    return None if task is None else str(task.status)


def test_requeue_a_failed_task_by_ref_resets_its_counters_and_runs_it_again(
        coordinator, client, start_worker):
    start_worker("w1")
    r = client.queue_task("fail_times", pargs=["k1", 1])  # fails once, then succeeds
    with pytest.raises(Exception):  # noqa: B017 - any TaskEndedError: FAILED
        client.result(r.id, timeout=30)
    before = client.task_status(r.id)
    assert before.times_failed == 1 and before.finished_at is not None
    changed = client.requeue(r.id)
    assert (changed.count, changed.task_ids) == (1, (r.id,))
    assert client.result(r.id, timeout=30) == 2  # fail_times returns its call count
    after = client.task_status(r.id)
    assert after.times_run == 1 and after.times_failed == 0  # counters started again
    assert after.attempt == before.attempt + 1  # the fencing token kept growing
    assert len(client.runs(r.id)) == 2


def test_requeue_keep_counters_and_by_filter_touch_only_finished_tasks(coordinator, client,
                                                                       start_worker):
    start_worker("w1")
    done = [client.queue_task("add", pargs=[i, i], group_name="main").id for i in range(3)]
    failed = client.queue_task("fail").id
    waiting = client.queue_task("add", pargs=[1, 1], group_name="nobody").id
    for ref in [*done, failed]:
        client.wait(ref, timeout=30)
    again = client.requeue(status="FAILED", keep_counters=True)
    assert (again.count, again.task_ids) == (1, (failed,))
    client.wait(failed, timeout=30)
    assert client.task_status(failed).times_failed == 2  # kept, then one more
    every = client.requeue(all=True)
    assert every.count == 4 and set(every.task_ids) == {*done, failed}
    assert status(client, waiting) == "QUEUED"
    with pytest.raises(FailedPreconditionError, match="QUEUED"):
        client.requeue(waiting)
    with pytest.raises(NotFoundError):
        client.requeue(10**9)
    with pytest.raises(InvalidArgumentError):
        client.requeue()  # neither refs, nor a filter, nor all


def test_enable_a_task_queued_disabled_and_disable_a_queued_one(coordinator, client,
                                                              start_worker):
    start_worker("w1")
    off = client.queue_task("add", pargs=[2, 3], enabled=False)
    assert status(client, off.id) == "QUEUED" and "disabled" in (client.explain(off.id) or "")
    assert client.enable_tasks(off.id).count == 1
    assert client.result(off.id, timeout=30) == 5
    later = client.queue_task("add", pargs=[1, 1], group_name="nobody")
    assert client.disable_tasks(group_name="nobody").count == 1
    assert client.task_status(later.id).enabled is False
    with pytest.raises(FailedPreconditionError):
        client.enable_tasks(off.id)  # COMPLETED: no longer QUEUED


def test_update_a_queued_task_validated_as_at_queue_time(coordinator, client):
    r = client.queue_task("add", pargs=[1, 1], group_name="nobody", retry_delay=5.0,
                          stop_time=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    answer = client.update_task(r.id, priority=7, timeout=120, retry_failed=3,
                                retry_delay=None, stop_time=None)
    assert answer.errors == {}
    t = answer.task
    assert (t.priority, t.timeout, t.retry_failed, t.stop_time) == (7, 120, 3, None)
    assert t.retry_delay in (None, 0, 0.0)  # back to unset
    start = dt.datetime(2098, 5, 1, tzinfo=dt.UTC)
    moved = client.update_task(r.id, start_time=start).task
    assert moved.start_time == start and moved.next_run_time == start  # never ran: follows
    bad = client.update_task(r.id, retry_backoff=0.5)
    assert "retry_backoff" in bad.errors and bad.task is None
    assert client.task_status(r.id).retry_backoff == 1.0  # nothing changed
    assert "function_name" in client.update_task(r.id, function_name="x").errors
    assert "timeout" in client.update_task(r.id, timeout="soon").errors
    client.stop_task(r.id)
    with pytest.raises(FailedPreconditionError, match="STOPPED"):
        client.update_task(r.id, priority=1)


def test_delete_finished_tasks_with_their_runs_singly_or_by_filter(coordinator, client,
                                                                   start_worker):
    start_worker("w1")
    ids = [client.queue_task("print_lines", pargs=[3]).id for _ in range(3)]
    for ref in ids:
        client.wait(ref, timeout=30)
    waiting = client.queue_task("add", group_name="nobody").id
    with pytest.raises(FailedPreconditionError):
        client.delete_tasks(waiting)
    assert client.delete_tasks(ids[0]).count == 1
    assert client.task_status(ids[0]) is None
    with pytest.raises(NotFoundError):
        client.runs(ids[0])
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert client.delete_tasks(finished_before=now).count == 2
    assert [status(client, i) for i in ids] == [None, None, None]
    assert status(client, waiting) == "QUEUED"  # not finished: never deleted by a filter
    assert client.delete_tasks(all=True).count == 0


@pytest.fixture
def secured(start_coordinator, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("".join(f"{r} {t}\n" for r, t in TOKENS.items()))
    return start_coordinator(extra_args=["--tokens-file", str(path)],
                             access=Access(token=TOKENS["admin"]))


def test_bulk_operations_need_the_admin_role(secured):
    as_client = Scheduler(secured.address, token=TOKENS["client"])
    as_admin = Scheduler(secured.address, token=TOKENS["admin"])
    r = as_client.queue_task("add", group_name="nobody")
    as_client.stop_task(r.id)
    for bulk in (lambda s: s.requeue(status="STOPPED"), lambda s: s.delete_tasks(all=True),
                 lambda s: s.disable_tasks(group_name="nobody")):
        with pytest.raises(PermissionDeniedError, match="admin"):
            bulk(as_client)
    assert status(as_client, r.id) == "STOPPED"  # nothing changed
    assert as_client.requeue(r.id).count == 1  # by ref: the client role may
    assert as_admin.disable_tasks(group_name="nobody").count == 1
    as_client.stop_task(r.id)
    assert as_admin.delete_tasks(status="STOPPED").count == 1


def test_selectors_are_checked_and_bad_input_changes_nothing(coordinator, client):
    r = client.queue_task("add", group_name="nobody")
    with grpc.insecure_channel(coordinator.address) as channel:
        stub = client_pb2_grpc.ClientServiceStub(channel)
        cases = [
            client_pb2.TaskSelector(),  # nothing named: never "everything" by accident
            client_pb2.TaskSelector(refs=[client_pb2.TaskRef(id=r.id)], all=True),
            client_pb2.TaskSelector(refs=[client_pb2.TaskRef()]),
            client_pb2.TaskSelector(statuses=[99]),
            client_pb2.TaskSelector(group_name="a\x00b"),
            client_pb2.TaskSelector(refs=[client_pb2.TaskRef(id=i + 1) for i in range(1001)]),
        ]
        for sel in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.DeleteTasks(client_pb2.DeleteTasksRequest(select=sel), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, sel
        request = client_pb2.UpdateTaskRequest(ref=client_pb2.TaskRef(id=r.id))
        request.update_mask.paths.extend(["priority", "status"])
        with pytest.raises(grpc.RpcError) as info:
            stub.UpdateTask(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "status" in info.value.details()
        # 1,000 unknown 255-character uuids: the NOT_FOUND message names them, cut to fit the
        # 16 KiB status trailer instead of failing as RESOURCE_EXHAUSTED
        missing = [client_pb2.TaskRef(uuid=f"{i:04d}" + "é" * 251) for i in range(1000)]
        with pytest.raises(grpc.RpcError) as info:
            stub.DeleteTasks(client_pb2.DeleteTasksRequest(
                select=client_pb2.TaskSelector(refs=missing)), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "0000" in info.value.details() and "characters cut" in info.value.details()
    assert status(client, r.id) == "QUEUED"


def test_finished_tasks_are_purged_after_the_retention_in_batches(db_url, start_worker):
    from tests.support.inprocess import InProcessCoordinator

    day = 24 * 3600.0
    c = InProcessCoordinator(db_url, task_retention_s=7 * day)
    try:
        with Scheduler(c.address) as s:
            stop = c.now() + dt.timedelta(seconds=30)
            expiring = s.queue_tasks([{"function": "add", "group_name": "nobody",
                                       "stop_time": stop} for _ in range(1200)])
            keep = s.queue_task("add", group_name="nobody").id  # never ends: never purged
            c.advance(31)
            last = expiring[-1].id
            wait_until(lambda: status(s, last) == "EXPIRED", timeout=30, desc="all expired")
            c.advance(7 * day - 60)  # not yet
            assert status(s, expiring[0].id) == "EXPIRED"
            c.advance(120)
            wait_until(lambda: s.task_status(last) is None, timeout=30, desc="purged")
            assert all(s.task_status(q.id) is None for q in expiring[:5])
            assert status(s, keep) == "QUEUED"
            assert s.list_tasks(limit=None) == [s.task_status(keep)]
    finally:
        c.stop()
