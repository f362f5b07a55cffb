"""Throughput, queue-to-start latency and costs with 1, 2 and 3 coordinators on one PostgreSQL.

Usage: .venv/bin/python bench/scaleout.py [--tasks N] [--rounds R] [--coordinators 1,2,3]
                                          [--samples S] [--rate HZ] [--producers P]
                                          [--batch B] [--concurrency C] [--worktree | --rev REV]
       .venv/bin/python bench/scaleout.py --report /tmp/taskgrid-scaleout-*/results.json

One PostgreSQL 15 cluster (tests/support/postgres.py with compare.py's settings:
synchronous_commit=on, fsync=off) with pg_stat_statements preloaded. For each number of
coordinators N, each phase gets a fresh database shared by N fresh coordinator processes and
the same 2 worker processes x C slots; worker i is given every coordinator's address, the list
rotated by i, so the two workers start at different coordinators. Phases:

1. burn: N tasks queued with QueueTasks in batches of B, the batches spread over the
   coordinators in turn, with no worker running; then the workers start. tasks/s = N over the
   span from the first run's start to the last run's end (the runs' rows, stamped by the
   coordinators), so the workers' start-up is not in it.
2. latency: one producer queues S single tasks at a fixed rate (HZ per second, open loop),
   through the coordinators in turn, while the workers idle in between; queue-to-start =
   run.start_time - task.created_at, read from the database rows.
3. producers: P threads in this process, each with its own Scheduler starting at a different
   coordinator (address list rotated), queue N tasks between them, one QueueTask call per task,
   all starting at one instant while the workers run them.

Costs, per phase, over the whole life of its processes (start-up, warm-up and shutdown
included, as the coordinators' own counters are): transactions per task (the `transactions=`
of every coordinator's shutdown line, summed), committed transactions of the database
(pg_stat_database.xact_commit), statement calls (pg_stat_statements of that database, the bench's
own queries excluded: they run as another role) with and without BEGIN/COMMIT/ROLLBACK, and
CPU over the measured window from /proc: the coordinators, every PostgreSQL process, the
workers with their slot children, this bench process (the producers) and the rest of the
machine. Rounds interleave N (round r runs the N values rotated by r); figures are medians.
Not part of `make test`; bench/README.md says more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.compare import (  # noqa: E402
    BENCH_CALLS,
    commit,
    ensure_postgres,
    fmt,
    interrupted,
    log,
    medians,
    percentile,
    table,
)
from bench.peers import systems  # noqa: E402
from bench.peers.snapshot import Snapshot  # noqa: E402

TASKS_FILE = HERE / "bench_tasks.py"  # noop(i) returns i
PHASES = ("burn", "latency", "producers")
WARMUP_TASKS = 20
POLL_S = 0.02
#: The role the bench's own connections use, so pg_stat_statements can leave them out.
BENCH_ROLE = "scaleout_bench"
#: Utility statements that open or close a transaction (each its own round trip in psycopg).
TXN_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|END)\b", re.I)
COUNTERS = re.compile(r"coordinator stopped bodies=(\d+) transactions=(\d+) calls: (.*)")


class StatsPostgres(systems.Postgres):
    """compare.py's PostgreSQL cluster with pg_stat_statements loaded (set before start)."""

    SETTINGS = {**systems.Postgres.SETTINGS,
                "shared_preload_libraries": "'pg_stat_statements'",
                "pg_stat_statements.track": "top",
                "pg_stat_statements.track_utility": "on",
                "pg_stat_statements.max": "10000"}

    def __init__(self) -> None:
        """Start the cluster; create the extension and the bench's role."""
        super().__init__()
        admin = self.cluster._admin_connection()
        # The view lives in the database it is created in and shows every database's rows.
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        admin.execute(f'CREATE ROLE "{BENCH_ROLE}" LOGIN SUPERUSER')
        self.bench_oid = int(admin.execute(
            "SELECT oid FROM pg_roles WHERE rolname = %s", (BENCH_ROLE,)).fetchone()[0])

    @property
    def admin(self) -> Any:
        """The autocommit admin connection (database `postgres`, the cluster's superuser)."""
        return self.cluster._admin_connection()

    def bench_connection(self, dbname: str) -> Any:
        """A connection as BENCH_ROLE; its reads end in ROLLBACK (not in xact_commit)."""
        import psycopg

        kwargs = dict(self.cluster.connect_kwargs(dbname), user=BENCH_ROLE)
        return psycopg.connect(**kwargs)

    def shown(self) -> str:
        """The settings that matter here, as the server reports them."""
        keys = ("synchronous_commit", "fsync", "shared_preload_libraries")
        return " ".join(f"{k}={self.admin.execute(f'SHOW {k}').fetchone()[0]}" for k in keys)


