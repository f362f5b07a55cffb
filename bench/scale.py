"""Flat at scale (issue 9, point 3): claim cost, burn-down and coordinator RSS vs. table size.

Usage (from a fresh clone, after `make install`):

    .venv/bin/python bench/scale.py            # full run: 1,000,000 future + 1,000,000 finished
    .venv/bin/python bench/scale.py --quick    # a try: 100,000 + 100,000, 5,000 due, 100,000 RSS
    .venv/bin/python bench/scale.py --rev HEAD # measure a committed revision, not the work tree

Options: --future N (1,000,000 QUEUED tasks due in one to two days), --finished N (1,000,000
COMPLETED tasks, each with its run row), --small N (1,000: the reference database has N future
and N finished), --due N (10,000 tasks burnt down per measurement), --rounds R (2 burn-downs per
database, alternating small and large; the median is reported), --rss-tasks N (1,000,000),
--rss-every N (50,000), --claims N (2,000 empty claims per round at most), --db sqlite (the only
backend measured; PostgreSQL is not), --rev REV.

The code measured is frozen at the start, as bench/compare.py does (bench/peers/snapshot.py):
the work tree as it is then, or `git archive REV`, copied under the `taskgrid.*` names and
imported from there by this process and, through PYTHONPATH, by every coordinator and worker;
the report's first lines name it.

What it measures, on SQLite:

1. Databases: the schema comes from `Store(url).migrate()` (the coordinator's own migrations,
   so whatever index they create), then plain sqlite3 inserts, in one transaction with the
   indexes dropped and re-created afterwards: N COMPLETED tasks (and their run rows) and N
   QUEUED tasks whose next_run_time is one to two days ahead, every column as the coordinator
   writes it. They are cached in /tmp/taskgrid-scale/, keyed by the sizes and a hash of the
   migrations (a new index means a new database); every measurement works on a copy.
2. Empty claim: on each database, with nothing due and no coordinator serving it, the claim's
   query pair `due_tasks` then `next_due_time` (group "main", function "noop", deps=False) in
   one `Store.transact` each, timed over rounds (at most --claims calls or ~1 s per round; the
   median round is reported), and each query alone. Every SELECT the pair sends to SQLite is
   captured with the DB-API connection's trace callback (it sees statements sent through
   SQLAlchemy and straight on the cursor alike, parameters bound in) and its `EXPLAIN QUERY
   PLAN` printed: which index serves the claim.
3. Burn-down: a coordinator on a copy of each database, 2 workers x 8 slots, 100 warm-up tasks,
   then --due noop tasks queued in QueueTasks batches of 1,000 (due now); tasks/s from the first
   queue call until all are COMPLETED (polled every 20 ms by primary key from the side),
   coordinator CPU (utime + stime from /proc) per task, and "other load": CPU the machine spent
   outside this bench's processes, in cores (the machine is shared).
4. RSS: a coordinator on a fresh database burns down --rss-tasks tasks, queued 1,000 at a time
   whenever fewer than 3,000 are outstanding; its VmRSS is sampled every --rss-every completed
   tasks. The ratio is the last sample over the first one after warm-up (--rss-every tasks).

The requirement: large/small within 1.2x for the empty claim (us), the burn-down (small's
tasks/s over large's) and the coordinator's CPU per task; RSS flat (the ratio is printed
beside the same 1.2x).

Every wait is bounded (start-up 120 s, a burn-down 120 s + N/50 s, no progress for 60 s); every
process started runs in its own process group and is stopped (SIGTERM, then SIGKILL) on the way
out, on error or Ctrl-C too. Logs and working copies go to /tmp/taskgrid-scale-run-*/ (the
copies are deleted after use).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import pathlib
import re
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from peers.snapshot import Snapshot  # bench/peers: the frozen copy compare.py measures too

HERE = pathlib.Path(__file__).resolve().parent
TASKS = HERE / "bench_tasks.py"
CACHE = pathlib.Path("/tmp/taskgrid-scale")
#: bump when the rows this script writes change (a new cache key)
BUILD_VERSION = 1
BATCH = 1000
WARMUP = 100
WORKERS = 2
CONCURRENCY = 8
START_TIMEOUT_S = 120
STALL_TIMEOUT_S = 60
BOUND = 1.2
BAD_ENDS = ("FAILED", "TIMEOUT", "STOPPED", "EXPIRED")
CLK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The measurement could not be taken (a process died, a wait timed out)."""


