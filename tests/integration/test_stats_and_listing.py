"""The read calls dashboards use: GetStats, GetJob, and ListTasks' filters and paging."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from taskgrid.client import JobGraph, NotFoundError
from taskgrid.v1 import client_pb2, client_pb2_grpc
from tests.support.wait import wait_until


def test_stats_count_by_status_and_group_and_the_last_hour(coordinator, client, start_worker):
    start_worker("w1")
    done = [client.queue_task("add", pargs=[i, i]).id for i in range(3)]
    failed = client.queue_task("fail").id
    later = client.queue_task("add", group_name="nobody").id
    for ref in [*done, failed]:
        client.wait(ref, timeout=30)

    def settled():
        s = client.stats()  # shared for 2 s: look again until it shows the ends
        by = {(str(c.status), c.group_name): c.count for c in s.counts}
        return s if by.get(("COMPLETED", "main")) == 3 else None
    stats = wait_until(settled, timeout=15, desc="stats showing the ends")
    by = {(str(c.status), c.group_name): c.count for c in stats.counts}
    assert by == {("COMPLETED", "main"): 3, ("FAILED", "main"): 1, ("QUEUED", "nobody"): 1}
    assert len(stats.last_hour) == 60 and stats.last_hour[-1].minute <= stats.computed_at
    assert sum(m.completed for m in stats.last_hour) == 3
    assert sum(m.failed for m in stats.last_hour) == 1
    assert stats.oldest_due is not None and stats.oldest_due.id == later


def test_list_tasks_by_uuid_time_range_order_and_pages(coordinator, client):
    ids = [client.queue_task("add", group_name="nobody").id for _ in range(7)]
    first = client.task_status(ids[0])
    assert [t.id for t in client.list_tasks(uuid=first.uuid)] == [ids[0]]
    assert [t.id for t in client.list_tasks(oldest_first=True, limit=3)] == ids[:3]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert client.list_tasks(created_after=future) == []
    assert len(client.list_tasks(created_before=future)) == 7
    seen, token = [], ""
    while True:
        page = client.list_tasks_page(page_size=3, page_token=token)
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    page = client.list_tasks_page(page_size=3, oldest_first=True)
    assert [t.id for t in page.tasks] == ids[:3]
    rest = client.list_tasks_page(page_size=10, oldest_first=True,
                                  page_token=page.next_page_token)
    assert [t.id for t in rest.tasks] == ids[3:] and rest.next_page_token == ""


def test_get_job_by_name_or_by_task(coordinator, client):
    job = JobGraph(client, "nightly")
    extract = job.queue_task("add", pargs=[1, 1], group_name="nobody")
    load = job.queue_task("add", pargs=[2, 2], group_name="nobody")
    job.add_deps(load, extract)
    assert job.validate() is not None
    view = client.get_job("nightly")
    assert view.job_name == "nightly"
    assert [t.id for t in view.tasks] == sorted([extract.id, load.id])
    assert view.edges == ((load.id, extract.id, False),)
    assert client.get_job(task=extract.id) == view
    with pytest.raises(NotFoundError):
        client.get_job("no-such-job")
    alone = client.queue_task("add", group_name="nobody").id
    with pytest.raises(NotFoundError):
        client.get_job(task=alone)
    with grpc.insecure_channel(coordinator.address) as channel:
        stub = client_pb2_grpc.ClientServiceStub(channel)
        for bad in (client_pb2.GetJobRequest(), client_pb2.GetJobRequest(job_name=""),
                    client_pb2.GetJobRequest(job_name="x" * 65536)):
            with pytest.raises(grpc.RpcError) as info:
                stub.GetJob(bad, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_time = client_pb2.ListTasksRequest()
        bad_time.created_after.seconds = 10**13  # past year 9999
        with pytest.raises(grpc.RpcError) as info:
            stub.ListTasks(bad_time, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