# --- processes -------------------------------------------------------------------------------


def taskgrid_argv(*args: str) -> list[str]:
    """`taskgrid ARGS` with this interpreter (it imports the frozen copy via PYTHONPATH)."""
    return [sys.executable, "-m", "taskgrid", *args]


def rotated(items: list[str], k: int) -> list[str]:
    """The list started at item k mod len, the earlier ones moved to the end."""
    k %= len(items)
    return items[k:] + items[:k]


class Nodes:
    """N coordinators on one database and the 2 workers, for one phase; stop() ends them all."""

    def __init__(self, folder: Path, db_url: str, n: int, env: dict[str, str]) -> None:
        """Start n coordinators on db_url, each on a free loopback port."""
        self.folder, self.db_url, self.env = folder, db_url, env
        self.coordinators: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []
        for i in range(n):  # one after the other: the first one migrates the fresh database
            proc = systems.spawn(taskgrid_argv("coordinator", "--db", db_url, "--listen",
                                               "127.0.0.1:0"),
                                 folder / f"coordinator{i}.log", env, stdout=subprocess.PIPE)
            self.coordinators.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            if "listening on" not in line:
                self.stop()
                raise RuntimeError(f"coordinator {i} did not start (see {folder})")
            self.addresses.append(line.rsplit(" ", 1)[1].strip())
            threading.Thread(target=proc.stdout.read, daemon=True).start()

    def start_workers(self, count: int, concurrency: int) -> None:
        """Worker i gets every address, the list rotated by i (it starts at coordinator i)."""
        for i in range(count):
            self.workers.append(systems.spawn(
                taskgrid_argv("worker", "--tasks", str(TASKS_FILE), "--coordinator",
                              ",".join(rotated(self.addresses, i)), "--name", f"scaleout-w{i}",
                              "--concurrency", str(concurrency), "--log-level", "WARNING"),
                self.folder / f"worker{i}.log", self.env))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the coordinators (all of them) and the workers' trees."""
        return {"coord": sum(systems.cpu_s(p.pid) for p in self.coordinators),
                "workers": systems.tree_cpu_s([p.pid for p in self.workers])}

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM the workers (they drain), then the coordinators (they log their counters);
        kill anything left. Returns each coordinator's shutdown counters."""
        everyone = self.workers + self.coordinators
        tree = [(pid, systems.start_ticks(pid)) for pid in systems.descendants(
            [p.pid for p in everyone])]
        for group in (self.workers, self.coordinators):
            for p in group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in group:
                systems.kill_group(p, None)
        for pid, ticks in tree:
            if ticks is not None and systems.start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return [counters(self.folder / f"coordinator{i}.log")
                for i in range(len(self.coordinators))]


def counters(path: Path) -> dict[str, Any]:
    """`coordinator stopped bodies=N transactions=M calls: A=1 B=2` of one coordinator's log."""
    m = COUNTERS.search(path.read_text(errors="replace")) if path.exists() else None
    if not m:
        return {"missing": True}
    calls = dict(kv.split("=") for kv in m.group(3).split() if "=" in kv)
    return {"bodies": int(m.group(1)), "transactions": int(m.group(2)),
            "calls": {k: int(v) for k, v in calls.items()}}


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until predicate() is true; TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)  # a measuring loop: nothing signals completion to the bench


# --- one phase -------------------------------------------------------------------------------


