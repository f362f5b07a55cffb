"""The Python client API (contract §4) against a real coordinator and real workers.

queue_task's error contract, task references, task_status/runs/watch shapes, stop_task, and
the worker commands (resume, disable, terminate, kill) aimed by worker name and by group.
"""

from __future__ import annotations

import pytest

from taskgrid.client.records import (
    OutputChunk,
    RunRecord,
    TaskRecord,
    TaskStatusResult,
    WorkerRecord,
)
from tests.support import sample_tasks
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
#: The order a task's status moves through on a successful single run.
LIFECYCLE = ["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED"]


def finished(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to finish")
    return client.task_status(ref, output=True)


def statuses(client, include_dead=False):
    return {name: str(w.status) for name, w in client.get_workers(include_dead).items()}


def start_workers(start_worker, *specs):
    """Start several workers at once (registration awaited after all are spawned)."""
    workers = [start_worker(name, groups=groups, ready=False) for name, groups in specs]
    for worker in workers:
        worker.wait_registered()
    return workers


# -- queue_task's contract ----------------------------------------------------------------------


#: (queue_task arguments, the field its error names): each is refused, none raises.
BAD_CALLS = [
    ({"pargs": {"a": 1}}, "args"),
    ({"pvars": [1, 2]}, "vars"),
    ({"pargs": [1, 2], "timeout": "abc"}, "timeout"),
    ({"pargs": [1, 2], "timeout": 0}, "timeout"),
    ({"pargs": [1, 2], "no_such_field": 1}, "no_such_field"),
    ({"pargs": [1, 2], "status": "COMPLETED"}, "status"),
    ({"pargs": [1, 2], "times_run": 3}, "times_run"),
    ({"pargs": [object()]}, "args"),
    ({"pargs": [1, 2], "group_name": 5}, "group_name"),
]


def test_queue_task_returns_errors_never_raises(client):
    for kwargs, field in BAD_CALLS:
        r = client.queue_task("add", **kwargs)
        assert r.id is None and r.uuid is None, kwargs
        assert r.errors.get(field), (kwargs, r.errors)
    assert client.list_tasks() == []


def test_queue_task_duplicate_uuid_and_several_errors(client):
    r = client.queue_task("add", pargs=[1], timeout="abc", bogus=True, status="QUEUED")
    assert r.id is None and set(r.errors) == {"timeout", "bogus", "status"}, r.errors
    assert client.list_tasks() == []

    first = client.queue_task("add", pargs=[1, 2], uuid="dup-uuid")
    assert first.errors == {} and first.uuid == "dup-uuid" and isinstance(first.id, int)
    again = client.queue_task("echo", uuid="dup-uuid")
    assert again.id is None and again.uuid is None and "uuid" in again.errors
    assert [t.id for t in client.list_tasks()] == [first.id]
    assert client.task_status("dup-uuid").function_name == "add"


def test_task_refs_and_callable_function(client):
    r = client.queue_task(sample_tasks.add, pargs=[1, 2], task_name="by object")
    assert r.errors == {}
    by_id = client.task_status(r.id)
    assert isinstance(by_id, TaskRecord)
    assert by_id.function_name == "add" and by_id.task_name == "by object"
    assert by_id.args == [1, 2] and by_id.status == "QUEUED"
    by_uuid = client.task_status(r.uuid)
    assert by_uuid.id == r.id and by_uuid.uuid == r.uuid
    assert client.task_status(r.id + 1000) is None
    assert client.task_status("no-such-uuid") is None
    assert client.task_status(r.id + 1000, output=True) is None
    with pytest.raises(TypeError):
        client.task_status(float(r.id))
    with pytest.raises(TypeError):
        client.stop_task(1.0)

    st = client.task_status(r.id, output=True)
    assert isinstance(st, TaskStatusResult)
    assert st.task.id == r.id and st.run is None and st.result is None
    assert client.runs(r.id) == []


def test_stop_task_queued_is_true_then_false(client):
    r = client.queue_task("nobody_offers_this")
    assert client.stop_task(r.uuid) is True
    task = client.task_status(r.id)
    assert task.status == "STOPPED" and task.enabled is False
    assert client.stop_task(r.id) is False  # already ended
    assert client.stop_task(99999) is False  # no such task


# -- with a worker --------------------------------------------------------------------------


def test_status_runs_watch_and_stop_with_a_worker(client, start_worker, state_dir):
    start_worker("w1", extra_args=["--concurrency", "2"])
    r = client.queue_task("add", pargs=[2, 3])
    events = list(client.watch(r.id))
    assert events and all(isinstance(e, TaskRecord | OutputChunk) for e in events)
    snapshots = [e for e in events if isinstance(e, TaskRecord)]
    assert snapshots and all(s.id == r.id for s in snapshots)
    seen = [str(s.status) for s in snapshots]
    assert seen[-1] == "COMPLETED", seen
    assert [LIFECYCLE.index(s) for s in seen] == sorted(LIFECYCLE.index(s) for s in seen), seen

    st = client.task_status(r.id, output=True)
    assert isinstance(st, TaskStatusResult) and isinstance(st.run, RunRecord)
    assert st.task.status == "COMPLETED" and st.result == 5
    assert st.run.task_id == r.id and st.run.status == "COMPLETED" and st.run.result == 5
    assert client.stop_task(r.id) is False
    assert client.task_status(r.id).status == "COMPLETED"

    # watching a task that already ended: its final snapshot, then the stream ends
    again = [e for e in client.watch(r.uuid) if isinstance(e, TaskRecord)]
    assert str(again[-1].status) == "COMPLETED"

    retried = client.queue_task("fail_times", pargs=["api-runs", 2], retry_failed=2, period=0)
    st = finished(client, retried.id)
    assert st.task.status == "COMPLETED" and st.result == 3
    assert st.task.times_run == 1 and st.task.times_failed == 0
    runs = client.runs(retried.uuid)
    assert [str(run.status) for run in runs] == ["FAILED", "FAILED", "COMPLETED"]
    assert [run.attempt for run in runs] == sorted(run.attempt for run in runs)
    assert len({run.attempt for run in runs}) == 3
    assert [run.id for run in runs] == sorted(run.id for run in runs)
    assert all(a.start_time <= b.start_time for a, b in zip(runs, runs[1:], strict=False))
    assert "failing call 1 of 2" in runs[0].traceback and runs[-1].id == st.run.id


def test_queue_tasks_many_in_one_call(client, start_worker):
    start_worker("w1", extra_args=["--concurrency", "4"])
    results = client.queue_tasks(
        [{"function": "add", "pargs": [i, i], "task_name": f"t{i}"} for i in range(50)]
    )
    assert len(results) == 50 and all(r.errors == {} and r.id for r in results)
    assert len({r.id for r in results}) == 50 and len({r.uuid for r in results}) == 50

    def all_done():
        return len(client.list_tasks(status="COMPLETED", limit=None)) == 50

    wait_until(all_done, timeout=30, interval=0.1, desc="50 tasks COMPLETED")
    for i, r in enumerate(results):
        if i % 10 == 0:
            assert client.task_status(r.id, output=True).result == 2 * i

    # all or nothing: one bad entry queues none of them
    bad = client.queue_tasks([{"function": "add", "pargs": [1, 1]},
                              {"function": "add", "timeout": "x"}])
    assert [r.id for r in bad] == [None, None] and "timeout" in bad[1].errors
    assert len(client.list_tasks(limit=None)) == 50


# -- worker commands --------------------------------------------------------------------------


def test_worker_commands_by_name_only_hit_that_worker(client, start_worker):
    wa, wb = start_workers(start_worker, ("wa", ["main"]), ("wb", ["main"]))
    workers = client.get_workers()
    assert set(workers) == {"wa", "wb"}
    assert all(isinstance(w, WorkerRecord) and w.alive for w in workers.values())
    assert workers["wa"].worker_name == "wa" and "sleep_for" in workers["wa"].functions

    assert client.disable(worker_name="wa") == ["wa"]
    assert statuses(client) == {"wa": "DISABLED", "wb": "ACTIVE"}
    assert client.resume(worker_name="wa") == ["wa"]
    assert statuses(client) == {"wa": "ACTIVE", "wb": "ACTIVE"}
    assert client.disable(worker_name="nobody") == []

    assert client.kill(worker_name="wa") == ["wa"]
    assert wa.wait(10) == 0
    assert wb.is_alive()
    # an exited worker stays listed until its heartbeats are missed: ask for dead ones too
    assert statuses(client, include_dead=True) == {"wa": "KILL", "wb": "ACTIVE"}
    # and wb still works
    assert finished(client, client.queue_task("add", pargs=[1, 1]).id).result == 2
    assert wb.is_alive() and statuses(client, include_dead=True)["wb"] == "ACTIVE"


def test_terminate_lets_running_task_complete_and_is_never_resumed(client, start_worker):
    wt, wo = start_workers(start_worker, ("wt", ["slow"]), ("wo", ["main"]))
    r = client.queue_task("sleep_for", pargs=[2], group_name="slow")
    wait_until(lambda: client.task_status(r.id).status == "RUNNING", timeout=10,
               desc="sleep_for RUNNING")
    assert client.terminate(worker_name="wt") == ["wt"]
    assert statuses(client) == {"wt": "TERMINATE", "wo": "ACTIVE"}
    # resume never turns a TERMINATE worker back to ACTIVE
    assert client.resume(worker_name="wt") == []
    assert "wt" not in client.resume()
    assert client.disable(worker_name="wt") == []
    assert statuses(client)["wt"] == "TERMINATE"

    st = finished(client, r.id)
    assert st.task.status == "COMPLETED" and st.result == 2 and st.run.worker_name == "wt"
    assert wt.wait(10) == 0
    assert wo.is_alive()
    assert statuses(client, include_dead=True) == {"wt": "TERMINATE", "wo": "ACTIVE"}


def test_disable_and_resume_by_group(client, start_worker):
    start_workers(start_worker, ("wa", ["ga"]), ("wb", ["gb"]))
    workers = client.get_workers()
    assert workers["wa"].group_names == ("ga",) and workers["wb"].group_names == ("gb",)

    assert client.disable(group_names="ga") == ["wa"]
    assert statuses(client) == {"wa": "DISABLED", "wb": "ACTIVE"}
    ta = client.queue_task("add", pargs=[1, 2], group_name="ga")
    tb = client.queue_task("add", pargs=[3, 4], group_name="gb")
    assert finished(client, tb.id).result == 7
    # wa heartbeats while disabled; its group's task is still waiting
    wait_until(lambda: client.get_workers()["wa"].last_heartbeat
               > workers["wa"].last_heartbeat, timeout=5, desc="a heartbeat of wa")
    assert client.task_status(ta.id).status == "QUEUED"

    assert client.resume(group_names=["ga"]) == ["wa"]
    assert statuses(client) == {"wa": "ACTIVE", "wb": "ACTIVE"}
    st = finished(client, ta.id)
    assert st.result == 3 and st.run.worker_name == "wa"
