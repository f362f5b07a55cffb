"""Command tasks end to end: `taskgrid queue-command` -> coordinator -> a Python worker
started with --allow-commands (or an --allow-executable list) -> `taskgrid status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

SH = shutil.which("sh") or "/bin/sh"
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


def run_cli(address, *args):
    """`python -m taskgrid --coordinator ADDRESS ARGS`: the address goes first, since
    whatever follows `queue-command ... --` belongs to the command."""
    proc = subprocess.run(
        [sys.executable, "-m", "taskgrid", "--coordinator", address, *args],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def run_json(address, *args):
    proc = run_cli(address, "--json", *args)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def finished(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to finish")
    return client.task_status(ref, output=True)


def test_queue_command_runs_with_env_and_cwd_and_status_shows_it(
        coordinator, client, start_worker, tmp_path):
    addr = coordinator.address
    worker = start_worker("w1", extra_args=["--allow-commands"])
    assert worker.wait_registered().capabilities == ["command"]
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    doc = run_json(addr, "queue-command", "--env", "GREETING=hello there", "--cwd", str(workdir),
                   "--timeout", "20", "--", SH, "-c",
                   'echo "$GREETING from $TASKGRID_TASK_ID"; pwd; echo "to stderr" >&2')
    assert doc["errors"] == {} and isinstance(doc["id"], int)
    st = finished(client, doc["id"])
    assert st.task.status == "COMPLETED" and st.result == {"exit_code": 0}
    assert st.task.function_name == "@command" and st.task.task_name == "sh"
    lines = st.run.run_output.splitlines()
    assert f"hello there from {doc['id']}" in lines and "to stderr" in lines
    assert any(os.path.samefile(line, workdir) for line in lines if line.startswith("/"))

    proc = run_cli(addr, "status", str(doc["id"]))
    assert proc.returncode == 0, proc.stderr
    shown = {k.strip(): v.strip() for k, v in (
        line.split(": ", 1) for line in proc.stdout.splitlines() if line.startswith("command"))}
    assert shown["command"].startswith(f"{SH} -c ") and "$GREETING" in shown["command"]
    assert shown["command env"] == "'GREETING=hello there'"
    assert shown["command cwd"] == str(workdir)
    status = run_json(addr, "status", str(doc["id"]))
    assert status["task"]["command"]["args"][0] == "-c"
    assert status["result"] == {"exit_code": 0}


def test_a_failing_command_shows_its_exit_code_and_stderr(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1", extra_args=["--allow-commands"])
    doc = run_json(addr, "queue-command", "--", SH, "-c", "echo 'bad input' >&2; exit 4")
    st = finished(client, doc["id"])
    assert st.task.status == "FAILED"
    assert st.run.traceback.startswith("exit code 4\n") and "bad input" in st.run.traceback
    proc = run_cli(addr, "status", str(doc["id"]), "--output")
    assert proc.returncode == 0 and "exit code 4" in proc.stdout


def test_allow_list_refuses_other_programs(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1", extra_args=["--allow-executable", SH])
    ok = run_json(addr, "queue-command", "--", "sh", "-c", "echo allowed")
    refused = run_json(addr, "queue-command", "--", sys.executable, "-c", "print('no')")
    st = finished(client, ok["id"])
    assert st.task.status == "COMPLETED" and st.run.run_output == "allowed\n"
    st = finished(client, refused["id"])
    assert st.task.status == "FAILED" and st.run.run_output == ""
    assert "not in this worker's --allow-executable list" in st.run.traceback


def test_a_command_only_worker_runs_no_functions(coordinator, client, start_worker):
    start_worker("cmd", program=[sys.executable, "-m", "taskgrid", "worker"],
                 extra_args=["--allow-commands"])
    function_task = client.queue_task("add", pargs=[1, 2])
    command_task = client.queue_command([SH, "-c", "echo $TASKGRID_TASK_UUID"])
    st = finished(client, command_task.id)
    assert st.task.status == "COMPLETED" and st.run.run_output == f"{command_task.uuid}\n"
    wait_until(lambda: "offers function 'add'" in (client.explain(function_task.id) or ""),
               timeout=5, desc="add waits for a worker offering it")
    assert client.task_status(function_task.id).status == "QUEUED"


def test_a_worker_without_the_flag_never_leases_commands(coordinator, client, start_worker):
    addr = coordinator.address
    assert start_worker("w1").wait_registered().capabilities == []
    doc = run_json(addr, "queue-command", "--", "true")
    wait_until(lambda: "offers function '@command'" in (client.explain(doc["id"]) or ""),
               timeout=5, desc="the command waits for a worker allowing commands")
    assert client.task_status(doc["id"]).status == "QUEUED"


def test_queue_command_errors_exit_2(coordinator, client):
    addr = coordinator.address
    proc = run_cli(addr, "queue-command", "--timeout", "0", "--", "true")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "timeout" in proc.stderr
    proc = run_cli(addr, "queue-command", "--json", "--", "")
    assert proc.returncode == 2
    assert set(json.loads(proc.stdout)["errors"]) == {"command"}
    assert client.list_tasks() == []