class Phase:
    """One phase on a fresh database: its nodes, clients, side connection and measurements."""

    def __init__(self, pg: StatsPostgres, folder: Path, n: int, args: argparse.Namespace,
                 env: dict[str, str]) -> None:
        """A fresh database, n coordinators on it and one client per coordinator."""
        from taskgrid.client import Scheduler

        self.pg, self.args, self.n = pg, args, n
        self.dbname = pg.cluster.create_database()
        self.db_oid = int(pg.admin.execute("SELECT oid FROM pg_database WHERE datname = %s",
                                           (self.dbname,)).fetchone()[0])
        pg.admin.execute("SELECT pg_stat_statements_reset()")
        folder.mkdir(parents=True)
        self._nodes: Nodes | None = None
        self.clients: list[Any] = []
        self.side: Any = None
        self.queued = 0  # tasks queued in the phase's life, for the per-task costs
        try:
            self._nodes = Nodes(folder, pg.cluster.url(self.dbname), n, env)
            #: client k starts at coordinator k (the whole list, rotated, so it can fail over)
            self.clients = [Scheduler(",".join(rotated(self.nodes.addresses, k)))
                            for k in range(n)]
            self.side = pg.bench_connection(self.dbname)
        except BaseException:
            self.close()
            raise

    @property
    def nodes(self) -> Nodes:
        """The phase's processes."""
        assert self._nodes is not None, "the nodes did not start"
        return self._nodes

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """A read on the side connection, rolled back (so it commits nothing)."""
        try:
            return list(self.side.execute(query, params).fetchall())
        finally:
            self.side.rollback()

    def completed(self) -> int:
        """How many tasks are COMPLETED (read on the side, not through a coordinator)."""
        return int(self.sql("SELECT count(*) FROM scheduler_task WHERE status = 'COMPLETED'")
                   [0][0])

    def start_workers(self) -> None:
        """Start the 2 workers and wait until both are registered."""
        self.nodes.start_workers(2, self.args.concurrency)
        wait_for(lambda: len(self.clients[0].get_workers()) >= 2, self.args.timeout_s,
                 "2 workers to register")

    def warm_up(self) -> None:
        """WARMUP_TASKS single tasks through the coordinators in turn, run to completion."""
        for i in range(WARMUP_TASKS):
            self.queue_one(i % self.n, -1 - i)
        wait_for(lambda: self.completed() >= WARMUP_TASKS, self.args.timeout_s, "the warm-up")

    def queue_one(self, k: int, i: int) -> int:
        """Queue noop(i) through coordinator k; returns the task's id."""
        r = self.clients[k].queue_task("noop", pargs=[i])
        if r.errors or r.id is None:
            raise RuntimeError(f"queue_task: {r.errors}")
        self.queued += 1
        return int(r.id)

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far of each group, this process, the machine, and the clock."""
        cpu = self.nodes.cpu()
        return {**cpu, "postgres": systems.tree_cpu_s([self.pg.postmaster()]),
                "bench": systems.cpu_s(os.getpid()), "machine": systems.machine_busy_s(),
                "wall": time.monotonic()}

    @contextlib.contextmanager
    def window(self, out: dict[str, Any]) -> Iterator[None]:
        """Measure CPU of every group over the block; stored in out['cpu_s'] and ['wall_s']."""
        a = self.snapshot()
        yield
        b = self.snapshot()
        cpu = {k: b[k] - a[k] for k in ("coord", "postgres", "workers", "bench")}
        cpu["other"] = max(0.0, (b["machine"] - a["machine"]) - sum(cpu.values()))
        out["cpu_s"], out["wall_s"] = cpu, b["wall"] - a["wall"]

    def finish(self) -> dict[str, Any]:
        """Stop everything, then read the database's counters (once its backends are gone)."""
        for c in self.clients:
            c.close()
        self.clients = []
        self.side.close()
        coords = self.nodes.stop()
        # a backend flushes its statistics as it exits: wait until the database has none
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: self.pg.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datid = %s",
                (self.db_oid,)).fetchone()[0] == 0, 10, "the database's backends to exit")
        xact = self.pg.admin.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datid = %s",
            (self.db_oid,)).fetchone()
        rows = self.pg.admin.execute(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements "
            "WHERE dbid = %s AND userid <> %s ORDER BY calls DESC",
            (self.db_oid, self.pg.bench_oid)).fetchall()
        self.pg.cluster.drop_database(self.dbname)
        control: dict[str, int] = {}
        for q, c, _ in rows:
            if m := TXN_CONTROL.match(q):
                word = m.group(1).upper()
                control[word] = control.get(word, 0) + int(c)
        statements = sum(c for q, c, _ in rows if not TXN_CONTROL.match(q))
        return {"coordinators": coords, "xact_commit": int(xact[0]),
                "xact_rollback": int(xact[1]), "statements": int(statements),
                "txn_control": control,
                "exec_ms": float(sum(t for q, _, t in rows if not TXN_CONTROL.match(q))),
                "top": [[" ".join(q.split())[:240], int(c)] for q, c, _ in rows],
                "tasks_queued": self.queued}

    def close(self) -> None:
        """Stop whatever is still running (after a failure)."""
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        if self.side is not None:
            with contextlib.suppress(Exception):
                self.side.close()
        if self._nodes is not None:
            self._nodes.stop()
        with contextlib.suppress(Exception):
            self.pg.cluster.drop_database(self.dbname)