def say(msg: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ------------------------------------------------------------------------------

class Code:
    """The taskgrid code measured: a frozen copy, imported by this process and its children."""

    snapshot: Snapshot | None = None

    @classmethod
    def freeze(cls, folder: pathlib.Path, rev: str | None) -> str:
        """Copy the sources (work tree, or `git archive REV`) and import them from the copy."""
        cls.snapshot = Snapshot(folder, rev)
        sys.path.insert(0, str(cls.snapshot.path))
        import taskgrid.coordinator

        where = pathlib.Path(taskgrid.coordinator.__file__)
        if not where.is_relative_to(cls.snapshot.path):
            raise BenchError(f"taskgrid imported from {where}, not from the copy")
        return cls.snapshot.describe()

    @classmethod
    def env(cls) -> dict[str, str]:
        """The environment of every taskgrid process (PYTHONPATH = the copy)."""
        assert cls.snapshot is not None
        return cls.snapshot.env


class Procs:
    """Every process this bench started, each the leader of its own process group."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: IO[bytes], stdout: Any = None) -> subprocess.Popen[bytes]:
        """Start `cmd` in a new session (its own process group)."""
        p = subprocess.Popen(cmd, stdout=stdout if stdout is not None else log,
                             stderr=log if stdout is not None else subprocess.STDOUT,
                             start_new_session=True, env=Code.env())
        self.live.append(p)
        return p

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], wait_s: float = 15) -> None:
        """SIGTERM the groups, wait, then SIGKILL whatever is left."""
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            # any child left in the group (a worker's slot process)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            if p.stdout is not None:
                p.stdout.close()
            if p in self.live:
                self.live.remove(p)

    def stop_all(self) -> None:
        """Workers first (they were started last), then coordinators."""
        self.stop(list(reversed(self.live)))


PROCS = Procs()


def tg_command(*args: str) -> list[str]:
    """`taskgrid ARGS` with this interpreter."""
    return [sys.executable, "-m", "taskgrid", *args]


def tail(path: pathlib.Path, lines: int = 15) -> str:
    """The end of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Cluster:
    """A coordinator on one SQLite file and its workers."""

    def __init__(self, db: pathlib.Path, folder: pathlib.Path, tag: str, workers: int) -> None:
        self.log = folder / f"coordinator-{tag}.log"
        self.coord = PROCS.start(
            tg_command("coordinator", "--db", f"sqlite:///{db}", "--listen", "127.0.0.1:0"),
            open(self.log, "wb"), stdout=subprocess.PIPE)  # noqa: SIM115
        assert self.coord.stdout is not None
        ready, _, _ = select.select([self.coord.stdout], [], [], START_TIMEOUT_S)
        line = self.coord.stdout.readline().decode() if ready else ""
        if not line:
            PROCS.stop([self.coord])
            raise BenchError(f"coordinator gave no address within {START_TIMEOUT_S} s:\n"
                             f"{tail(self.log)}")
        self.address = line.rsplit(" ", 1)[1].strip()
        self.workers = [PROCS.start(
            tg_command("worker", "--tasks", str(TASKS), "--coordinator", self.address, "--name",
                     f"w{i}", "--concurrency", str(CONCURRENCY), "--log-level", "WARNING"),
            open(folder / f"worker{i}-{tag}.log", "wb")) for i in range(workers)]  # noqa: SIM115
        from taskgrid.client import Scheduler

        self.client = Scheduler(self.address)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self.client.get_workers()) < workers:
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"workers did not register within {START_TIMEOUT_S} s")
            time.sleep(0.05)

    def check(self) -> None:
        """Raise if any process of the cluster has exited."""
        for p in [self.coord, *self.workers]:
            if p.poll() is not None:
                raise BenchError(f"process {p.args[3] if len(p.args) > 3 else p.args} exited "
                                 f"with {p.returncode}; coordinator log:\n{tail(self.log)}")

    def queue(self, n: int) -> None:
        """Queue n noop tasks, due now, in one QueueTasks call."""
        from taskgrid.v1 import client_pb2, common_pb2

        req = client_pb2.QueueTasksRequest(tasks=[
            common_pb2.TaskSpec(function_name="noop", args="[1]") for _ in range(n)])
        resp = self.client._tasks.QueueTasks(req, timeout=60)
        bad = [dict(r.errors) for r in resp.results if r.errors]
        if bad:
            raise BenchError(f"QueueTasks refused tasks: {bad[0]}")

    def pgids(self) -> set[int]:
        """The process groups of this cluster."""
        return {p.pid for p in [self.coord, *self.workers]}

    def close(self) -> None:
        """Stop workers, then the coordinator."""
        with contextlib.suppress(Exception):
            self.client.close()
        PROCS.stop(self.workers)
        PROCS.stop([self.coord])


