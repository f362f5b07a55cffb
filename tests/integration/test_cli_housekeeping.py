"""`taskgrid wait`, `update`, `requeue`, `enable-task`, `disable-task` and `delete`, run as real
subprocesses against a real coordinator and real workers: what they print, the rows they
touch, and their exit codes (docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
CLI_TIMEOUT_S = 40.0
WAIT_S = "30"  # --timeout of the waits expected to end


def taskgrid(address, *args, env=None):
    """Run `python -m taskgrid ARGS --coordinator ADDRESS`; no traceback of its own.

    Only `wait` prints one on stdout: the failed task's, under ``traceback:``.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "taskgrid", *args, "--coordinator", address],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    if args[0] != "wait":
        assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def run_json(address, *args, code=0):
    proc = taskgrid(address, *args, "--json")
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def fields(text, indent=""):
    """`key: value` lines at this indent (not the blocks below them), stripped."""
    pairs = (line.split(":", 1) for line in text.splitlines()
             if ":" in line and line.startswith(indent) and line[len(indent):][:1] != " ")
    return {k.strip(): v.strip() for k, v in pairs}


def ended(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to end")
    return client.task_status(ref)


def test_a_failed_task_requeued_by_status_then_waited(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    flaky = client.queue_task("fail_times", pargs=["cli-requeue", 1])  # fails once, then works
    fine = client.queue_task("add", pargs=[1, 1])

    proc = taskgrid(addr, "wait", str(flaky.id), "--timeout", WAIT_S)
    assert proc.returncode == 10, proc  # FAILED
    shown = fields(proc.stdout)
    assert shown["status"] == "FAILED" and "failing call 1 of 1" in shown["error"]
    assert "  traceback:" in proc.stdout.splitlines()
    assert taskgrid(addr, "wait", str(fine.id), "--timeout", WAIT_S).returncode == 0

    proc = taskgrid(addr, "requeue", "--status", "FAILED")
    assert proc.returncode == 0, proc
    assert proc.stdout == f"requeued 1 task: {flaky.id}\n"  # not the COMPLETED one

    proc = taskgrid(addr, "wait", flaky.uuid, "--timeout", WAIT_S)
    assert proc.returncode == 0, proc
    shown = fields(proc.stdout)
    assert shown["status"] == "COMPLETED" and shown["result"] == "2"  # the second call
    assert shown["times failed"] == "0"  # the counters started again

    doc = run_json(addr, "wait", str(flaky.id))
    assert doc["task"]["status"] == "COMPLETED" and doc["result"] == 2 and doc["exit_code"] == 0


def test_requeue_keep_counters_and_json(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    r = client.queue_task("add", pargs=[2, 3])
    assert ended(client, r.id).status == "COMPLETED"
    doc = run_json(addr, "requeue", str(r.id), "--keep-counters")
    assert doc == {"count": 1, "task_ids": [r.id]}
    wait_until(lambda: client.task_status(r.id).times_run == 2, timeout=20.0,
               desc="the requeued task to run again")
    assert ended(client, r.id).times_run == 2  # kept, and one more run


@pytest.mark.parametrize(("queue", "code", "status"), [
    ({"function": "sleep_for", "pargs": [30], "timeout": 1}, 11, "TIMEOUT"),
    ({"function": "nobody_offers_this", "stop_time": "soon"}, 13, "EXPIRED"),
])
def test_wait_exit_code_says_how_the_task_ended(coordinator, client, start_worker, queue,
                                                code, status):
    start_worker("w1")
    kwargs = dict(queue)
    if kwargs.get("stop_time") == "soon":
        kwargs["stop_time"] = datetime.now(UTC) + timedelta(seconds=1)
    r = client.queue_task(kwargs.pop("function"), **kwargs)
    proc = taskgrid(coordinator.address, "wait", str(r.id), "--timeout", WAIT_S)
    assert proc.returncode == code, proc
    assert fields(proc.stdout)["status"] == status


def test_wait_for_a_stopped_task_a_missing_one_and_one_that_does_not_end(coordinator, client):
    addr = coordinator.address
    r = client.queue_task("nobody_offers_this")
    proc = taskgrid(addr, "wait", str(r.id), "--timeout", "0.5")
    assert proc.returncode == 14 and proc.stdout == "", proc  # still QUEUED
    assert proc.stderr.count("\n") == 1 and "has not ended" in proc.stderr
    assert "QUEUED" in proc.stderr
    assert client.stop_task(r.id)
    proc = taskgrid(addr, "wait", str(r.id))
    assert proc.returncode == 12 and fields(proc.stdout)["status"] == "STOPPED", proc
    proc = taskgrid(addr, "wait", "999999", "--timeout", "1")
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "999999" in proc.stderr


def test_update_changes_a_queued_task(coordinator, client, start_worker):
    addr = coordinator.address
    r = client.queue_task("add", pargs=[4, 5], retry_delay=2.5, priority=1,
                          stop_time=datetime.now(UTC) + timedelta(days=1))
    proc = taskgrid(addr, "update", str(r.id), "--priority", "7", "--retry-delay", "unset",
                    "--stop-time", "none", "--timeout", "12", "--prevent-drift")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines()[0] == f"task {r.id} updated:"
    shown = fields(proc.stdout, indent="  ")
    assert shown["priority"] == "7" and shown["retry_delay"] == "unset"
    assert shown["stop_time"] == "-" and shown["timeout"] == "12"
    assert shown["prevent_drift"] == "yes"
    task = client.task_status(r.id)
    assert (task.priority, task.retry_delay, task.stop_time, task.timeout) == (7, 0.0, None, 12)

    proc = taskgrid(addr, "update", str(r.id), "--timeout", "0", "--retry-jitter", "3")
    assert proc.returncode == 2 and proc.stdout == "", proc
    errors = proc.stderr.splitlines()
    assert any(line.startswith("taskgrid: not updated: timeout: ") for line in errors), errors
    assert any(line.startswith("taskgrid: not updated: retry_jitter: ") for line in errors)
    assert client.task_status(r.id).timeout == 12  # nothing changed

    doc = run_json(addr, "update", str(r.id), "--start-time", "2030-01-02T03:04:05")
    assert doc["errors"] == {} and doc["task"]["start_time"] == "2030-01-02T03:04:05+00:00"

    assert taskgrid(addr, "update", str(r.id)).returncode == 2  # nothing to change
    assert taskgrid(addr, "update", "999999", "--priority", "1").returncode == 3
    taskgrid(addr, "update", str(r.id), "--start-time", "unset")
    start_worker("w1")
    assert ended(client, r.id).status == "COMPLETED"
    proc = taskgrid(addr, "update", str(r.id), "--priority", "1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc  # not QUEUED any more


def test_disable_task_and_enable_task(coordinator, client, start_worker):
    addr = coordinator.address
    a = client.queue_task("add", pargs=[1, 2])
    b = client.queue_task("add", pargs=[3, 4])
    other = client.queue_task("echo", pargs=["x"])
    proc = taskgrid(addr, "disable-task", "--function", "add")
    assert proc.returncode == 0 and proc.stdout.startswith("disabled 2 tasks: "), proc
    assert set(proc.stdout.split(": ", 1)[1].strip().split(", ")) == {str(a.id), str(b.id)}
    assert not client.task_status(a.id).enabled and client.task_status(other.id).enabled
    start_worker("w1")
    assert ended(client, other.id).status == "COMPLETED"
    assert client.task_status(a.id).status == "QUEUED"  # disabled: never leased
    assert run_json(addr, "enable-task", str(a.id)) == {"count": 1, "task_ids": [a.id]}
    proc = taskgrid(addr, "wait", str(a.id), "--timeout", WAIT_S)
    assert proc.returncode == 0 and fields(proc.stdout)["result"] == "3", proc
    assert client.task_status(b.id).status == "QUEUED"
    proc = taskgrid(addr, "enable-task", "--all")
    assert proc.returncode == 0 and proc.stdout.startswith("enabled 1 task"), proc
    assert ended(client, b.id).status == "COMPLETED"


def test_delete(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    done = [client.queue_task("add", pargs=[i, i]) for i in range(3)]
    for r in done:
        ended(client, r.id)
    waiting = client.queue_task("nobody_offers_this")

    proc = taskgrid(addr, "delete")
    assert proc.returncode == 2 and proc.stdout == "" and "--all" in proc.stderr, proc
    proc = taskgrid(addr, "delete", str(waiting.id))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc  # it has not ended
    proc = taskgrid(addr, "delete", "--status", "COMPLETED", "--older-than", "1d")
    assert proc.returncode == 0 and proc.stdout == "deleted 0 tasks\n", proc

    proc = taskgrid(addr, "delete", str(done[0].id))
    assert proc.returncode == 0 and proc.stdout == f"deleted 1 task: {done[0].id}\n", proc
    assert taskgrid(addr, "status", str(done[0].id)).returncode == 3
    doc = run_json(addr, "delete", "--finished-before",
                   (datetime.now(UTC) + timedelta(seconds=5)).isoformat())
    assert doc["count"] == 2 and sorted(doc["task_ids"]) == sorted(r.id for r in done[1:])
    assert [t.id for t in client.list_tasks()] == [waiting.id]
    assert taskgrid(addr, "delete", "999999").returncode == 3


def test_bulk_filters_need_the_admin_role(start_coordinator, tmp_path):
    tokens = {"client": "client-token-0123456789", "admin": "admin-token-0123456789"}
    path = tmp_path / "tokens"
    path.write_text("".join(f"{role} {token}\n" for role, token in tokens.items()))
    coord = start_coordinator(extra_args=["--tokens-file", str(path)])
    as_client = {"TASKGRID_TOKEN": tokens["client"]}
    as_admin = {"TASKGRID_TOKEN": tokens["admin"]}
    proc = taskgrid(coord.address, "queue", "nobody_offers_this", "--json", env=as_client)
    task_id = json.loads(proc.stdout)["id"]

    proc = taskgrid(coord.address, "disable-task", "--all", env=as_client)
    assert proc.returncode == 5 and "permission denied" in proc.stderr, proc
    proc = taskgrid(coord.address, "disable-task", str(task_id), env=as_client)  # by ref: fine
    assert proc.returncode == 0 and proc.stdout == f"disabled 1 task: {task_id}\n", proc
    proc = taskgrid(coord.address, "enable-task", "--all", env=as_admin)
    assert proc.returncode == 0 and proc.stdout == f"enabled 1 task: {task_id}\n", proc
