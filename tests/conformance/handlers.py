"""The conformance handlers for the Python worker.

The Go and TypeScript workers register handlers of the same names (worker/go/conformance,
worker/ts/conformance) so that one scenario set (tests/conformance/test_conformance.py) runs
against all three. Each language also has one function only it offers: python_only here,
go_only and ts_only there.
"""

from __future__ import annotations

import sys
import time
import typing


def add(a: typing.Any, b: typing.Any) -> typing.Any:
    """a + b."""
    return a + b


def echo(*args: typing.Any, **kwargs: typing.Any) -> list[typing.Any]:
    """[args, kwargs]."""
    return [list(args), kwargs]


def fail(msg: str = "boom") -> None:
    """Raise with this message."""
    raise RuntimeError(msg)


def sleep_for(seconds: float) -> float:
    """Sleep, then return the seconds slept."""
    time.sleep(seconds)
    return seconds


def print_lines(n: int, delay: float = 0.0) -> int:
    """Print "line i" n times, delay seconds apart."""
    for i in range(n):
        print(f"line {i}", flush=True)
        if delay:
            time.sleep(delay)
    return n


def progress() -> int:
    """Print 50%, then !clear!100%: the output ends as "100%"."""
    print("50%", flush=True)
    print("!clear!100%", flush=True)
    return 1


def clear_many() -> None:
    """Several markers: the output ends as "d"."""
    print("a", flush=True)
    print("!clear!b", flush=True)
    print("c!clear!d", flush=True)


def whoami() -> list[typing.Any]:
    """[task id, uuid, run id] as the worker tells the task."""
    from taskgrid.worker import current_task

    ctx = current_task()
    assert ctx is not None
    return [ctx.id, ctx.uuid, ctx.run_id]


def write_stderr(text: str) -> None:
    """Write to stderr (captured with stdout)."""
    sys.stderr.write(text)
    sys.stderr.flush()


def python_only() -> str:
    """Offered by the Python worker alone."""
    return "python"


def stubborn(path: str, seconds: float) -> float:
    """Ignore SIGTERM (and any stop) for `seconds`, appending "PID start T" then "PID tick T"
    every 50 ms to `path`: only SIGKILL of the task's process ends it early."""
    import os
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with open(path, "a") as marks:
            marks.write(f"{os.getpid()} start {time.time()}\n")
            marks.flush()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.05)
                marks.write(f"{os.getpid()} tick {time.time()}\n")
                marks.flush()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return seconds