def burn(ph: Phase) -> dict[str, Any]:
    """QueueTasks batches through the coordinators in turn, then the workers drain them."""
    n, size = ph.args.tasks, ph.args.batch
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, n, size)):
        results = ph.clients[b % ph.n].queue_tasks(
            [{"function": "noop", "pargs": [i]} for i in range(start, min(n, start + size))])
        if any(r.errors for r in results):
            raise RuntimeError(f"queue_tasks: {results[0].errors}")
        ph.queued += len(results)
    out["enqueue_rate"] = n / (time.perf_counter() - t0)
    with ph.window(out):
        ph.start_workers()
        wait_for(lambda: ph.completed() >= n, ph.args.timeout_s, f"{n} completions")
    first, last = ph.sql("SELECT extract(epoch FROM min(start_time)), "
                         "extract(epoch FROM max(stop_time)) FROM scheduler_run")[0]
    out["rate"] = n / (float(last) - float(first))
    return out


def latency(ph: Phase) -> dict[str, Any]:
    """Single tasks at a fixed rate through the coordinators in turn; q2s from the rows."""
    ph.start_workers()
    ph.warm_up()
    ids: list[int] = []
    out: dict[str, Any] = {}
    gap = 1.0 / ph.args.rate
    with ph.window(out):
        t0 = time.perf_counter()
        for i in range(ph.args.samples):
            time.sleep(max(0.0, t0 + i * gap - time.perf_counter()))
            ids.append(ph.queue_one(i % ph.n, i))
        out["queue_rate"] = len(ids) / (time.perf_counter() - t0)  # below --rate: calls lag
        wait_for(lambda: ph.completed() >= WARMUP_TASKS + len(ids), ph.args.timeout_s,
                 "the latency tasks")
    rows = ph.sql("SELECT extract(epoch FROM r.start_time - t.created_at) * 1000 "
                  "FROM scheduler_run r JOIN scheduler_task t ON t.id = r.task_id "
                  "WHERE t.id = ANY(%s)", (ids,))
    out["samples_ms"] = [float(r[0]) for r in rows]
    out["lost"] = len(ids) - len(rows)  # tasks with no run row
    return out


