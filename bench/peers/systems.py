"""Starting, measuring and stopping the systems bench/compare.py compares (runs in its process).

Each phase gets fresh processes: `start(system, phase, ...)` returns a `Running` whose
`stop()` ends every process it started (process groups, then any descendant still alive)
and, for taskgrid, parses the coordinator's shutdown line (`transactions=N calls: ...`), which
is why the coordinator is restarted per phase. CPU is read from /proc/<pid>/stat (utime +
stime) of the coordinator alone and of every process of the system (its process trees, plus
the Redis broker for Celery and the PostgreSQL server for taskgrid-pg).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .snapshot import Snapshot

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS_VENV = HERE / ".venv"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
TG_TASKS = HERE / "tg_tasks.py"
FLOOR_SERVER = HERE / "floor_server.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

SYSTEMS = ("taskgrid", "taskgrid-pg", "celery-prefork", "celery-solo", "huey", "grpc-floor")


# --- /proc -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def cpu_s(pid: int) -> float:
    """CPU seconds of one live process: utime + stime (all its threads) and cutime + cstime
    (its children that have exited and been waited for, such as the driver's producer
    processes); 0 when it is gone. Summed over a live tree, nothing is counted twice."""
    f = _stat(pid)
    return 0.0 if f is None else sum(int(x) for x in f[11:15]) / CLK_TCK


def start_ticks(pid: int) -> int | None:
    f = _stat(pid)
    return None if f is None else int(f[19])


def descendants(roots: list[int]) -> list[int]:
    """The roots and every live process below them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat(int(entry))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [r for r in roots if _stat(r) is not None]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(roots: list[int]) -> float:
    return sum(cpu_s(p) for p in descendants(roots))


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), to tell how much
    of a phase's CPU went to processes outside the measurement (the machine is shared)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # less idle and iowait


# --- shared services -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_command(port: int, command: str) -> str:
    """One inline command to the bench's Redis; its first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command.encode() + b"\r\n")
        return s.recv(4096).decode().split("\r\n")[0]


class Redis:
    """A throwaway redis-server on a free loopback port, no persistence at all."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = open(folder / "redis.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--protected-mode", "yes", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--daemonize", "no"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                if redis_command(self.port, "PING") == "+PONG":
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {folder}/redis.log)")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        redis_command(self.port, "FLUSHALL")

    def stop(self) -> None:
        kill_group(self.proc, signal.SIGTERM)
        self.log.close()


class Postgres:
    """A throwaway cluster (tests/support/postgres.py), commits reaching the OS before they return.

    The test cluster runs with fsync=off and synchronous_commit=off; here synchronous_commit is
    on, so a commit is written to the OS before it returns: safe against any process crash, not
    against a power loss (fsync stays off), the same class as taskgrid's SQLite
    synchronous=NORMAL.
    """

    SETTINGS = {"synchronous_commit": "on"}

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.support import postgres

        bindir = postgres.find_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (scripts/ensure_postgres.sh)")
        postgres.SERVER_SETTINGS = {**postgres.SERVER_SETTINGS, **self.SETTINGS}
        self.version = postgres.server_version(bindir)
        self.cluster = postgres.PostgresCluster(bindir)
        self.cluster.start()
        admin = self.cluster._admin_connection()
        shown = {k: admin.execute(f"SHOW {k}").fetchone()[0] for k in ("synchronous_commit",
                                                                       "fsync")}
        self.settings = " ".join(f"{k}={v}" for k, v in shown.items())

    def postmaster(self) -> int:
        return int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self.cluster.stop()


# --- process handling ------------------------------------------------------------------------


def kill_group(proc: subprocess.Popen[Any], sig: int | None) -> None:
    """Send `sig` to the process group (None: it was sent already), wait, then SIGKILL."""
    if sig is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None,
          stdout: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """A process in its own session, in the phase's folder (never the work tree, whose
    `taskgrid/` would shadow the snapshot), its output in `log`."""
    out = open(log, "wb")  # noqa: SIM115
    return subprocess.Popen(argv, cwd=log.parent, env=env, stdout=stdout or out,
                            stderr=out if stdout else subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


@dataclass
class Running:
    """One system's processes for one phase, and what its driver needs to reach them."""

    system: str
    folder: Path
    driver_python: str
    config: dict[str, Any]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    coordinator: subprocess.Popen[bytes] | None = None
    extra_roots: list[int] = field(default_factory=list)
    cleanup: list[Any] = field(default_factory=list)
    env: dict[str, str] | None = None

    def coordinator_cpu_s(self) -> float:
        return cpu_s(self.coordinator.pid) if self.coordinator else 0.0

    def server_cpu_s(self) -> float:
        roots = [p.pid for p in self.procs] + self.extra_roots
        if self.coordinator:
            roots.append(self.coordinator.pid)
        return tree_cpu_s(roots)

    def stop(self) -> dict[str, Any]:
        """Stop workers, then the coordinator (it logs its counters); kill any leftover."""
        roots = [p.pid for p in self.procs] + ([self.coordinator.pid] if self.coordinator else [])
        tree = [(pid, start_ticks(pid)) for pid in descendants(roots)]
        for p in self.procs:  # all at once: a taskgrid worker drains on its first SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            kill_group(p, None)
        if self.coordinator is not None:
            kill_group(self.coordinator, signal.SIGTERM)
        for pid, ticks in tree:  # children in their own process groups, if any outlived us
            if ticks is not None and start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for step in self.cleanup:
            with contextlib.suppress(Exception):
                step()
        return self.counters()

    def counters(self) -> dict[str, Any]:
        log = self.folder / "coordinator.log"
        if self.coordinator is None or not log.exists():
            return {}
        m = re.search(r"transactions=(\d+) calls: (.*)", log.read_text(errors="replace"))
        if not m:
            return {"missing": True}
        calls = dict(kv.split("=") for kv in m.group(2).split() if "=" in kv)
        return {"transactions": int(m.group(1)), "calls": {k: int(v) for k, v in calls.items()}}


def _taskgrid(run: Running, db_url: str, workers: int, concurrency: int,
              coordinator_flags: list[str]) -> None:
    coord = spawn([sys.executable, "-m", "taskgrid", "coordinator", "--db", db_url,
                   "--listen", "127.0.0.1:0", *coordinator_flags],
                  run.folder / "coordinator.log", run.env, stdout=subprocess.PIPE)
    run.coordinator = coord
    assert coord.stdout is not None
    line = coord.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"coordinator did not start (see {run.folder}/coordinator.log)")
    address = line.rsplit(" ", 1)[1].strip()
    threading.Thread(target=coord.stdout.read, daemon=True).start()  # keep the pipe drained
    for i in range(workers):
        run.procs.append(spawn(
            [sys.executable, "-m", "taskgrid", "worker", "--tasks", str(TG_TASKS),
             "--coordinator", address, "--name", f"compare-w{i}", "--concurrency",
             str(concurrency), "--log-level", "WARNING"], run.folder / f"worker{i}.log",
            run.env))
    run.config.update(address=address, db_url=db_url, workers=workers)


