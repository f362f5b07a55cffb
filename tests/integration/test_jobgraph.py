"""Dependency graphs (issue 3 point 5, contract §4) against a real coordinator and workers.

JobGraph writes a whole graph in one validated call or nothing; a task runs only once every
prerequisite is COMPLETED for good (after its last repeat); a failed prerequisite leaves its
dependents QUEUED, and status/explain/waiting_for say what they wait for. web2py's
testJobGraph ("before the tie comes the shirt") and testJobGraphFailing are here.
"""

from __future__ import annotations

import io
import json

import pytest

from taskgrid.client import JobGraph, cli
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}

#: web2py's testJobGraph: what to wear, and what must be worn before what.
CLOTHES = ["watch", "jacket", "shirt", "tie", "pants", "undershorts", "belt", "shoes", "socks"]
#: (task_parent, task_child): the parent is put on after the child.
BEFORE = [
    ("tie", "shirt"), ("belt", "shirt"), ("jacket", "tie"), ("belt", "pants"),
    ("shoes", "pants"), ("pants", "undershorts"), ("shoes", "undershorts"), ("jacket", "belt"),
    ("shoes", "socks"),
]


def wait_status(client, ref, wanted, timeout=20.0):
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    wait_until(lambda: str(client.task_status(ref).status) in wanted, timeout=timeout,
               desc=f"task {ref} in {sorted(wanted)}")
    return client.task_status(ref, output=True)