def proc_cpu(pid: int) -> float:
    """utime + stime of one process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_rss_mb(pid: int) -> float:
    """VmRSS of one process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def groups_cpu(pgids: set[int]) -> float:
    """CPU seconds of every live process in these groups (children reaped: in cutime)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            total += sum(int(x) for x in fields[11:15])
    return total / CLK


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def own_cpu() -> float:
    """This bench's own CPU seconds."""
    t = os.times()
    return t.user + t.system


class Progress:
    """How many tasks queued after `base` are still not COMPLETED: read by primary key only.

    `mark` is an id below which every task is COMPLETED, so each poll scans only the
    unfinished tail (whatever indexes the schema has).
    """

    def __init__(self, db: pathlib.Path) -> None:
        self.conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        self.mark = self.max_id()

    def max_id(self) -> int:
        """The highest task id."""
        return int(self.conn.execute(
            "SELECT coalesce(max(id), 0) FROM scheduler_task").fetchone()[0])

    def outstanding(self) -> int:
        """Tasks above the mark not COMPLETED yet; raises if one ended otherwise."""
        marks = ", ".join("?" * len(BAD_ENDS))
        n, low, bad = self.conn.execute(
            f"SELECT count(*), min(id), coalesce(sum(status IN ({marks})), 0) "
            "FROM scheduler_task WHERE id > ? AND status != 'COMPLETED'",
            (*BAD_ENDS, self.mark)).fetchone()
        if bad:
            raise BenchError(f"{bad} tasks ended in a status other than COMPLETED")
        self.mark = low - 1 if low is not None else self.max_id()
        return int(n)

    def close(self) -> None:
        """Close the side connection."""
        self.conn.close()


# -- databases ------------------------------------------------------------------------------

def ts(when: dt.datetime) -> str:
    """A naive UTC datetime as SQLAlchemy's SQLite DateTime stores it."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def migrations_hash() -> str:
    """Of the coordinator's migrations (so a new index means a new cached database)."""
    h = hashlib.sha256(f"build {BUILD_VERSION}".encode())
    import taskgrid.coordinator

    folder = pathlib.Path(taskgrid.coordinator.__file__).parent / "migrations"
    for f in sorted(folder.rglob("*.py")):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