def producers(ph: Phase) -> dict[str, Any]:
    """P threads, each its own Scheduler starting at coordinator k % N, one call per task."""
    from taskgrid.client import Scheduler

    ph.start_workers()
    ph.warm_up()
    p, n = ph.args.producers, ph.args.tasks
    shares = [n // p + (1 if k < n % p else 0) for k in range(p)]
    clients = [Scheduler(",".join(rotated(ph.nodes.addresses, k))) for k in range(p)]
    durations: list[list[float]] = [[] for _ in range(p)]
    ends: list[float] = [0.0] * p
    errors = [0] * p
    try:
        for k, c in enumerate(clients):  # connect now, not inside the burst
            if c.queue_task("noop", pargs=[-1000 - k]).errors:
                raise RuntimeError("a producer's first call failed")
            ph.queued += 1
        base = WARMUP_TASKS + p
        wait_for(lambda: ph.completed() >= base, ph.args.timeout_s, "the producers' warm-up")
        barrier = threading.Barrier(p + 1)

        def produce(k: int, first: int) -> None:
            barrier.wait()
            for i in range(first, first + shares[k]):
                t = time.perf_counter()
                try:
                    r = clients[k].queue_task("noop", pargs=[i])
                except Exception:  # counted and reported; the burst goes on
                    errors[k] += 1
                    continue
                if r.errors:
                    errors[k] += 1
                    continue
                durations[k].append((time.perf_counter() - t) * 1000)
            ends[k] = time.perf_counter()

        threads = [threading.Thread(target=produce, args=(k, sum(shares[:k])))
                   for k in range(p)]
        out: dict[str, Any] = {}
        with ph.window(out):
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join(ph.args.timeout_s)
            calls = sum(len(d) for d in durations)
            ph.queued += calls
            wait_for(lambda: ph.completed() >= base + calls, ph.args.timeout_s,
                     "the producers' tasks")
            t_done = time.perf_counter()
    finally:
        for c in clients:
            c.close()
    out.update(calls=calls, errors=sum(errors), calls_per_s=calls / (max(ends) - t0),
               e2e_rate=calls / (t_done - t0),
               call_ms=[x for d in durations for x in d])
    return out


def run_phase(pg: StatsPostgres, folder: Path, n: int, phase: str, args: argparse.Namespace,
              env: dict[str, str]) -> dict[str, Any]:
    """One phase with n coordinators: its raw result (counters included)."""
    ph = Phase(pg, folder, n, args, env)
    try:
        result = {"burn": burn, "latency": latency, "producers": producers}[phase](ph)
        result.update(ph.finish())
    except BaseException:
        ph.close()
        raise
    return result


# --- figures ---------------------------------------------------------------------------------


def figures(phase: str, r: dict[str, Any]) -> dict[str, float]:
    """The numbers one phase's raw result gives ({} when it failed)."""
    if "error" in r:
        return {}
    out: dict[str, float] = {}
    if phase == "burn":
        out.update(rate=r["rate"], enqueue_rate=r["enqueue_rate"])
        measured = r["tasks_queued"]
    elif phase == "latency":
        s = r["samples_ms"]
        out.update(p50=percentile(s, 50), p99=percentile(s, 99), max=max(s), lost=r["lost"],
                   queue_rate=r["queue_rate"])
        measured = len(s)
    else:
        d = r["call_ms"]
        out.update(calls_per_s=r["calls_per_s"], call_p50=percentile(d, 50),
                   call_p99=percentile(d, 99), e2e_rate=r["e2e_rate"], errors=r["errors"])
        measured = r["calls"]
    q = r["tasks_queued"]
    coords = r["coordinators"]
    if all("transactions" in c for c in coords):
        txn = sum(c["transactions"] for c in coords)
        calls = sum(v for c in coords for k, v in c["calls"].items() if k not in BENCH_CALLS)
        out.update(txn_per_task=txn / q, rpc_per_task=calls / q)
    # Explicit transactions: the COMMITs pg_stat_statements saw. xact_commit also counts the
    # pool's pre-ping (an empty query in autocommit, one per checkout, so one per coordinator
    # transaction) and each listening backend's read of the notification queue.
    control = r["txn_control"]
    explicit = max(1, control.get("COMMIT", 0))
    pings = sum(c.get("transactions", 0) for c in coords)
    out.update(xact_per_task=r["xact_commit"] / q, commit_per_task=explicit / q,
               stmt_per_task=r["statements"] / q,
               stmt_per_xact=r["statements"] / max(1, r["xact_commit"]),
               stmt_per_txn=r["statements"] / explicit,
               trips_per_txn=(r["statements"] + sum(control.values()) + pings) / explicit,
               exec_us=r["exec_ms"] * 1000 / q)
    wall = r["wall_s"]
    for group, seconds in r["cpu_s"].items():
        out[f"cores_{group}"] = seconds / wall
        out[f"cpu_us_{group}"] = seconds / measured * 1e6
    return out


MAIN_ROWS = [  # (phase, figure, label, decimals)
    ("burn", "rate", "batch burn-down, first run start to last run end (tasks/s)", 0),
    ("burn", "enqueue_rate", "batch enqueue before the workers start (tasks/s)", 0),
    ("latency", "p50", "queue-to-start p50 (ms)", 2),
    ("latency", "p99", "queue-to-start p99 (ms)", 2),
    ("latency", "queue_rate", "latency: single tasks queued per second (achieved)", 0),
    ("producers", "calls_per_s", "producers: QueueTask calls/s", 0),
    ("producers", "call_p50", "producers: call p50 (ms)", 2),
    ("producers", "call_p99", "producers: call p99 (ms)", 2),
    ("producers", "e2e_rate", "producers: tasks/s, first call to last completion", 0),
]
COST_ROWS = [  # (figure, label, decimals)
    ("txn_per_task", "coordinator transactions per task (shutdown lines)", 3),
    ("commit_per_task", "COMMIT statements per task", 3),
    ("xact_per_task", "xact_commit per task (with pings, notification reads)", 3),
    ("stmt_per_task", "statements per task (no BEGIN/COMMIT)", 2),
    ("stmt_per_txn", "statements per transaction (per COMMIT)", 2),
    ("stmt_per_xact", "statements per xact_commit", 2),
    ("trips_per_txn", "round trips per transaction (+BEGIN, COMMIT, ping)", 2),
    ("rpc_per_task", "RPCs per task", 3),
    ("exec_us", "statement execution time per task (us)", 0),
    ("cpu_us_coord", "coordinators' CPU per task (us)", 0),
    ("cpu_us_postgres", "PostgreSQL CPU per task (us)", 0),
    ("cpu_us_workers", "workers' CPU per task (us)", 0),
    ("cpu_us_bench", "bench process CPU per task (us)", 0),
    ("cores_coord", "cores: coordinators", 2),
    ("cores_postgres", "cores: PostgreSQL", 2),
    ("cores_workers", "cores: workers and their slots", 2),
    ("cores_bench", "cores: bench process (producers)", 2),
    ("cores_other", "cores: rest of the machine", 2),
]


def ratio(a: float | None, b: float | None, digits: int) -> str:
    """a / b, or n/a when b is missing or shows as zero at the row's precision."""
    if a is None or b is None or round(b, digits) == 0:
        return "n/a"
    return f"{a / b:.2f}"


def row(label: str, values: list[float | None], digits: int, ns: list[str]) -> list[str]:
    """One table row: the value at each N, then each N's ratio to N=1."""
    cells = [label] + [fmt(v, digits) for v in values]
    base = values[ns.index("1")] if "1" in ns else None
    cells += [ratio(values[ns.index(k)], base, digits) for k in ns if k != "1" and "1" in ns]
    return cells


def top_statements(raw: dict[str, Any], ns: list[str], count: int = 10) -> str:
    """The burn phase's most called statements (last round), calls per task at each N."""
    per_n: dict[str, dict[str, float]] = {}
    for n in ns:
        rs = [r for r in raw[n].get("burn", []) if "top" in r]
        if rs:
            calls = per_n.setdefault(n, {})
            for text, c in rs[-1]["top"]:
                calls[text] = calls.get(text, 0.0) + c / rs[-1]["tasks_queued"]
    if not per_n:
        return ""
    texts: list[str] = []
    for calls in per_n.values():
        for text in sorted(calls, key=calls.__getitem__, reverse=True)[:count]:
            if text not in texts:
                texts.append(text)
    rows = [[f"`{t[:100]}`"] + [f"{per_n[n].get(t, 0.0):.3f}" if n in per_n else "n/a" for n in ns]
            for t in texts]
    return ("Most called statements, burn phase, last round (calls per task; the store sends "
            "the per-row ones as one pipelined executemany per transaction and shape)\n"
            + table(["statement"] + [f"N={n}" for n in ns], rows))


def report(raw: dict[str, Any], info: dict[str, Any]) -> str:
    """The Markdown report of a run's raw results."""
    per_round = {n: {p: [figures(p, r) for r in rs] for p, rs in ph.items()}
                 for n, ph in raw.items()}
    m = medians(per_round)
    ns = list(raw)
    header = ["figure"] + [f"N={n}" for n in ns] + [f"N={n}/N=1" for n in ns
                                                    if n != "1" and "1" in ns]
    a = info["args"]
    out = [f"taskgrid scale-out on one PostgreSQL, {info['date']}, {a['rounds']} round(s), "
           f"wall {info['wall']}",
           f"taskgrid measured: {info['code']}; bench at {info['commit']}",
           f"postgres: {info['postgres']}",
           f"workload: 2 workers x {a['concurrency']} slots (bench_tasks.noop); burn-down "
           f"{a['tasks']} tasks in QueueTasks batches of {a['batch']}; latency {a['samples']} "
           f"single tasks at {a['rate']:g}/s; {a['producers']} producer threads, {a['tasks']} "
           "QueueTask calls; medians of rounds",
           f"load average before {info['load_before']}, after {info.get('load_after', '?')}",
           "", "Throughput and latency (N = coordinators on one database)"]
    out.append(table(header, [row(label, [m.get(n, {}).get(p, {}).get(k) for n in ns],
                                  d, ns) for p, k, label, d in MAIN_ROWS]))
    for phase in PHASES:
        out.append(f"Costs, {phase} phase (per task over the phase's life; CPU and cores over "
                   "the measured window)")
        out.append(table(header, [row(label, [m.get(n, {}).get(phase, {}).get(k) for n in ns],
                                      d, ns) for k, label, d in COST_ROWS]))
    out.append(top_statements(raw, ns))
    errors = [f"  N={n} {p} round {i + 1}: {r['error']}" for n, ph in raw.items()
              for p, rs in ph.items() for i, r in enumerate(rs) if "error" in r]
    if errors:
        out += ["problems:"] + errors
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line (the module docstring's usage)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=10_000,
                   help="tasks of the burn-down and QueueTask calls of the producers phase")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--coordinators", default="1,2,3", help="the values of N, comma-separated")
    p.add_argument("--samples", type=int, default=1000, help="latency tasks per round")
    p.add_argument("--rate", type=float, default=200.0, help="latency tasks queued per second")
    p.add_argument("--producers", type=int, default=8, help="producer threads")
    p.add_argument("--batch", type=int, default=1000, help="tasks per QueueTasks call")
    p.add_argument("--concurrency", type=int, default=8, help="slots per worker (2 workers)")
    p.add_argument("--phase", action="append", choices=PHASES,
                   help="run only this phase (repeatable)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rev", default="HEAD",
                       help="measure this committed revision (git archive; default HEAD)")
    which.add_argument("--worktree", action="store_true",
                       help="measure the work tree as it is when the run starts")
    p.add_argument("--timeout-s", type=float, default=0.0,
                   help="bound of each wait (default 120 s + tasks / 50 per s)")
    p.add_argument("--report", metavar="RESULTS_JSON",
                   help="print the report of a saved run again (no measuring)")
    args = p.parse_args()
    if args.timeout_s <= 0:
        args.timeout_s = 120.0 + args.tasks / 50
    return args


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    """Run every round, print the report, save the raw results."""
    args = parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        print(report(saved["raw"], saved["info"]))
        return 0
    signal.signal(signal.SIGTERM, interrupted)
    ns = [s.strip() for s in args.coordinators.split(",")]
    phases = [p for p in PHASES if not args.phase or p in args.phase]
    info: dict[str, Any] = {"commit": commit(), "load_before": loadavg(),
                            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                            "args": vars(args)}
    if not ensure_postgres():
        raise SystemExit("no PostgreSQL server binaries (scripts/ensure_postgres.sh)")
    folder = Path(tempfile.mkdtemp(prefix="taskgrid-scaleout-"))
    code = Snapshot(folder / "code", None if args.worktree else args.rev)
    info["code"] = code.describe()
    sys.path.insert(0, str(code.path))  # this process's client: the same copy
    import taskgrid

    if not str(taskgrid.__file__).startswith(str(code.path)):
        raise SystemExit(f"taskgrid imported from {taskgrid.__file__}, not the copy")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {n: {p: [] for p in phases} for n in ns}
    started = time.monotonic()
    pg = StatsPostgres()
    info["postgres"] = f"{pg.version}; {pg.shown()}"
    try:
        for rnd in range(args.rounds):
            for n in rotated(ns, rnd):
                for phase in phases:
                    t0 = time.monotonic()
                    try:
                        r = run_phase(pg, folder / f"r{rnd + 1}-n{n}-{phase}", int(n), phase,
                                      args, code.env)
                    except Exception as exc:  # one failed phase is reported, the run goes on
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                    raw[n][phase].append(r)
                    f = figures(phase, r)
                    brief = r.get("error") or " ".join(
                        f"{k}={v:.4g}" for k, v in f.items()
                        if k in ("rate", "p50", "p99", "calls_per_s", "e2e_rate",
                                 "txn_per_task", "trips_per_txn", "cores_coord",
                                 "cores_postgres"))
                    log(f"round {rnd + 1}/{args.rounds} N={n} {phase:9} "
                        f"{time.monotonic() - t0:5.1f} s  {brief}")
    finally:
        pg.stop()
    info["wall"] = f"{(time.monotonic() - started) / 60:.1f} min"
    info["load_after"] = loadavg()
    saved = folder / "results.json"
    saved.write_text(json.dumps({"info": info, "raw": raw}, indent=1))
    print(report(raw, info))
    print(f"(logs and raw results in {folder}; `--report {saved}` prints this again)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: every process the bench started has been stopped")
        sys.exit(130)
