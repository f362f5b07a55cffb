"""The Python worker's own cost per task: the pool and its children, no coordinator, no gRPC.

Usage: python bench/worker_overhead.py [--tasks N] [--rounds R] [--concurrency 1,8]
                                       [--variants noop,print] [--json]

Drives `taskgrid.worker.runner.Pool` directly with N trivial tasks per round:

- ``noop``: ``noop(i)`` returns i (no output);
- ``print``: ``say(i)`` prints one line (fd-level capture through the output pipe).

For each variant it measures:

1. Throughput at each concurrency C: a pool of C children, C runs in flight at all times
   (``on_finish`` submits the next run from the pool's I/O thread, so nothing but the pool
   sits between two runs); tasks/s from the first submit to the last ``on_finish``. Alongside:
   the worker process's CPU per task (``getrusage(RUSAGE_SELF)``: every thread of this
   process, i.e. the pool's I/O thread plus the submits) and the children's CPU per task
   (utime+stime from ``/proc/<pid>/stat`` of `Pool.child_pids()`).
2. Round trip at concurrency 1: the main thread submits one run and waits on an Event set by
   ``on_finish``; submit -> on_finish latency, p50 and p99.

Every wait is on a condition signalled by ``on_finish``, never a fixed sleep. Each figure is
the median over R rounds (after one warm-up round of N/10 runs per pool).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from taskgrid.worker.records import Outcome, RunResult, TaskRun
from taskgrid.worker.runner import Pool

TASKS_SOURCE = '''"""Trivial tasks for bench/worker_overhead.py."""


def noop(i):
    """Return the argument: no output."""
    return i


def say(i):
    """Print one line, then return the argument."""
    print("line", i)
    return i
'''

VARIANTS = {"noop": "noop", "print": "say"}
_TICK = os.sysconf("SC_CLK_TCK")


def child_cpu_s(pids: list[int]) -> float:
    """utime+stime of the processes `pids`, in seconds (0 for a pid that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / _TICK


def self_cpu_s() -> float:
    """CPU seconds (user+system) of every thread of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Driver:
    """A pool plus the bookkeeping to run batches of tasks through it."""

    def __init__(self, tasks_file: str, size: int) -> None:
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._finished = 0
        self._target = 0
        self._failed: list[RunResult] = []
        self._refill: Callable[[], None] | None = None
        self._next_id = 1
        self._function = "noop"
        self.pool = Pool(tasks_file, size, self._on_finish, kill_grace_s=1.0)
        self.pool.start()

    def _on_finish(self, result: RunResult) -> None:
        if result.outcome is not Outcome.COMPLETED:
            self._failed.append(result)
        refill = self._refill
        with self._done:
            self._finished += 1
            if self._finished >= self._target:
                self._done.notify_all()  # once per batch: a wake-up per run would cost CPU here
        if refill is not None:
            refill()

    def _task(self) -> TaskRun:
        task_id = self._next_id
        self._next_id += 1
        return TaskRun(task_id, 1, task_id, f"u{task_id}", self._function, f"[{task_id}]")

    def _check(self) -> None:
        if self._failed:
            first = self._failed[0]
            raise RuntimeError(f"{len(self._failed)} runs failed; first: {first.outcome} "
                               f"{first.traceback}")

    def throughput(self, function: str, n: int, window: int) -> tuple[float, float, float]:
        """Run `n` tasks with `window` in flight; (tasks/s, worker CPU s, children CPU s)."""
        self._function = function
        submitted = 0
        feed_lock = threading.Lock()

        def refill() -> None:
            nonlocal submitted
            with feed_lock:
                if submitted >= n:
                    return
                submitted += 1
            self.pool.submit(self._task())

        with self._done:
            self._finished = 0
            self._target = n
        pids = self.pool.child_pids()
        cpu0, kids0, t0 = self_cpu_s(), child_cpu_s(pids), time.perf_counter()
        self._refill = refill
        for _ in range(min(window, n)):
            refill()
        with self._done:
            self._done.wait_for(lambda: self._finished >= n)
        elapsed = time.perf_counter() - t0
        cpu, kids = self_cpu_s() - cpu0, child_cpu_s(pids) - kids0
        self._refill = None
        self._check()
        if pids != self.pool.child_pids():
            raise RuntimeError("a child was replaced during the round: CPU figures are off")
        return n / elapsed, cpu, kids

    def round_trips(self, function: str, n: int) -> list[float]:
        """Submit `n` runs one at a time, each after the previous one ended; latencies in s."""
        self._function = function
        event = threading.Event()
        with self._done:
            self._target = sys.maxsize  # the Event is the signal here
        self._refill = event.set
        latencies = []
        for _ in range(n):
            event.clear()
            task = self._task()
            t0 = time.perf_counter()
            self.pool.submit(task)
            event.wait()
            latencies.append(time.perf_counter() - t0)
        self._refill = None
        self._check()
        return latencies

    def close(self) -> None:
        self.pool.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="runs per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median)")
    parser.add_argument("--concurrency", default="1,8",
                        help="comma-separated pool sizes for the throughput figure")
    parser.add_argument("--variants", default="noop,print", help="noop, print or both")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    sizes = [int(c) for c in args.concurrency.split(",") if c]
    variants = [v for v in args.variants.split(",") if v]
    n = args.tasks
    warm = max(1, n // 10)

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="taskgrid-overhead-") as folder:
        tasks_file = str(pathlib.Path(folder) / "overhead_tasks.py")
        pathlib.Path(tasks_file).write_text(TASKS_SOURCE)
        for variant in variants:
            function = VARIANTS[variant]
            row: dict[str, float] = {}
            for size in sizes:
                driver = Driver(tasks_file, size)
                try:
                    driver.throughput(function, warm, size)
                    rounds = [driver.throughput(function, n, size) for _ in range(args.rounds)]
                    if size == 1:
                        driver.round_trips(function, warm)
                        lat = [driver.round_trips(function, n) for _ in range(args.rounds)]
                        row["rt_p50_us"] = statistics.median(percentile(r, 0.5) for r in lat) * 1e6
                        row["rt_p99_us"] = statistics.median(percentile(r, 0.99) for r in lat) * 1e6
                finally:
                    driver.close()
                row[f"c{size}_tasks_s"] = statistics.median(r[0] for r in rounds)
                row[f"c{size}_parent_us"] = statistics.median(r[1] for r in rounds) / n * 1e6
                row[f"c{size}_child_us"] = statistics.median(r[2] for r in rounds) / n * 1e6
            figures[variant] = row

    print(f"worker overhead: {n} tasks x {args.rounds} rounds (median), "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    header = f"{'variant':<8}{'metric':<34}{'value':>12}"
    print(header)
    print("-" * len(header))
    labels = []
    for size in sizes:
        labels += [(f"c{size}_tasks_s", f"tasks/s at concurrency {size}", "{:.0f}"),
                   (f"c{size}_parent_us", f"worker CPU us/task (c={size})", "{:.1f}"),
                   (f"c{size}_child_us", f"children CPU us/task (c={size})", "{:.1f}")]
    labels += [("rt_p50_us", "round trip p50 us (c=1)", "{:.0f}"),
               ("rt_p99_us", "round trip p99 us (c=1)", "{:.0f}")]
    for variant, row in figures.items():
        for key, label, fmt in labels:
            if key in row:
                print(f"{variant:<8}{label:<34}{fmt.format(row[key]):>12}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