#: Every task column the coordinator writes, as validation.py and a real completion leave it.
TASK_COMMON: dict[str, Any] = {
    "task_name": "noop", "group_name": "main", "function_name": "noop", "args": "[1]",
    "vars": "{}", "enabled": 1, "stop_time": None, "repeats": 1, "retry_failed": 0,
    "period": 60, "prevent_drift": 0, "cronline": None, "timeout": 60, "sync_output": 0,
    "times_failed": 0, "broadcast": 0, "priority": 0, "discard_results": 0, "lost_count": 0,
    "stop_requested": 0, "retry_delay": 0.0, "retry_backoff": 1.0, "retry_delay_max": 0.0,
    "retry_jitter": 0.0, "broadcast_parent": 0, "target_worker_name": "", "command": None,
    # varying per row:
    "uuid": None, "status": None, "start_time": None, "next_run_time": None,
    "last_run_time": None, "times_run": 0, "assigned_worker_name": "", "attempt": 0,
    "created_at": None,
}
RUN_COMMON: dict[str, Any] = {
    "task_id": None, "attempt": 1, "status": "COMPLETED", "start_time": None, "stop_time": None,
    "run_output": "", "run_result": "1", "traceback": "", "worker_name": "w0",
}


def columns(conn: sqlite3.Connection, table: str, known: dict[str, Any]) -> list[str]:
    """The table's columns this script fills; fails on a NOT NULL column it does not know."""
    names = []
    for _cid, name, _type, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
        if pk:
            continue
        if name in known:
            names.append(name)
        elif notnull and default is None:
            raise BenchError(f"{table}.{name} is NOT NULL without a default: teach "
                             "bench/scale.py what the coordinator writes there")
    return names


