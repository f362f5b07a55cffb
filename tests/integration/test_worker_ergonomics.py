"""Worker ergonomics, for the Python worker and the Go worker alike.

- A worker that could run nothing (no functions, commands not allowed) refuses to start with
  one line on stderr and exit code 2.
- The two workers take the same flags, with the same meanings and defaults, apart from a short,
  explicit list of language-specific ones; `--allow-executable` implies `--allow-commands` in both.
- `resume` reaches a DISABLED worker at once: its Lease call is held open by the coordinator,
  not answered at once and repeated only at the next heartbeat.
- After a coordinator restart, a worker gone for longer than its dead_after is not listed alive
  while the reaper still waits for it to come back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskgrid.coordinator.workers import ROW_HEARTBEAT_LAG_S
from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
GO_MODULE = ROOT / "worker" / "go"
LANGS = ["python", "go"]

#: flags only one worker has, each with its reason; every other flag must be in both
PYTHON_ONLY = {
    "--tasks",    # the module or file of Python functions; Go handlers are compiled in
    "--tracing",  # OpenTelemetry spans (the Python tracing extra); the Go worker has none
}
GO_ONLY: set[str] = {"--in-process-handlers"}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.skip("the Go toolchain is not installed")
    return go


_BUILT: dict[str, str] = {}


@pytest.fixture(scope="session")
def go_bin(tmp_path_factory: pytest.TempPathFactory):
    """go_bin(command): worker/go's cmd/`command`, built once per session into its tmp folder."""
    folder = tmp_path_factory.mktemp("go-bin")

    def build(command: str) -> str:
        if command not in _BUILT:
            out = folder / command
            subprocess.run([_go(), "build", "-o", str(out), f"./cmd/{command}"], cwd=GO_MODULE,
                           check=True, env={**os.environ, "CGO_ENABLED": "0"}, timeout=300)
            _BUILT[command] = str(out)
        return _BUILT[command]

    return build