def run_cli(address, *args):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([*args, "--coordinator", address], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_job_graph_runs_in_topological_order(client, start_worker):
    job = JobGraph(client, "job_1")
    wear = {name: job.queue_task("echo", pargs=[name], task_name=name) for name in CLOTHES}
    for parent, child in BEFORE:
        job.add_deps(wear[parent], wear[child])
    layers = job.validate()
    assert job.errors == {}
    ids = {name: handle.id for name, handle in wear.items()}
    assert all(isinstance(i, int) for i in ids.values())
    # web2py's known topological sort, plus the watch (no edges) among the first layer
    assert layers == [
        {ids["watch"], ids["socks"], ids["shirt"], ids["undershorts"]},
        {ids["tie"], ids["pants"]},
        {ids["shoes"], ids["belt"]},
        {ids["jacket"]},
    ]
    assert {t.id for t in client.list_tasks()} == set(ids.values())
    # before any worker: the jacket waits for the tie and the belt
    status = client.task_status(ids["jacket"], output=True)
    assert status.task.status == "QUEUED" and status.waiting_for == (ids["tie"], ids["belt"])
    assert client.waiting_for(ids["shirt"]) == ()

    start_worker("w1")
    start_worker("w2")  # two slots, so a task released too early would overtake
    for name in CLOTHES:
        assert wait_status(client, ids[name], TERMINAL).task.status == "COMPLETED", name
    runs = {name: client.runs(ids[name]) for name in CLOTHES}
    assert all(len(r) == 1 and r[0].result == [[name], {}] for name, r in runs.items())
    for parent, child in BEFORE:
        assert runs[parent][0].start_time >= runs[child][0].stop_time, (parent, child)
    assert all(client.waiting_for(i) == () for i in ids.values())


def test_cycle_is_rejected_and_nothing_is_written(client):
    job = JobGraph(client, "loop")
    a, b, c = (job.queue_task("add", pargs=[i, i]) for i in range(3))
    job.add_deps(a, b)
    job.add_deps(b, c)
    job.add_deps(c, a)
    assert job.validate() is None
    assert "cycle" in job.errors["edges"], job.errors
    assert (a.id, b.id, c.id) == (None, None, None)
    assert client.list_tasks() == []
    with pytest.raises(RuntimeError):
        job.validate()


def test_bad_field_or_self_edge_fails_the_whole_job(client):
    job = JobGraph(client)
    a = job.queue_task("add", pargs=[1, 2])
    b = job.queue_task("add", pargs=[1, 2], timeout=0)
    job.add_deps(b, a)
    assert job.validate() is None
    assert set(job.errors) == {"tasks[1].timeout"}, job.errors
    job = JobGraph(client)
    a = job.queue_task("add", pargs=[1, 2])
    job.add_deps(a, a)
    assert job.validate() is None and job.errors, job.errors
    assert client.list_tasks() == []


def test_edge_to_an_unknown_task_is_rejected(client):
    existing = client.queue_task("add", pargs=[1, 1])
    unknown = existing.id + 1000
    job = JobGraph(client)
    t = job.queue_task("add", pargs=[2, 2])
    job.add_deps(t, existing.id)
    job.add_deps(t, unknown)
    assert job.validate() is None
    assert str(unknown) in job.errors["edges"], job.errors
    assert t.id is None
    assert [x.id for x in client.list_tasks()] == [existing.id]


def test_failed_prerequisite_leaves_its_dependent_queued(client, coordinator, start_worker):
    job = JobGraph(client)
    pre = job.queue_task("fail", pargs=["prerequisite fails"])
    dep = job.queue_task("add", pargs=[1, 2])
    job.add_deps(dep, pre)
    assert job.validate() == [{pre.id}, {dep.id}]
    start_worker("w1")  # one slot
    assert wait_status(client, pre.id, TERMINAL).task.status == "FAILED"
    # Queued later at the same priority: had `dep` been leasable, the worker would take it first.
    sentinel = client.queue_task("add", pargs=[0, 0])
    assert wait_status(client, sentinel.id, TERMINAL).task.status == "COMPLETED"

    status = client.task_status(dep.id, output=True)
    assert status.task.status == "QUEUED" and status.run is None
    assert status.waiting_for == (pre.id,) and client.waiting_for(dep.id) == (pre.id,)
    assert str(pre.id) in (client.explain(dep.id) or "")
    code, out, _ = run_cli(coordinator.address, "status", str(dep.id))
    assert code == 0 and f"waiting for: {pre.id}" in out
    code, out, _ = run_cli(coordinator.address, "status", str(dep.id), "--json")
    assert code == 0 and json.loads(out)["waiting_for"] == [pre.id]


def test_repeating_prerequisite_releases_after_its_last_repeat(client, start_worker):
    pre = client.queue_task("sleep_for", pargs=[0.2], repeats=2, period=0)
    job = JobGraph(client)
    dep = job.queue_task("add", pargs=[1, 1])
    job.add_deps(dep, pre.id)  # a task that exists already
    assert job.validate() == [{dep.id}]
    assert client.waiting_for(dep.id) == (pre.id,)
    start_worker("w1")
    start_worker("w2")  # a free slot while the prerequisite repeats
    assert wait_status(client, dep.id, TERMINAL).task.status == "COMPLETED"
    pre_runs = client.runs(pre.id)
    assert [r.status for r in pre_runs] == ["COMPLETED", "COMPLETED"]
    assert client.task_status(pre.id).times_run == 2
    (dep_run,) = client.runs(dep.id)
    assert dep_run.start_time >= pre_runs[-1].stop_time


def test_cli_queue_after_waits_for_existing_tasks(client, coordinator):
    pre = client.queue_task("add", pargs=[1, 1])  # no worker: stays QUEUED
    code, out, err = run_cli(coordinator.address, "queue", "add", "[2, 2]", "--after",
                             str(pre.id), "--retry-delay", "1.5", "--priority", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["errors"] == {} and doc["waiting_for"] == [pre.id]
    task = client.task_status(doc["id"])
    assert task.args == [2, 2] and task.retry_delay == 1.5 and task.priority == 3
    assert client.waiting_for(doc["id"]) == (pre.id,)

    code, out, err = run_cli(coordinator.address, "queue", "add", "--after", str(pre.id + 999))
    assert code == 2 and out == "" and "edges" in err and str(pre.id + 999) in err
    code, out, err = run_cli(coordinator.address, "queue", "add", "--timeout", "0",
                             "--after", str(pre.id))
    assert code == 2 and "not queued: timeout:" in err and "tasks[0]" not in err
    assert len(client.list_tasks()) == 2
