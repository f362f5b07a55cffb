"""The `taskgrid` client command line, run as a real subprocess against a real coordinator.

Checks what a user or a script sees: stdout (text or `--json`), the one-line messages on
stderr, and the exit codes (0 ok, 1 error, 2 invalid, 3 not found, 4 unavailable).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
CLI_TIMEOUT_S = 20.0


def run_cli(address, *args, timeout=CLI_TIMEOUT_S):
    """Run `python -m taskgrid ARGS --coordinator ADDRESS`; never shows a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "taskgrid", *args, "--coordinator", address],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def run_json(address, *args):
    """Run a `--json` command that must succeed; return its decoded document."""
    proc = run_cli(address, *args, "--json")
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def finished(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to finish")
    return client.task_status(ref)


def worker_doc(address, name):
    return next((w for w in run_json(address, "workers") if w["worker_name"] == name), None)


def test_queue_rejects_bad_values_with_exit_2(coordinator, client):
    addr = coordinator.address
    proc = run_cli(addr, "queue", "add", "[1, 2]", "--timeout", "0")
    assert proc.returncode == 2, proc
    assert "timeout" in proc.stderr and "greater than or equal to 1" in proc.stderr
    assert proc.stdout == ""

    proc = run_cli(addr, "queue", "add", '{"a": 1}')
    assert proc.returncode == 2, proc
    assert "args" in proc.stderr and "list" in proc.stderr

    proc = run_cli(addr, "queue", "add", "[1", "--vars", "[]")
    assert proc.returncode == 2, proc
    assert "args" in proc.stderr and "vars" in proc.stderr  # every field error is printed

    proc = run_cli(addr, "queue", "echo", "--vars", "[1]", "--json")
    assert proc.returncode == 2, proc
    doc = json.loads(proc.stdout)
    assert doc["id"] is None and doc["uuid"] is None and set(doc["errors"]) == {"vars"}

    assert client.list_tasks() == []
    assert run_json(addr, "tasks")["tasks"] == []


def test_queue_json_then_status_and_tasks(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    doc = run_json(addr, "queue", "add", "[1, 2]")
    assert isinstance(doc["id"], int) and doc["id"] > 0
    assert isinstance(doc["uuid"], str) and doc["uuid"] and doc["errors"] == {}
    assert finished(client, doc["id"]).status == "COMPLETED"

    status = run_json(addr, "status", str(doc["id"]))
    assert status["task"]["id"] == doc["id"] and status["task"]["uuid"] == doc["uuid"]
    assert status["task"]["status"] == "COMPLETED" and status["task"]["times_run"] == 1
    assert status["result"] == 3 and status["run"]["run_result"] == "3"
    assert status["run"]["worker_name"] == "w1" and status["waiting_reason"] is None

    printed = client.queue_task("print_lines", pargs=[2])
    assert finished(client, printed.id).status == "COMPLETED"
    proc = run_cli(addr, "status", printed.uuid, "--output")
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert any(line.split() == ["status:", "COMPLETED"] for line in lines), proc.stdout
    assert any(line.split() == ["result:", "2"] for line in lines), proc.stdout
    assert "    line 0" in lines and "    line 1" in lines, proc.stdout

    listed = run_json(addr, "tasks")["tasks"]
    assert [t["id"] for t in listed] == [printed.id, doc["id"]]  # newest first
    assert [t["function_name"] for t in listed] == ["print_lines", "add"]
    only_add = run_json(addr, "tasks", "--function", "add")["tasks"]
    assert [t["id"] for t in only_add] == [doc["id"]]


def test_status_of_unknown_task_exits_3(coordinator):
    for ref in ("99999", "no-such-uuid"):
        proc = run_cli(coordinator.address, "status", ref)
        assert proc.returncode == 3, proc
        assert proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and "not found" in proc.stderr


def test_tail_follows_output_and_exit_code(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    r = client.queue_task("print_lines", pargs=[3, 0.2])
    proc = run_cli(addr, "tail", str(r.id))
    assert proc.returncode == 0, proc
    assert proc.stdout == "line 0\nline 1\nline 2\n"
    assert f"task {r.id} COMPLETED" in proc.stderr

    r = client.queue_task("fail", pvars={"msg": "tail sees this"})
    proc = run_cli(addr, "tail", r.uuid)
    assert proc.returncode == 1, proc
    assert f"task {r.id} FAILED" in proc.stderr
    assert client.task_status(r.id).status == "FAILED"


def test_stop_queued_task(coordinator, client):
    addr = coordinator.address
    doc = run_json(addr, "queue", "nobody_offers_this")
    proc = run_cli(addr, "stop", str(doc["id"]))
    assert proc.returncode == 0, proc
    assert f"task {doc['id']}" in proc.stdout
    status = run_json(addr, "status", str(doc["id"]))
    assert status["task"]["status"] == "STOPPED" and status["task"]["enabled"] is False
    # stopping it again changes nothing and says so
    proc = run_cli(addr, "stop", str(doc["id"]))
    assert proc.returncode == 1, proc
    assert "STOPPED" in proc.stderr
    assert run_cli(addr, "stop", "99999").returncode == 3


def test_workers_disable_and_resume(coordinator, start_worker):
    addr = coordinator.address
    start_worker("cli-w", groups=["g1", "g2"])
    w = worker_doc(addr, "cli-w")
    assert w is not None and w["status"] == "ACTIVE" and w["alive"] is True
    assert {"add", "echo", "sleep_for", "print_lines"} <= set(w["functions"])
    assert w["group_names"] == ["g1", "g2"] and w["language"] == "python"

    proc = run_cli(addr, "disable", "--worker", "cli-w")
    assert proc.returncode == 0 and proc.stdout.split() == ["cli-w"], proc
    assert worker_doc(addr, "cli-w")["status"] == "DISABLED"
    assert run_json(addr, "resume", "--worker", "cli-w") == {"worker_names": ["cli-w"]}
    assert worker_doc(addr, "cli-w")["status"] == "ACTIVE"
    # nothing matches: exit 0, a note on stderr
    proc = run_cli(addr, "resume", "--worker", "nobody")
    assert proc.returncode == 0 and proc.stdout == "" and "no worker" in proc.stderr


@pytest.mark.parametrize("args", [["status", "1"], ["workers"], ["queue", "add", "[1, 2]"]])
def test_unreachable_coordinator_exits_4(args):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    proc = run_cli(address, *args)
    assert proc.returncode == 4, proc
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert address in proc.stderr and "unavailable" in proc.stderr
