"""Task functions of the chaos suite; workers load this file with `--tasks <path>`.

Every execution writes its own record, outside the coordinator, so the suite can count real
executions and completions and compare them with what the coordinator stored:

- a `s` (start) line when the function is entered, with the task id, uuid, run id and attempt
  from `taskgrid.worker.current_task()`, the worker's name (`$TASKGRID_CHAOS_WORKER`, set per
  worker process by the suite), the pid and a CLOCK_MONOTONIC time;
- an `e` (end) line with the outcome: `done` just before a successful return, `fail` just
  before a designed failure is raised, `sigterm` when the worker's timeout (or a stop) sends
  SIGTERM; a SIGKILLed execution (its worker's session was killed) writes no end line.

Lines are JSON, each written with one os.write() on an O_APPEND descriptor (atomic for such
short lines), to two files: `<log_dir>/journal.log` (every execution of the run, tailed by the
suite) and `<log_dir>/tasks/<key>.log` (this task's own record; `flaky` counts its designed
failures there, so retries on other workers see them).

`time.sleep` inside a task simulates work (or overruns a timeout on purpose); it is not test
synchronisation. This module is loaded by worker children: it imports nothing from tests/.
"""

from __future__ import annotations

import json
import os
import signal
import time
import typing

WORKER_ENV = "TASKGRID_CHAOS_WORKER"
#: Text in the traceback of every designed failure: tells them from coordinator-made FAILED runs.
FAILURE_MARKER = "ChaosDesignedFailure"
JOURNAL = "journal.log"
TASKS_DIR = "tasks"


class ChaosDesignedFailureError(RuntimeError):
    """Raised on purpose by `flaky` and `doomed`; its name is FAILURE_MARKER's source."""


def _context() -> tuple[int, str, int, int]:
    import taskgrid.worker

    current = taskgrid.worker.current_task()
    if current is None:
        return 0, "", 0, 0
    return current.id, current.uuid, current.run_id, current.attempt


def _append(path: str, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class _Record:
    """One execution: writes its start line at creation and its end line on `end()`."""

    def __init__(self, log_dir: str, key: str) -> None:
        task_id, uuid, run_id, attempt = _context()
        self.base = {"k": key, "id": task_id, "a": attempt, "r": run_id, "u": uuid,
                     "w": os.environ.get(WORKER_ENV, "?"), "p": os.getpid()}
        self.journal = os.path.join(log_dir, JOURNAL)
        self.own = os.path.join(log_dir, TASKS_DIR, f"{key}.log")
        self.ended = False
        self._write("s")
        # A timeout (or stop) reaches the task as SIGTERM on its process group: note it, then
        # die of it exactly as without the handler.
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _write(self, event: str, **extra: typing.Any) -> None:
        line = json.dumps({"e": event, **self.base, "t": time.monotonic(), **extra},
                          separators=(",", ":")).encode() + b"\n"
        _append(self.own, line)
        _append(self.journal, line)

    def _on_sigterm(self, signum: int, frame: typing.Any) -> None:
        if not self.ended:
            self.ended = True
            self._write("e", o="sigterm")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def end(self, outcome: str) -> None:
        if not self.ended:
            self.ended = True
            self._write("e", o=outcome)

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _designed_failures_so_far(log_dir: str, key: str) -> int:
    path = os.path.join(log_dir, TASKS_DIR, f"{key}.log")
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if '"o":"fail"' in line)


def trivial(log_dir: str, key: str) -> str:
    """Return at once (a non-None result, so the run record is kept)."""
    rec = _Record(log_dir, key)
    try:
        rec.end("done")
        return key
    finally:
        rec.close()


def nap(log_dir: str, key: str, seconds: float) -> float:
    """Work for `seconds` (50-200 ms in the suite)."""
    rec = _Record(log_dir, key)
    try:
        time.sleep(seconds)
        rec.end("done")
        return seconds
    finally:
        rec.close()


def flaky(log_dir: str, key: str, fails: int) -> int:
    """Fail by design until `fails` designed failures are on record, then succeed."""
    rec = _Record(log_dir, key)
    try:
        failed = _designed_failures_so_far(log_dir, key)
        if failed < fails:
            rec.end("fail")
            raise ChaosDesignedFailureError(f"{FAILURE_MARKER}: {key} failure {failed + 1}/{fails}")
        rec.end("done")
        return failed
    finally:
        rec.close()


def doomed(log_dir: str, key: str) -> None:
    """Always fail by design: the task ends FAILED once its retries are used up."""
    rec = _Record(log_dir, key)
    try:
        rec.end("fail")
        raise ChaosDesignedFailureError(f"{FAILURE_MARKER}: {key} always fails")
    finally:
        rec.close()


def overrun(log_dir: str, key: str, seconds: float) -> float:
    """Sleep well past the task's timeout: the worker must kill it (end line `sigterm`).

    Returning at all (end line `overslept`, result reported COMPLETED) means the timeout was
    not enforced.
    """
    rec = _Record(log_dir, key)
    try:
        time.sleep(seconds)
        rec.end("overslept")
        return seconds
    finally:
        rec.close()


tasks = {"chaos_trivial": trivial, "chaos_nap": nap, "chaos_flaky": flaky,
         "chaos_doomed": doomed, "chaos_overrun": overrun}
