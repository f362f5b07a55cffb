"""Sample tasks for `make demo`.

A worker started with `--tasks examples/demo_tasks.py` registers every public function below.
"""

from __future__ import annotations

import time


def add(a: float, b: float) -> float:
    """Return the sum: the simplest task there is."""
    return a + b


def greet(name: str = "world") -> str:
    """Print and return a greeting."""
    print(f"hello, {name}")
    return f"greeted {name}"


def progress(steps: int = 5, delay: float = 0.3) -> str:
    """Report progress: `!clear!` keeps only the latest line in the run's output."""
    for i in range(1, steps + 1):
        print(f"!clear!{100 * i // steps}% done", flush=True)
        time.sleep(delay)
    return "finished"


def fail(message: str = "something went wrong") -> None:
    """Always raise, to show a FAILED run with its traceback."""
    raise RuntimeError(message)


def slow(seconds: float = 10.0) -> str:
    """Sleep longer than its timeout allows, to show TIMEOUT."""
    time.sleep(seconds)
    return "woke up"