def _clean_env() -> dict[str, str]:
    """This environment without TASKGRID_* settings (they could allow commands)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKGRID_")}


def _python_worker() -> list[str]:
    return [sys.executable, "-m", "taskgrid", "worker"]


# -- a worker that can run nothing -------------------------------------------------------------


def test_python_worker_with_nothing_to_run_refuses_to_start(tmp_path):
    done = subprocess.run([*_python_worker(), "--coordinator", "127.0.0.1:1"], cwd=tmp_path,
                          env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("taskgrid worker: error: nothing to run: ")
    assert "--tasks" in lines[0] and "--allow-commands" in lines[0]

    empty = tmp_path / "no_functions.py"
    empty.write_text("X = 1\n")
    done = subprocess.run([*_python_worker(), "--tasks", str(empty), "--coordinator",
                           "127.0.0.1:1"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "offers no task functions" in lines[0], done.stderr


def test_go_worker_with_nothing_to_run_refuses_to_start(tmp_path, go_bin):
    # the stock binary registers no handlers: without commands allowed it can run nothing
    done = subprocess.run([go_bin("taskgrid-worker"), "--coordinator", "127.0.0.1:1"],
                          cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("taskgrid-worker: nothing to run: ")
    assert "--allow-commands" in lines[0]


# -- the same flags ----------------------------------------------------------------------------


def _normal_default(text: str | None) -> str:
    """A default as either help shows it, comparable: quotes, units and notes dropped."""
    if text is None:
        return ""
    text = re.split(r";|: ", text.strip().strip('"'), maxsplit=1)[0].strip().strip('"')
    try:
        number = float(text)
    except ValueError:
        return text
    return "" if number == 0 else repr(number)


def _python_flags() -> dict[str, str]:
    """--flag -> its default as `taskgrid worker --help` shows it ("" when none)."""
    env = {**_clean_env(), "COLUMNS": "1000"}
    out = subprocess.run([*_python_worker(), "--help"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    flags: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        found = re.match(r"^\s{2}(-\w, )?(--[\w-]+)", line)
        if found:
            current = found.group(2)
            flags[current] = ""
        elif not line.strip() or not line.startswith(" "):
            current = None
        if current is not None:
            default = re.search(r"\(default ([^)]*)\)", line)
            if default and not flags[current]:
                flags[current] = _normal_default(default.group(1))
    flags.pop("--help")
    return flags


def _go_flags(go_bin) -> dict[str, str]:
    """--flag -> its default as the Go worker's -help shows it ("" when none)."""
    done = subprocess.run([go_bin("taskgrid-worker"), "-help"], env=_clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    flags: dict[str, str] = {}
    current = None
    for line in done.stderr.splitlines():
        found = re.match(r"^  -([\w-]+)", line)
        if found:
            current = "--" + found.group(1)
            flags[current] = ""
        if current is not None:
            default = re.search(r"\(default ([^)]*)\)", line)
            if default and not flags[current]:
                flags[current] = _normal_default(default.group(1))
    return flags


def test_both_workers_take_the_same_flags_with_the_same_defaults(go_bin):
    python, go = _python_flags(), _go_flags(go_bin)
    assert "--coordinator" in python and "--coordinator" in go
    assert set(python) - PYTHON_ONLY == set(go) - GO_ONLY, (
        f"only Python: {sorted(set(python) - set(go) - PYTHON_ONLY)}; "
        f"only Go: {sorted(set(go) - set(python) - GO_ONLY)}")
    assert PYTHON_ONLY <= set(python) and GO_ONLY <= set(go)
    shared = sorted(set(python) & set(go))
    differ = {f: (python[f], go[f]) for f in shared if python[f] != go[f]}
    assert not differ, f"defaults differ (python, go): {differ}"
    # the defaults that matter most are shown by both
    assert python["--heartbeat"] == go["--heartbeat"] == "3.0"
    assert python["--coordinator"] == "127.0.0.1:50051"
    assert python["--group"] == "main" and python["--log-level"] == "INFO"


def test_help_says_allow_executable_implies_allow_commands(go_bin):
    python = subprocess.run([*_python_worker(), "--help"], env={**_clean_env(), "COLUMNS": "1000"},
                            capture_output=True, text=True, timeout=60, check=True).stdout
    go = subprocess.run([go_bin("taskgrid-worker"), "-help"], env=_clean_env(),
                        capture_output=True, text=True, timeout=60).stderr
    for text in (python, go):
        line = next(x for x in text.splitlines() if "implies --allow-commands" in x
                    or "allow-executable" in x and "implies" in x)
        assert "implies --allow-commands" in line


@pytest.mark.parametrize("lang", LANGS)
def test_allow_executable_alone_allows_commands(lang, coordinator, start_worker, go_bin):
    """--allow-executable without --allow-commands: the worker runs those commands."""
    program = _python_worker() if lang == "python" else [go_bin("taskgrid-worker")]
    echo = shutil.which("echo") or "/bin/echo"
    w = start_worker("cmd", program=program, extra_args=["--allow-executable", echo])
    listed = w.wait_registered()
    assert "command" in listed.capabilities
    from taskgrid.client import Scheduler

    s = Scheduler(coordinator.address)
    try:
        r = s.queue_command([echo, "hello"])
        wait_until(lambda: s.task_status(r.id).status == "COMPLETED", timeout=20,
                   desc="the command ran")
        denied = s.queue_command([shutil.which("true") or "/bin/true"])
        wait_until(lambda: s.task_status(denied.id).status == "FAILED", timeout=20,
                   desc="a program off the list refused")
    finally:
        s.close()


# -- resume reaches a DISABLED worker at once --------------------------------------------------


def _worker_program(lang: str, go_bin) -> dict[str, object]:
    if lang == "python":
        return {}
    return {"program": [go_bin("taskgrid-worker-conformance")]}


@pytest.mark.parametrize("lang", LANGS)
def test_resume_reaches_a_disabled_worker_within_a_heartbeat(lang, start_coordinator,
                                                             start_worker, go_bin):
    from taskgrid.client import Scheduler

    coordinator = start_coordinator(extra_args=["--log-level", "DEBUG"])
    w = start_worker("w1", heartbeat=5.0, **_worker_program(lang, go_bin))
    s = Scheduler(coordinator.address)
    try:
        assert s.disable(worker_name="w1") == ["w1"]
        told = "worker status now DISABLED" if lang == "python" else "status=DISABLED"
        wait_until(lambda: told in w.log_text(), timeout=5, desc="the worker knows DISABLED")
        # the worker's next Lease is held open while it is DISABLED
        wait_until(lambda: "lease held while disabled worker=w1" in coordinator.log_text(),
                   timeout=5, desc="a Lease held while disabled")
        r = s.queue_task("add", pargs=[2, 3])
        assert s.task_status(r.id).status == "QUEUED"
        t0 = time.monotonic()
        assert s.resume(worker_name="w1") == ["w1"]
        wait_until(lambda: s.task_status(r.id).status in ("RUNNING", "COMPLETED"), timeout=5,
                   desc="the task leased after resume")
        took = time.monotonic() - t0
        assert took < 2.0, f"resume took {took:.2f} s to reach the worker (heartbeat 5 s)"
        wait_until(lambda: s.task_status(r.id).status == "COMPLETED", timeout=10)
    finally:
        s.close()


# -- ListWorkers after a restart ---------------------------------------------------------------


def test_a_worker_gone_longer_than_dead_after_is_not_listed_alive_after_a_restart(
        start_coordinator, start_worker):
    coordinator = start_coordinator()
    gone = start_worker("gone", heartbeat=0.5)  # dead_after: 3 beats, 1.5 s
    stays = start_worker("stays", heartbeat=0.5)
    dead_after = 1.5
    coordinator.stop()
    stopped_at = time.time()
    gone.kill(signal.SIGKILL)
    assert gone.wait(10) != 0
    # the database's last heartbeat of `gone` is at most the stop: once dead_after has
    # passed since, it must not be listed alive, though its row still says alive and the
    # reaper waits dead_after + its reconnect grace before declaring it dead
    # (on PostgreSQL a row may lag its worker's heartbeats by a node beat, and is allowed to)
    wait_until(lambda: time.time() - stopped_at > dead_after + ROW_HEARTBEAT_LAG_S + 0.2,
               timeout=5,
               interval=0.05, desc="dead_after passed since the stop")
    coordinator.restart()
    listed = {w.worker_name: w for w in coordinator.list_workers()}
    assert "gone" not in listed
    everyone = {w.worker_name: w for w in coordinator.list_workers(include_dead=True)}
    assert "gone" in everyone and not everyone["gone"].alive
    # the worker still running comes back, and is listed alive as soon as it is heard from
    stays.wait_registered(15)
    assert "gone" not in {w.worker_name for w in coordinator.list_workers()}