def _floor(run: Running) -> None:
    """bench/peers/floor_server.py: QueueTask with no work behind it (see its docstring)."""
    proc = spawn([sys.executable, str(FLOOR_SERVER)], run.folder / "floor.log", run.env,
                 stdout=subprocess.PIPE)
    run.coordinator = proc
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"the floor server did not start (see {run.folder}/floor.log)")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    run.config.update(address=line.rsplit(" ", 1)[1].strip(), workers=0)


def start(system: str, phase: str, folder: Path, *, redis: Redis | None,
          postgres: Postgres | None, code: Snapshot | None, tg_concurrency: int,
          tg_durable: bool, huey_fsync: str) -> Running:
    """Fresh processes of `system` for one phase (taskgrid's from the run's `code`)."""
    folder.mkdir(parents=True)
    # grpc-floor is driven by taskgrid's client library, like the coordinator it stands for
    kind = "taskgrid" if system.startswith(("taskgrid", "grpc-floor")) else system.split("-")[0]
    python = sys.executable if kind == "taskgrid" else str(PEERS_PYTHON)
    run = Running(system, folder, python, {"kind": kind})
    if kind == "taskgrid":
        assert code is not None
        run.env = code.env
    try:
        if system == "taskgrid":
            workers = 0 if phase == "enqueue_only" else 2
            _taskgrid(run, f"sqlite:///{folder / 'tg.sqlite'}", workers, tg_concurrency,
                      ["--durable"] if tg_durable else [])
        elif system == "grpc-floor":
            _floor(run)
        elif system == "taskgrid-pg":
            assert postgres is not None
            name = postgres.cluster.create_database()
            run.cleanup.append(lambda: postgres.cluster.drop_database(name))
            run.extra_roots.append(postgres.postmaster())
            _taskgrid(run, postgres.cluster.url(name), 2, tg_concurrency, [])
        else:
            assert redis is not None
            redis.flush()
            env = dict(os.environ, COMPARE_REDIS_URL=redis.url, PYTHONPATH=str(REPO),
                       COMPARE_HUEY_DB=str(folder / "huey.sqlite"), COMPARE_HUEY_FSYNC=huey_fsync)
            if phase == "roundtrip":  # Celery's Redis result backend, for this phase only
                env["COMPARE_CELERY_RESULTS"] = "1"
            run.env = env
            run.config["redis_url"] = redis.url
            celery = [str(PEERS_VENV / "bin" / "celery"), "-A", "bench.peers.celery_tasks",
                      "worker", "--loglevel", "WARNING", "--without-gossip",
                      "--without-mingle", "--without-heartbeat"]
            if system == "celery-prefork":
                run.procs.append(spawn(celery + ["--pool", "prefork", "--concurrency", "2",
                                                 "-n", "prefork@%h"], folder / "celery.log", env))
                run.config["workers"] = 1
                run.extra_roots.append(redis.proc.pid)
            elif system == "celery-solo":
                for i in range(2):
                    run.procs.append(spawn(celery + ["--pool", "solo", "-n", f"solo{i}@%h"],
                                           folder / f"celery{i}.log", env))
                run.config["workers"] = 2
                run.extra_roots.append(redis.proc.pid)
            elif system == "huey":
                run.procs.append(spawn(
                    [str(PEERS_VENV / "bin" / "huey_consumer"), "bench.peers.huey_tasks.huey",
                     "-k", "process", "-w", "2", "-q"], folder / "huey.log", env))
                run.config["workers"] = 2
            else:
                raise ValueError(f"unknown system {system}")
    except BaseException:
        run.stop()
        raise
    return run
