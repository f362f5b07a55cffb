"""Waiting for results: WaitTask, Scheduler.wait/result, AsyncScheduler, typed errors.

Real coordinators (a process, or in-process on a ManualClock where the test must
read the store's transaction count) and real worker processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time

import grpc
import pytest

from taskgrid.client import (
    AsyncScheduler,
    NotFoundError,
    Scheduler,
    TaskEndedError,
    TaskExpiredError,
    TaskFailedError,
    TaskStoppedError,
    TaskTimedOutError,
    WaitTimeoutError,
)
from taskgrid.coordinator.cluster import NODE_BEAT_S
from taskgrid.coordinator.reaper import RECONCILE_INTERVAL_S
from taskgrid.v1 import client_pb2, client_pb2_grpc
from tests.support.wait import wait_until


def test_wait_returns_the_final_record_once_the_task_ends(coordinator, client, start_worker):
    r = client.queue_task("add", pargs=[1, 2])
    answer: dict[str, object] = {}
    waiter = threading.Thread(target=lambda: answer.update(rec=client.wait(r.id, timeout=60)))
    waiter.start()
    start_worker("w1")  # the task can only end once a worker exists
    waiter.join(60)
    record = answer["rec"]
    assert str(record.task.status) == "COMPLETED"
    assert record.result == 3 and record.run is not None and record.run.run_result == "3"
    assert client.result(r.uuid, timeout=5) == 3  # by uuid; already ended: at once


def test_result_raises_a_typed_error_for_each_way_a_task_ends_badly(coordinator, client,
                                                                     start_worker):
    start_worker("w1")
    failed = client.queue_task("fail", pargs=["kaput"])
    timed_out = client.queue_task("sleep_for", pargs=[30], timeout=1)
    stopped = client.queue_task("add", pargs=[1, 1], group_name="nobody")
    expired = client.queue_task("add", pargs=[1, 1], group_name="nobody",
                                stop_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert client.stop_task(stopped.id)
    cases = [(failed, TaskFailedError, "FAILED"), (timed_out, TaskTimedOutError, "TIMEOUT"),
             (stopped, TaskStoppedError, "STOPPED"), (expired, TaskExpiredError, "EXPIRED")]
    for queued, error, status in cases:
        with pytest.raises(error) as info:
            client.result(queued.id, timeout=30)
        assert isinstance(info.value, TaskEndedError)
        assert str(info.value.record.task.status) == status
    with pytest.raises(TaskFailedError) as info:
        client.result(failed.id)
    assert "kaput" in info.value.record.run.traceback and "kaput" in str(info.value)


def test_wait_times_out_with_a_typed_error_and_the_task_unchanged(coordinator, client):
    r = client.queue_task("add", pargs=[1, 2], group_name="nobody")
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as info:
        client.wait(r.id, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 10
    assert isinstance(info.value, TimeoutError) and "QUEUED" in str(info.value)
    with pytest.raises(WaitTimeoutError):
        client.wait(r.id, timeout=0)  # a zero timeout only looks
    assert str(client.task_status(r.id).status) == "QUEUED"


def test_wait_task_rpc_answers_not_done_at_its_timeout_and_checks_its_input(coordinator):
    with grpc.insecure_channel(coordinator.address) as channel:
        stub = client_pb2_grpc.ClientServiceStub(channel)
        queued = Scheduler(coordinator.address).queue_task("add", group_name="nobody")
        ref = client_pb2.TaskRef(id=queued.id)
        reply = stub.WaitTask(client_pb2.WaitTaskRequest(ref=ref, timeout=0.2), timeout=10)
        assert not reply.done and reply.task.id == queued.id and not reply.HasField("run")
        # no timeout: the call's own deadline bounds the wait, and it answers before it
        reply = stub.WaitTask(client_pb2.WaitTaskRequest(ref=ref), timeout=1.0)
        assert not reply.done
        for bad in (-1.0, 3601.0, float("nan")):
            with pytest.raises(grpc.RpcError) as info:
                stub.WaitTask(client_pb2.WaitTaskRequest(ref=ref, timeout=bad), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.WaitTask(client_pb2.WaitTaskRequest(ref=client_pb2.TaskRef(id=10**9)),
                          timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with Scheduler(coordinator.address) as s, pytest.raises(NotFoundError):
        s.wait(10**9, timeout=1)


def test_a_thousand_waiters_cost_no_database_work_while_they_wait(clocked, start_worker):
    """1,000 concurrent AsyncScheduler waits on 10 tasks: the store is idle meanwhile."""
    rt = clocked.coordinator.runtime
    with Scheduler(clocked.address) as s:
        ids = [s.queue_task("add", pargs=[i, i], group_name="later").id for i in range(10)]

    async def main() -> tuple[int, int, list[object]]:
        async with AsyncScheduler(clocked.address) as a:
            # Phase 1: every wait times out after 8 s; nothing may be read meanwhile.
            first = [asyncio.ensure_future(a.wait(ids[i % 10], timeout=8)) for i in range(1000)]
            await asyncio.to_thread(wait_until, lambda: rt.feed.subscriptions == 1000,
                                    ignore=(RuntimeError,), timeout=30, desc="1,000 waits")
            parked, since = rt.store.transactions, time.monotonic()
            outcomes = await asyncio.gather(*first, return_exceptions=True)
            assert all(isinstance(o, WaitTimeoutError) for o in outcomes), outcomes[:3]
            idle = rt.store.transactions - parked
            if not rt.store.is_sqlite:
                # PostgreSQL's liveness, whatever the waiters: the node beat's two
                # transactions a second and the leader's reconcile pass every 3 s
                span = time.monotonic() - since
                idle -= min(idle, 2 * math.ceil(span / NODE_BEAT_S)
                            + math.ceil(span / RECONCILE_INTERVAL_S) + 2)
            # Phase 2: 1,000 waits answered the moment a worker runs their tasks.
            second = [asyncio.ensure_future(a.result(ids[i % 10], timeout=60))
                      for i in range(1000)]
            await asyncio.to_thread(wait_until, lambda: rt.feed.subscriptions == 1000,
                                    ignore=(RuntimeError,), timeout=30, desc="1,000 again")
            await asyncio.to_thread(start_worker, "w1", coordinator=clocked.address,
                                    groups=["later"])
            results = await asyncio.gather(*second)
            return idle, rt.feed.subscriptions, results

    idle, left, results = asyncio.run(main())
    assert idle == 0, f"{idle} transactions while 1,000 waiters waited"
    assert left == 0
    assert sorted(results) == sorted(2 * (i % 10) for i in range(1000))
