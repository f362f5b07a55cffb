"""The same trivial task on Python, Go and TypeScript workers: tasks/s and queue-to-start p50.

Usage: python bench/languages.py [--tasks N] [--trickle T] [--workers W] [--concurrency C]
                                 [--langs python,go,typescript]

For each language in turn, on a fresh SQLite coordinator: W workers of that language with C
slots each (default 2 × 4), all offering the conformance handlers (tests/conformance), so the
task is the same `add(j, 1)` everywhere. Throughput: N tasks queued in batches of 1,000,
tasks/s from the first queue call to the last COMPLETED. Latency: T single tasks queued one
at a time on idle workers; run.start_time - task.start_time, both stamped by the coordinator.
The coordinator, the workers and this script share the machine, so the figures compare the
languages with each other; they are not the coordinator's ceiling (bench/throughput.py).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import sqlalchemy as sa

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from throughput import costs, latency, start, stop, taskgrid, throughput  # noqa: E402

from taskgrid.client import Scheduler  # noqa: E402
from tests.conformance.launch import HANDLERS, go_binary, ts_worker  # noqa: E402


def worker_argv(lang: str) -> list[str]:
    """The command that starts a `lang` worker with the conformance handlers."""
    if lang == "python":
        return taskgrid("worker", "--tasks", str(HANDLERS))
    if lang == "go":
        return [go_binary()]
    if lang == "typescript":
        return ts_worker()
    raise SystemExit(f"unknown language {lang!r}")


def run(lang: str, folder: pathlib.Path, args: argparse.Namespace) -> tuple[float, list[float]]:
    """(tasks/s, sorted latencies in ms) of `lang` workers on a fresh coordinator."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"{lang}-", dir=folder))  # a fresh database
    db_url = f"sqlite:///{folder / 'bench.sqlite'}"
    procs, address = start(folder, db_url, args.workers, args.concurrency, worker_argv(lang),
                           f"{lang}-")
    try:
        with Scheduler(address) as s:
            while len([w for w in s.get_workers().values() if w.alive]) < args.workers:
                time.sleep(0.05)  # start-up, not measured
            engine = sa.create_engine(db_url)
            rate = throughput(s, engine, args.tasks, 1000, "add", (1,))
            lat = sorted(latency(s, args.trickle, "add", (1,)))
            engine.dispose()
        return rate, lat
    finally:
        stop(procs)  # the coordinator logs its counters as it stops
        if args.costs:
            print(f"  {lang}: " + costs((folder / "coordinator.log").read_text(),
                                        args.tasks + args.trickle), flush=True)


def main() -> int:
    """Run the languages in turn, round by round, then print a table for bench/RESULTS.md."""
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--trickle", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--langs", default="python,go,typescript")
    p.add_argument("--costs", action="store_true",
                   help="print each run's RPCs and transactions per task")
    p.add_argument("--rounds", type=int, default=1,
                   help="languages run in turn this many times; the table gives medians")
    args = p.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskgrid-langs-"))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                         capture_output=True).stdout.strip()
    print(f"languages at {rev}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{args.workers} workers x {args.concurrency} slots, {args.tasks} tasks, "
          f"{args.trickle} single tasks, load {os.getloadavg()[0]:.2f}", flush=True)
    seen: dict[str, list[tuple[float, float, float]]] = {}
    for round_no in range(1, args.rounds + 1):
        for lang in args.langs.split(","):
            rate, lat = run(lang, folder, args)
            p50 = statistics.median(lat)
            p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
            seen.setdefault(lang, []).append((rate, p50, p95))
            print(f"round {round_no} {lang}: {rate:,.0f} tasks/s, queue-to-start p50 "
                  f"{p50:.2f} ms p95 {p95:.2f} ms, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n| worker | tasks/s | queue-to-start p50 (ms) | p95 (ms) |   (median of "
          f"{args.rounds})\n|---|---|---|---|")
    for lang, got in seen.items():
        rate, p50, p95 = (statistics.median(g[i] for g in got) for i in range(3))
        print(f"| {lang} | {rate:,.0f} | {p50:.2f} | {p95:.2f} |")
    print(f"(logs in {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