def rows(names: list[str], common: dict[str, Any], n: int,
         vary: Callable[[int], dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    """n rows in `names` order: `common` overridden by vary(i)."""
    row = [common[c] for c in names]
    pos = {c: names.index(c) for c in vary(0)}
    for i in range(n):
        for c, v in vary(i).items():
            row[pos[c]] = v
        yield tuple(row)


def build(path: pathlib.Path, future: int, finished: int) -> None:
    """Make the database: schema by the coordinator's migrations, rows by bulk insert."""
    from taskgrid.coordinator.store import Store

    tmp = path.with_name(path.name + ".building")
    for f in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        f.unlink(missing_ok=True)
    store = Store(f"sqlite:///{tmp}")
    store.migrate()
    store.close()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    day = dt.timedelta(days=1)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-524288")
        task_cols = columns(conn, "scheduler_task", TASK_COMMON)
        run_cols = columns(conn, "scheduler_run", RUN_COMMON)
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('scheduler_task', 'scheduler_run')").fetchall()
        conn.execute("BEGIN")
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        first = int(conn.execute("SELECT coalesce(max(id), 0) FROM scheduler_task"
                                 ).fetchone()[0]) + 1
        step_done = day / max(finished, 1)
        step_future = day / max(future, 1)

        def done(i: int) -> dict[str, Any]:
            t = now - day - dt.timedelta(minutes=5) + i * step_done
            return {"uuid": f"00000001-0000-4000-8000-{i:012x}", "status": "COMPLETED",
                    "start_time": ts(t), "next_run_time": ts(t), "created_at": ts(t),
                    "last_run_time": ts(t + dt.timedelta(milliseconds=100)), "times_run": 1,
                    "assigned_worker_name": "w0", "attempt": 1}

        def run(i: int) -> dict[str, Any]:
            t = now - day - dt.timedelta(minutes=5) + i * step_done
            return {"task_id": first + i,
                    "start_time": ts(t + dt.timedelta(milliseconds=100)),
                    "stop_time": ts(t + dt.timedelta(milliseconds=105))}

        created = ts(now)

        def queued(i: int) -> dict[str, Any]:
            return {"uuid": f"00000002-0000-4000-8000-{i:012x}", "status": "QUEUED",
                    "start_time": created, "created_at": created,
                    "next_run_time": ts(now + day + i * step_future)}

        def insert(table: str, names: list[str], it: Iterator[tuple[Any, ...]]) -> None:
            marks = ", ".join("?" * len(names))
            conn.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", it)

        t0 = time.monotonic()
        insert("scheduler_task", task_cols, rows(task_cols, TASK_COMMON, finished, done))
        insert("scheduler_run", run_cols, rows(run_cols, RUN_COMMON, finished, run))
        insert("scheduler_task", task_cols, rows(task_cols, TASK_COMMON, future, queued))
        say(f"  rows inserted in {time.monotonic() - t0:.0f} s; re-creating "
            f"{len(indexes)} indexes")
        for _name, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    os.replace(tmp, path)


def cached_db(future: int, finished: int) -> pathlib.Path:
    """The cached database of these sizes for the current migrations, built when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"future{future}-finished{finished}"
    path = CACHE / f"{stem}-{migrations_hash()}.sqlite"
    for old in CACHE.glob(f"{stem}-*"):
        if old != path:
            old.unlink(missing_ok=True)  # built for other migrations
    if not path.exists():
        say(f"building {path.name} ({future:,} future + {finished:,} finished tasks)")
        t0 = time.monotonic()
        build(path, future, finished)
        say(f"  built in {time.monotonic() - t0:.0f} s, "
            f"{path.stat().st_size / 2**20:,.0f} MiB")
    return path


def copy_db(src: pathlib.Path, folder: pathlib.Path, name: str) -> pathlib.Path:
    """A working copy (the cached file is never opened by a coordinator)."""
    dst = folder / f"{name}.sqlite"
    for f in folder.glob(f"{name}.sqlite*"):
        f.unlink()
    shutil.copyfile(src, dst)
    return dst


def drop_db(path: pathlib.Path) -> None:
    """Delete a working copy and its WAL, shm and lock files."""
    for f in path.parent.glob(path.name + "*"):
        f.unlink(missing_ok=True)


# -- 2. empty claim -------------------------------------------------------------------------

def short_sql(sql: str) -> str:
    """The SQL on one line, a long column list shortened."""
    one = " ".join(sql.split())
    return re.sub(r"^SELECT (.{120,}?) FROM ", "SELECT <all columns> FROM ", one)


def render_plan(plan: list[tuple[Any, ...]]) -> list[str]:
    """EXPLAIN QUERY PLAN rows as an indented tree."""
    depth: dict[int, int] = {0: -1}
    out = []
    for node, parent, _unused, detail in plan:
        depth[node] = depth.get(parent, -1) + 1
        out.append("      " + "  " * depth[node] + str(detail))
    return out


def empty_claim(db: pathlib.Path, rounds: int, calls: int, budget_s: float
                ) -> tuple[dict[str, float], list[str]]:
    """us per empty claim (median round) for the pair and each query; and the query plans."""
    from taskgrid.coordinator.store import Store

    store = Store(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC)
    groups, functions = ["main"], ["noop"]

    def due(tx: Any) -> Any:
        return tx.due_tasks(groups, functions, now, 8, "w1", False)

    def nxt(tx: Any) -> Any:
        return tx.next_due_time(groups, functions, "w1", False)

    def pair(tx: Any) -> Any:
        return due(tx), nxt(tx)

    try:
        # Every statement reaches SQLite through the one DB-API connection (StaticPool),
        # through SQLAlchemy or straight on its cursor: its trace callback sees them all,
        # with the parameters bound in.
        captured: list[str] = []

        def trace(sql: str) -> None:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                captured.append(sql)

        raw = store.engine.raw_connection()
        dbapi = raw.dbapi_connection
        raw.close()
        assert isinstance(dbapi, sqlite3.Connection)
        dbapi.set_trace_callback(trace)
        try:
            found, when = store.transact(pair)
        finally:
            dbapi.set_trace_callback(None)
        if found:
            raise BenchError(f"{len(found)} tasks due in {db.name}: the claim is not empty")
        notes = [f"    {len(captured)} SELECTs per empty claim; next_due_time -> {when}"]

        def explain(tx: Any) -> list[list[tuple[Any, ...]]]:
            cur = dbapi.cursor()
            return [cur.execute("EXPLAIN QUERY PLAN " + sql).fetchall() for sql in captured]

        for sql, plan in zip(captured, store.transact(explain), strict=True):
            notes.append(f"    {short_sql(sql)}")
            notes.extend(render_plan(plan))
        out: dict[str, float] = {}
        for name, fn in (("claim", pair), ("due_tasks", due), ("next_due_time", nxt)):
            per_round = []
            done = 0
            for _ in range(rounds):
                done = 0
                t0 = time.perf_counter()
                while done < calls and (done < 3 or time.perf_counter() - t0 < budget_s):
                    store.transact(fn)
                    done += 1
                per_round.append((time.perf_counter() - t0) / done * 1e6)
            out[name] = statistics.median(per_round)
            out[f"{name}_calls"] = done
        return out, notes
    finally:
        store.close()


# -- 3. burn-down ---------------------------------------------------------------------------

def drain(cluster: Cluster, prog: Progress, timeout_s: float) -> int:
    """Wait until every queued task is COMPLETED; how many are left when timeout_s is up.

    Raises BenchError when no task completes for STALL_TIMEOUT_S.
    """
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while (left := prog.outstanding()) > 0:
        now = time.monotonic()
        if left != last:
            last, last_change = left, now
        if now > deadline:
            return left
        if now - last_change > STALL_TIMEOUT_S:
            raise BenchError(f"{left} tasks still not COMPLETED, none completed in the last "
                             f"{STALL_TIMEOUT_S} s")
        cluster.check()
        time.sleep(0.02)  # measuring loop, not synchronisation
    return 0


def burn(db: pathlib.Path, folder: pathlib.Path, tag: str, n: int) -> dict[str, float]:
    """tasks/s, coordinator us/task and other load of one burn-down of n due tasks."""
    cluster = Cluster(db, folder, tag, WORKERS)
    try:
        prog = Progress(db)
        cluster.queue(WARMUP)
        if drain(cluster, prog, START_TIMEOUT_S):
            raise BenchError(f"warm-up tasks not done in {START_TIMEOUT_S} s")
        pgids = cluster.pgids()
        c0, g0, m0, o0 = proc_cpu(cluster.coord.pid), groups_cpu(pgids), machine_busy(), own_cpu()
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            cluster.queue(min(BATCH, n - i))
        left = drain(cluster, prog, 120 + n / 50)
        wall = time.perf_counter() - t0
        c1, g1, m1, o1 = proc_cpu(cluster.coord.pid), groups_cpu(pgids), machine_busy(), own_cpu()
        prog.close()
    finally:
        cluster.close()
    other = ((m1 - m0) - (g1 - g0) - (o1 - o0)) / wall
    done = n - left
    return {"rate": done / wall, "cpu_us": (c1 - c0) / max(done, 1) * 1e6,
            "other": max(0.0, other), "wall": wall, "left": left}


# -- 4. RSS ---------------------------------------------------------------------------------

def rss_run(folder: pathlib.Path, total: int, every: int, depth: int = 3 * BATCH
            ) -> list[tuple[int, float, float, float]]:
    """(completed, RSS MiB, seconds, coordinator CPU s) every `every` completed tasks."""
    db = folder / "rss.sqlite"
    drop_db(db)
    cluster = Cluster(db, folder, "rss", WORKERS)
    try:
        pid = cluster.coord.pid
        prog = Progress(db)
        t0 = time.monotonic()
        samples = [(0, proc_rss_mb(pid), 0.0, proc_cpu(pid))]
        queued = done = 0
        next_sample = every
        last_done, last_change = 0, t0
        deadline = t0 + 300 + total / 100
        while done < total:
            done = queued - prog.outstanding()
            while queued < total and queued - done < depth:
                k = min(BATCH, total - queued)
                cluster.queue(k)
                queued += k
            now = time.monotonic()
            if done >= next_sample or done == total:
                samples.append((done, proc_rss_mb(pid), now - t0, proc_cpu(pid)))
                say(f"  rss: {done:,} completed, {samples[-1][1]:.1f} MiB")
                while next_sample <= done:
                    next_sample += every
            if done != last_done:
                last_done, last_change = done, now
            if now > deadline or now - last_change > STALL_TIMEOUT_S:
                raise BenchError(f"RSS run stuck at {done:,} of {total:,} completed")
            cluster.check()
            time.sleep(0.02)  # measuring loop
        prog.close()
    finally:
        cluster.close()
        drop_db(db)
    return samples


# -- report ---------------------------------------------------------------------------------

def verdict(ratio: float) -> str:
    """WITHIN or OUTSIDE the bound."""
    return f"{'WITHIN' if ratio <= BOUND else 'OUTSIDE'} {BOUND}x"


def interrupted(_signum: int, _frame: Any) -> None:
    """SIGTERM: unwind as Ctrl-C does (the finally clauses stop every process)."""
    raise KeyboardInterrupt


def main() -> int:
    """Build, measure, report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--future", type=int, default=1_000_000)
    p.add_argument("--finished", type=int, default=1_000_000)
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--due", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rss-tasks", type=int, default=1_000_000)
    p.add_argument("--rss-every", type=int, default=50_000)
    p.add_argument("--claims", type=int, default=2000)
    p.add_argument("--rev", help="measure this committed revision (git archive), not the "
                   "work tree as it is at the start")
    p.add_argument("--db", default="sqlite", choices=["sqlite"],
                   help="sqlite only (PostgreSQL is not measured by this script)")
    p.add_argument("--quick", action="store_true",
                   help="100,000 future/finished, 5,000 due, 100,000 RSS tasks every 10,000")
    args = p.parse_args()
    if args.quick:
        args.future = args.finished = 100_000
        args.due, args.rss_tasks, args.rss_every = 5000, 100_000, 10_000
    signal.signal(signal.SIGTERM, interrupted)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskgrid-scale-run-"))
    started = time.monotonic()
    try:
        code = Code.freeze(folder / "code", args.rev)
        say(f"taskgrid measured: {code}")
        return measure(args, folder, started, code)
    except BenchError as exc:
        print(f"scale.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scale.py: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        PROCS.stop_all()
        for f in folder.glob("*.sqlite*"):
            f.unlink(missing_ok=True)


def measure(args: argparse.Namespace, folder: pathlib.Path, started: float, code: str) -> int:
    """The measurements and the report."""
    sizes = {"small": (args.small, args.small), "large": (args.future, args.finished)}
    cached = {name: cached_db(*fn) for name, fn in sizes.items()}
    claim: dict[str, dict[str, float]] = {}
    plans: dict[str, list[str]] = {}
    for name, src in cached.items():
        say(f"empty claim on {name}")
        db = copy_db(src, folder, name)
        claim[name], plans[name] = empty_claim(db, rounds=5, calls=args.claims, budget_s=1.0)
        drop_db(db)
    burns: dict[str, list[dict[str, float]]] = {"small": [], "large": []}
    for r in range(args.rounds):
        for name in (("small", "large") if r % 2 == 0 else ("large", "small")):
            db = copy_db(cached[name], folder, name)
            say(f"burn-down {r + 1}/{args.rounds} on {name}: {args.due:,} tasks")
            res = burn(db, folder, f"{name}{r}", args.due)
            say(f"  {res['rate']:,.0f} tasks/s, coordinator {res['cpu_us']:.0f} us/task, "
                f"other load {res['other']:.2f} cores"
                + (f"; TIMED OUT with {res['left']:,.0f} left" if res["left"] else ""))
            burns[name].append(res)
            drop_db(db)
    say(f"RSS: {args.rss_tasks:,} tasks on a fresh database")
    samples = rss_run(folder, args.rss_tasks, args.rss_every)

    def med(name: str, key: str) -> float:
        return statistics.median(b[key] for b in burns[name])

    s, lg = sizes["small"], sizes["large"]
    print(f"taskgrid flat-at-scale (issue 9.3), SQLite, {WORKERS} workers x {CONCURRENCY} "
          f"slots, {os.cpu_count()} cores (shared: see other load)")
    print(f"taskgrid measured: {code}")
    print(f"small: {s[0]:,} future + {s[1]:,} finished; large: {lg[0]:,} future + "
          f"{lg[1]:,} finished; burn-down {args.due:,} due tasks x {args.rounds} rounds "
          "(median)")
    print()
    print(f"{'':34}{'small':>12}{'large':>12}{'slowdown':>10}  bound")
    rows_ = [
        ("empty claim, us (due+next pair)", claim["small"]["claim"], claim["large"]["claim"],
         claim["large"]["claim"] / claim["small"]["claim"]),
        ("  due_tasks alone, us", claim["small"]["due_tasks"], claim["large"]["due_tasks"],
         claim["large"]["due_tasks"] / claim["small"]["due_tasks"]),
        ("  next_due_time alone, us", claim["small"]["next_due_time"],
         claim["large"]["next_due_time"],
         claim["large"]["next_due_time"] / claim["small"]["next_due_time"]),
        ("burn-down, tasks/s", med("small", "rate"), med("large", "rate"),
         med("small", "rate") / med("large", "rate")),
        ("coordinator CPU, us/task", med("small", "cpu_us"), med("large", "cpu_us"),
         med("large", "cpu_us") / med("small", "cpu_us")),
    ]
    for label, a, b, ratio in rows_:
        bound = verdict(ratio) if not label.startswith("  ") else ""
        print(f"{label:34}{a:>12,.0f}{b:>12,.0f}{ratio:>9.2f}x  {bound}")
    print(f"{'other load during burn-down, cores':34}{med('small', 'other'):>12.2f}"
          f"{med('large', 'other'):>12.2f}")
    print("(slowdown: large/small for costs, small/large for tasks/s; empty claims: median of "
          f"5 rounds, {int(claim['large']['claim_calls']):,} calls per round on large)")
    for name in ("small", "large"):
        print("  " + ", ".join(
            f"{b['rate']:,.0f} tasks/s {b['cpu_us']:.0f} us in {b['wall']:.1f} s"
            + (f" (timed out, {b['left']:,.0f} of {args.due:,} not done)" if b["left"] else "")
            for b in burns[name]) + f"  <- {name} burn-down rounds")
    print()
    print("query plans of the empty claim (EXPLAIN QUERY PLAN of every SELECT it sends to SQLite):")
    for name in ("small", "large"):
        print(f"  {name}:")
        for line in plans[name]:
            print(line)
    print()
    print(f"coordinator RSS over {args.rss_tasks:,} completed tasks (fresh database, queue "
          f"kept {3 * BATCH:,}-{4 * BATCH:,} deep):")
    print(f"{'completed':>12}{'RSS MiB':>10}{'tasks/s':>10}{'coord us/task':>15}")
    prev = samples[0]
    for done, mb, secs, cpu in samples:
        if done == 0:
            print(f"{done:>12,}{mb:>10.1f}{'':>10}{'':>15}  (before any task)")
        else:
            rate = (done - prev[0]) / max(secs - prev[2], 1e-9)
            us = (cpu - prev[3]) / max(done - prev[0], 1) * 1e6
            print(f"{done:>12,}{mb:>10.1f}{rate:>10,.0f}{us:>15.0f}")
        prev = (done, mb, secs, cpu)
    if len(samples) > 2:
        first, last = samples[1], samples[-1]
        ratio = last[1] / first[1]
        print(f"RSS last/first after warm-up ({first[0]:,} tasks): {last[1]:.1f} / "
              f"{first[1]:.1f} MiB = {ratio:.3f}x  ({verdict(ratio)})")
    print(f"(run took {(time.monotonic() - started) / 60:.1f} min; logs in {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
