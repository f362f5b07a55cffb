"""Task functions the integration tests queue; workers load this file with `--tasks <path>`.

Every public top-level function here is registered by the worker, so this module imports only
modules (never `from x import function`) and keeps its helpers private (leading underscore).
It must not import the tests' support package: it runs inside worker processes.

`time.sleep` inside a task simulates work; it is not test synchronisation.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import sys
import time
import typing  # only as `typing.X`: a bare imported name would look like a task

#: Folder where fail_times keeps its counters; the test fixtures set it per test.
STATE_DIR_ENV = "TASKGRID_TEST_STATE_DIR"


def add(a: typing.Any, b: typing.Any) -> typing.Any:
    return a + b


def echo(*args: typing.Any, **kwargs: typing.Any) -> list[typing.Any]:
    return [list(args), kwargs]


def fail(msg: str = "boom") -> None:
    raise RuntimeError(msg)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def print_lines(n: int, delay: float = 0.0) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        if delay:
            time.sleep(delay)
    return n


def progress(delay: float = 0.0) -> int:
    """web2py's demo4: the final output is only "100%\\n" (the marker clears "50%")."""
    print("50%", flush=True)
    if delay:
        time.sleep(delay)
    print("!clear!100%", flush=True)
    return 1


def _wait_for_file(name: str, timeout: float = 60.0) -> None:
    """Block until the test creates `name` in $TASKGRID_TEST_STATE_DIR (a gate, not a delay)."""
    path = os.path.join(os.environ[STATE_DIR_ENV], name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never opened the gate {name}")
        time.sleep(0.02)  # polling a file the test writes


def print_gated(gate: str) -> int:
    """Print "line 0", wait for the test's gate file, then print "line 1": live until told."""
    print("line 0", flush=True)
    _wait_for_file(gate)
    print("line 1", flush=True)
    return 2


def progress_gated(gate: str) -> int:
    """web2py's demo4 with a gate: "50%", then (once the test says) "!clear!100%"."""
    print("50%", flush=True)
    _wait_for_file(gate)
    print("!clear!100%", flush=True)
    return 1


def clear_many() -> None:
    """Several markers across lines and inside one line: the final output is "d\\n"."""
    print("a", flush=True)
    print("!clear!b", flush=True)
    print("c!clear!d", flush=True)


def noisy_none() -> None:
    print("hello", flush=True)


def quiet_none() -> None:
    return None


def big_result(n: int) -> str:
    return "x" * n


def unserializable() -> object:
    return object()


def write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def shell_echo(text: str) -> int:
    """Output written by a subprocess straight to fd 1: only fd-level capture sees it."""
    sys.stdout.flush()
    return os.system("echo " + shlex.quote(text))


def ignore_sigterm(seconds: float) -> float:
    """Ignore SIGTERM while it works, so stopping it needs the SIGKILL after the grace."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        time.sleep(seconds)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return seconds


def whoami() -> list[typing.Any]:
    """[task id, task uuid, run id] as the worker reports them to the running task."""
    import taskgrid.worker

    current = taskgrid.worker.current_task()
    return [_field(current, "id", 0), _field(current, "uuid", 1), _field(current, "run_id", 2)]


def fail_times(key: str, n: int) -> int:
    """Fail the first `n` calls for `key`, then succeed, returning the number of this call.

    The counter lives in a file under $TASKGRID_TEST_STATE_DIR, so it survives retries on
    other child processes and other workers.
    """
    count = _bump_counter(f"fail_times-{key}")
    if count <= n:
        raise RuntimeError(f"fail_times {key}: failing call {count} of {n}")
    return count


def fail_unless_third(key: str) -> int:
    """Fail unless this is the 3rd, 6th, 9th... call for `key` (web2py's retry test)."""
    count = _bump_counter(f"fail_unless_third-{key}")
    if count % 3:
        raise RuntimeError(f"fail_unless_third {key}: call {count}")
    return count


def sleep_then_mark(seconds: float, name: str) -> float:
    """Sleep, then create the file `name` in $TASKGRID_TEST_STATE_DIR: tests see it finish."""
    time.sleep(seconds)
    state_dir = os.environ[STATE_DIR_ENV]
    with open(os.path.join(state_dir, name), "w") as f:
        f.write("done")
    return seconds


def env_var(name: str) -> str | None:
    """The task's view of an environment variable."""
    return os.environ.get(name)


def _field(record: typing.Any, name: str, index: int) -> typing.Any:
    """Read a field of current_task()'s answer, whether an object, a mapping or a tuple."""
    if hasattr(record, name):
        return getattr(record, name)
    if isinstance(record, dict):
        return record[name]
    return record[index]


def _bump_counter(name: str) -> int:
    state_dir = os.environ.get(STATE_DIR_ENV)
    if not state_dir:
        raise RuntimeError(f"{STATE_DIR_ENV} is not set")
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    # An exclusive lock makes read-increment-write atomic across concurrent workers.
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        count = int(handle.read().strip() or 0) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(count))
        handle.flush()
    return count
