"""The `taskgrid` command line as people expect it, run as real subprocesses against a real
coordinator and real workers: help and version, shell completion, paging of `tasks`, NDJSON
from `tail --json`, `!clear!` on a terminal, guarded worker commands, and `status`'s views.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
CLI_TIMEOUT_S = 30.0
TAIL_TIMEOUT_S = 30.0
#: Between the two lines of the `progress` task: well above the worker's ~1 s output sync.
PROGRESS_PAUSE_S = 3.0


def taskgrid(*args, address=None, env=None, timeout=CLI_TIMEOUT_S):
    """Run `python -m taskgrid ARGS [--coordinator ADDRESS]`; never shows a traceback."""
    argv = [sys.executable, "-m", "taskgrid", *args]
    if address is not None:
        argv += ["--coordinator", address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def run_json(address, *args):
    proc = taskgrid(*args, "--json", address=address)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def fields(text):
    """`key: value` lines of a text answer (not the indented blocks), stripped."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and line[:1] != " ")
    return {k.strip(): v.strip() for k, v in pairs}


def ended(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to end")
    return client.task_status(ref, output=True)


# -- help, version, completion: no coordinator needed ----------------------------------------------


def test_help_lists_every_command_and_still_routes_the_servers():
    proc = taskgrid("--help")
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout[proc.stdout.index("\n  COMMAND\n"):proc.stdout.index("\noptions:")]
    commands = [line.split()[0] for line in section.splitlines()
                if line.startswith("    ") and not line.startswith("     ")]
    assert commands[:3] == ["coordinator", "worker", "dashboard"]
    assert {"queue", "queue-command", "status", "tail", "wait", "stop", "tasks", "update",
            "requeue", "enable-task", "disable-task", "delete", "workers", "resume", "disable",
            "terminate", "kill", "completion"} <= set(commands)
    for name in ("coordinator", "worker", "dashboard"):  # listed, and their own programs
        proc = taskgrid(name, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: taskgrid {name}")


def test_version_is_the_installed_version():
    proc = taskgrid("--version")
    assert proc.returncode == 0, proc.stderr
    dist = metadata.packages_distributions()["taskgrid"][0]
    assert proc.stdout == f"taskgrid {metadata.version(dist)}\n"


def test_bash_completion_script_loads_and_completes_commands(tmp_path):
    pytest.importorskip("shtab")
    proc = taskgrid("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "taskgrid.bash"
    script.write_text(proc.stdout)
    # Load it in a real bash and ask it to complete `taskgrid req<TAB>` and `taskgrid kill --<TAB>`
    probe = f"""
source {script}
complete -p taskgrid
COMP_WORDS=(taskgrid req); COMP_CWORD=1; COMP_LINE="taskgrid req"; COMP_POINT=${{#COMP_LINE}}
$(complete -p taskgrid | sed -E 's/.*-F ([^ ]+).*/\\1/') taskgrid req taskgrid
echo "commands: ${{COMPREPLY[*]}}"
COMP_WORDS=(taskgrid kill --); COMP_CWORD=2; COMP_LINE="taskgrid kill --"
COMP_POINT=${{#COMP_LINE}}
$(complete -p taskgrid | sed -E 's/.*-F ([^ ]+).*/\\1/') taskgrid -- kill
echo "options: ${{COMPREPLY[*]}}"
"""
    out = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True,
                         timeout=CLI_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert lines["commands"].split() == ["requeue"], out.stdout
    assert {"--all", "--group", "--worker"} <= set(lines["options"].split()), out.stdout


def test_zsh_completion_script_is_valid_zsh():
    pytest.importorskip("shtab")
    proc = taskgrid("completion", "zsh")
    assert proc.returncode == 0 and proc.stdout.startswith("#compdef taskgrid")
    assert "requeue" in proc.stdout and "enable-task" in proc.stdout
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: the script's syntax is not checked")
    check = subprocess.run(["zsh", "-n"], input=proc.stdout, capture_output=True, text=True,
                           timeout=CLI_TIMEOUT_S)
    assert check.returncode == 0, check.stderr


# -- tasks: paging ---------------------------------------------------------------------------------


def test_tasks_says_more_exist_and_pages_with_all(coordinator, client):
    addr = coordinator.address
    queued = client.queue_tasks([{"function": "nobody_offers_this"}] * 7)
    ids = sorted((r.id for r in queued), reverse=True)  # newest first

    proc = taskgrid("tasks", "--limit", "3", address=addr)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()[1:]
    assert [int(r.split()[0]) for r in rows] == ids[:3]
    assert proc.stderr == ("taskgrid: more tasks exist (showing the newest 3): use --limit N "
                           "or --all\n")

    doc = run_json(addr, "tasks", "--limit", "3")
    assert [t["id"] for t in doc["tasks"]] == ids[:3]
    assert (doc["count"], doc["more"], doc["limit"]) == (3, True, 3)

    proc = taskgrid("tasks", "--limit", "7", address=addr)
    assert proc.returncode == 0 and proc.stderr == "" and len(proc.stdout.splitlines()) == 8

    doc = run_json(addr, "tasks", "--all")
    assert [t["id"] for t in doc["tasks"]] == ids and doc["more"] is False
    assert doc["limit"] is None


# -- tail ------------------------------------------------------------------------------------------


def test_tail_json_streams_each_event_as_it_happens(coordinator, client, start_worker):
    addr = coordinator.address
    start_worker("w1")
    r = client.queue_task("print_lines", pargs=[2, 30.0])  # line 0, then a long pause
    tail = subprocess.Popen(
        [sys.executable, "-m", "taskgrid", "tail", str(r.id), "--json", "--coordinator", addr],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        seen = []
        for line in tail.stdout:  # one JSON object per line, read while the task runs
            event = json.loads(line)
            seen.append(event)
            if event["event"] == "output":
                break
        assert event == {"event": "output", "task_id": r.id, "attempt": 1,
                         "run_id": event["run_id"], "seq": event["seq"], "data": "line 0\n",
                         "clear": False}
        assert client.task_status(r.id).status == "RUNNING"  # it came before the task ended
        assert seen[0]["event"] == "status" and seen[0]["task"]["id"] == r.id
        assert client.stop_task(r.id)
        rest = [json.loads(line) for line in tail.stdout]
        assert tail.wait(TAIL_TIMEOUT_S) == 1  # STOPPED is not COMPLETED
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    statuses = [e["task"]["status"] for e in seen + rest if e["event"] == "status"]
    assert statuses[-1] == "STOPPED" and "RUNNING" in statuses
    assert tail.stderr.read() == ""


def _tail_on_a_pty(addr, task_id, start):
    """Run `taskgrid tail` with its stdout on a pseudo-terminal; call `start` once it follows.

    Returns (exit code, what the terminal received).
    """
    master, slave = pty.openpty()
    tail = subprocess.Popen(
        [sys.executable, "-m", "taskgrid", "tail", str(task_id), "--coordinator", addr],
        stdout=slave, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    os.close(slave)
    try:
        first = tail.stderr.readline()  # "taskgrid: task N QUEUED": the stream is open
        assert f"task {task_id} QUEUED" in first, first
        start()
        received = bytearray()
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            received += data
        return tail.wait(TAIL_TIMEOUT_S), received.decode()
    finally:
        os.close(master)
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def test_clear_on_a_terminal_rewrites_only_the_progress_line(coordinator, client,
                                                             start_worker):
    # "50%", then "!clear!100%" seconds later: two chunks (output is sent about every second)
    r = client.queue_task("progress", pargs=[PROGRESS_PAUSE_S])
    code, screen = _tail_on_a_pty(coordinator.address, r.id, lambda: start_worker("w1"))
    assert code == 0
    # the terminal turns "\n" into "\r\n"; the progress line above is erased and rewritten
    assert screen == "50%\r\n\x1b[A\r\x1b[K100%\r\n", repr(screen)
    assert "\x1b[2J" not in screen


def test_clear_off_a_terminal_prints_plainly(coordinator, client, start_worker):
    r = client.queue_task("progress", pargs=[PROGRESS_PAUSE_S])
    tail = subprocess.Popen(
        [sys.executable, "-m", "taskgrid", "tail", str(r.id), "--coordinator",
         coordinator.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert f"task {r.id} QUEUED" in tail.stderr.readline()
        start_worker("w1")
        out, _ = tail.communicate(timeout=TAIL_TIMEOUT_S)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0 and out == "50%\n100%\n" and "\x1b" not in out


# -- worker commands -------------------------------------------------------------------------------


def test_dangerous_worker_commands_need_a_target(coordinator, start_worker):
    addr = coordinator.address
    w = start_worker("w1", groups=["g1"])

    def status():
        return next(x["status"] for x in run_json(addr, "workers") if x["worker_name"] == "w1")

    for command in ("kill", "terminate", "disable"):
        proc = taskgrid(command, address=addr)
        assert proc.returncode == 2 and proc.stdout == "", proc
        assert proc.stderr.count("\n") == 1 and "--all" in proc.stderr
    assert status() == "ACTIVE"  # nothing was sent

    proc = taskgrid("kill", "--worker", "nobody", address=addr)
    assert proc.returncode == 3 and proc.stdout == "", proc
    assert proc.stderr == "taskgrid: no live worker named 'nobody'\n"
    proc = taskgrid("disable", "--group", "nogroup", address=addr)
    assert proc.returncode == 3 and "no live worker in group nogroup" in proc.stderr

    proc = taskgrid("disable", "--group", "g1", address=addr)
    assert proc.returncode == 0 and proc.stdout == "w1\n", proc
    assert status() == "DISABLED"
    proc = taskgrid("disable", "--worker", "w1", address=addr)  # already: not an error
    assert proc.returncode == 0 and proc.stdout == "" and "no worker changed" in proc.stderr
    proc = taskgrid("resume", address=addr)  # resume keeps its default: every worker
    assert proc.returncode == 0 and proc.stdout == "w1\n", proc
    assert run_json(addr, "terminate", "--all") == {"worker_names": ["w1"]}
    assert w.wait(20.0) == 0


# -- status ----------------------------------------------------------------------------------------


def test_status_shows_the_essentials_and_verbose_shows_the_rest(coordinator, client,
                                                                start_worker):
    addr = coordinator.address
    start_worker("w1")
    failed = client.queue_task("fail", pvars={"msg": "the disk is full"})
    ended(client, failed.id)

    proc = taskgrid("status", str(failed.id), address=addr)
    assert proc.returncode == 0, proc.stderr
    shown = fields(proc.stdout)
    assert shown["status"] == "FAILED" and shown["function"] == "fail"
    assert shown["worker"] == "w1" and shown["times failed"] == "1"
    assert "the disk is full" in shown["error"] and "Traceback" not in proc.stdout
    assert shown["next run"] == "-" and shown["name"] == "fail"
    for internal in ("uuid", "attempt", "lost_count", "stop_requested", "broadcast_parent",
                     "target_worker_name"):
        assert internal not in shown, internal

    proc = taskgrid("status", str(failed.id), "--verbose", address=addr)
    assert proc.returncode == 0, proc.stderr
    shown = fields(proc.stdout)
    assert shown["uuid"] == failed.uuid and shown["attempt"] == "1"
    assert shown["lost_count"] == "0" and shown["retry_delay"] == "unset"
    assert "latest run:" in proc.stdout.splitlines()

    later = client.queue_task("nobody_offers_this", retry_delay=2.5)
    shown = fields(taskgrid("status", str(later.id), "-v", address=addr).stdout)
    assert shown["retry_delay"] == "2.5"
    shown = fields(taskgrid("status", str(later.id), address=addr).stdout)
    assert shown["status"] == "QUEUED" and shown["next run"] != "-"
    assert "nobody_offers_this" in shown["waiting"]  # why it waits
