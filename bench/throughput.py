"""End-to-end throughput and queue-to-start latency on SQLite with real worker processes.

Usage: python bench/throughput.py [--tasks N] [--batch B] [--workers W] [--concurrency C]
                                  [--trickle T] [--db sqlite|URL]

1. Throughput: queue N trivial tasks (`bench_tasks.noop`) in QueueTasks batches of B while W
   workers with C slots each run them; tasks/s is measured from the first queue call until the
   last task is COMPLETED (counted in the database, read-only).
2. Latency: with the workers idle, queue T single tasks one at a time, each after the previous
   one finished; latency = run.start_time - task.start_time, both stamped by the coordinator
   (queue time -> the moment a worker's lease started the run).
3. Costs: the coordinator logs at shutdown how many RPCs of each method and how many database
   transactions it served; divided by the task count they give the per-task cost.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import sqlalchemy as sa

from taskgrid.client import Scheduler

HERE = pathlib.Path(__file__).resolve().parent
TASKS = HERE / "bench_tasks.py"


def taskgrid(*args: str) -> list[str]:
    """`taskgrid ARGS` with this interpreter."""
    return [sys.executable, "-m", "taskgrid", *args]


def start(folder: pathlib.Path, db_url: str, workers: int, concurrency: int,
          worker: list[str] | None = None, name: str = "bench-w"
          ) -> tuple[list[subprocess.Popen[bytes]], str]:
    """Coordinator plus workers (`worker`: the command of another worker program, by default
    `taskgrid worker` on bench_tasks.py); returns (processes, address)."""
    coord_log = open(folder / "coordinator.log", "wb")  # noqa: SIM115
    coord = subprocess.Popen(
        taskgrid("coordinator", "--db", db_url, "--listen", "127.0.0.1:0"),
        stdout=subprocess.PIPE, stderr=coord_log, start_new_session=True)
    assert coord.stdout is not None
    line = coord.stdout.readline().decode()
    address = line.rsplit(" ", 1)[1].strip()
    procs = [coord]
    program = worker or taskgrid("worker", "--tasks", str(TASKS))
    for i in range(workers):
        log = open(folder / f"worker{i}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [*program, "--coordinator", address, "--name", f"{name}{i}",
             "--concurrency", str(concurrency), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs, address


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM workers, then the coordinator (so it logs its counters)."""
    for p in procs[1:] + procs[:1]:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def completed(engine: sa.Engine) -> int:
    """How many tasks are COMPLETED (a read on the side, not through the coordinator)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM scheduler_task WHERE status = 'COMPLETED'")).scalar_one())


def throughput(s: Scheduler, engine: sa.Engine, n: int, batch: int, function: str = "noop",
               more: tuple[int, ...] = ()) -> float:
    """Queue n tasks `function(j, *more)` in batches; tasks/s until all completed."""
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        s.queue_tasks([{"function": function, "pargs": [j, *more]}
                       for j in range(i, min(n, i + batch))])
    while completed(engine) < n:
        time.sleep(0.02)  # measuring loop, not synchronisation
    return n / (time.perf_counter() - t0)


def latency(s: Scheduler, trickle: int, function: str = "noop", more: tuple[int, ...] = ()
            ) -> list[float]:
    """Queue-to-start latency of single tasks on idle workers, in milliseconds."""
    out: list[float] = []
    for i in range(trickle):
        r = s.queue_task(function, pargs=[i, *more])
        while (st := s.task_status(r.id, output=True)) is None or st.task.status != "COMPLETED":
            time.sleep(0.002)  # measuring loop
        assert st.run is not None and st.run.start_time and st.task.start_time
        out.append((st.run.start_time - st.task.start_time).total_seconds() * 1000)
        time.sleep(0.01)  # let the workers go idle again (long-poll parked)
    return out


def costs(log: str, tasks: int) -> str:
    """Per-task RPCs and transactions from the coordinator's shutdown line."""
    m = re.search(r"transactions=(\d+) calls: (.*)", log)
    if not m:
        return "(no counters found in the coordinator log)"
    calls = dict(kv.split("=") for kv in m.group(2).split())
    parts = [f"{k}={int(v) / tasks:.3f}" for k, v in sorted(calls.items())]
    return f"per task: transactions={int(m.group(1)) / tasks:.3f} " + " ".join(parts)


def main() -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--trickle", type=int, default=200)
    p.add_argument("--db", default="sqlite",
                   help="sqlite, postgres (a throwaway cluster, as in the tests) or a URL")
    args = p.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskgrid-bench-"))
    cluster = None
    if args.db == "sqlite":
        db_url = f"sqlite:///{folder / 'bench.sqlite'}"
    elif args.db == "postgres":
        sys.path.insert(0, str(HERE.parent))
        from tests.support.postgres import PostgresCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL server binaries found")
        cluster = PostgresCluster(bindir)
        cluster.start()
        db_url = cluster.url(cluster.create_database())
    else:
        db_url = args.db
    procs, address = start(folder, db_url, args.workers, args.concurrency)
    try:
        s = Scheduler(address)
        while len(s.get_workers()) < args.workers:
            time.sleep(0.05)
        engine = sa.create_engine(db_url)
        rate = throughput(s, engine, args.tasks, args.batch)
        lat = sorted(latency(s, args.trickle))
        p50 = statistics.median(lat)
        p95 = lat[int(len(lat) * 0.95) - 1]
        s.close()
    finally:
        stop(procs)
        if cluster is not None:
            cluster.stop()
    total = args.tasks + args.trickle
    print(f"db={args.db} workers={args.workers} concurrency={args.concurrency} "
          f"tasks={args.tasks} batch={args.batch}")
    print(f"throughput: {rate:,.0f} tasks/s end to end")
    print(f"queue-to-start latency ({args.trickle} single tasks, idle workers): "
          f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {lat[-1]:.2f} ms")
    print(costs((folder / "coordinator.log").read_text(), total))
    print(f"(logs in {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
