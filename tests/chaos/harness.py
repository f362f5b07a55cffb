"""The chaos run: a workload, a fault schedule, an execution journal read outside the
coordinator, and a verdict that compares the three with the rows the coordinator stored.

`ChaosRun.execute()` queues the workload, starts the workers, injects the faults while the load
runs (SIGKILL a random worker every 2-5 s and start a new one; SIGKILL the coordinator and
restart it; on PostgreSQL `pg_ctl restart -m fast`), waits for the load to settle, drains the
workers, reads every task and run row straight from the database and the journal the tasks
wrote (tests/chaos/chaos_tasks.py), and returns a `Verdict`: figures plus violations, each
violation with the task's rows, its execution lines and the coordinator log lines about it.

Explaining an execution (why a task ran again):

- a designed outcome (failure, timeout) was recorded for the previous execution and the task
  had retries left: a designed retry, not a re-run;
- the previous execution's run was closed by the coordinator as lost (FAILED, not ours) and
  the worker running it was SIGKILLed after it started: an explained re-run;
- anything else (the coordinator gave a live worker's task to another one, ran a COMPLETED
  task again, executed one lease twice, ...) is an unexplained re-run.

A coordinator crash explains nothing on its own: workers keep running their tasks and deliver
the reports to the restarted coordinator. It may only explain a run row that never started
(a lease committed just before the SIGKILL whose reply never reached the worker).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from tests.support.chaos import Crash, crash_coordinator, read_rows, restart_postgres
from tests.support.processes import CoordinatorProcess, WorkerProcess, stop_all
from tests.support.wait import wait_until

TASKS_FILE = Path(__file__).with_name("chaos_tasks.py")
WORKER_ENV = "TASKGRID_CHAOS_WORKER"
FAILURE_MARKER = "ChaosDesignedFailure"  # chaos_tasks.FAILURE_MARKER (not imported: worker code)
SCALE_ENV = "TASKGRID_CHAOS_SCALE"
TASKS_ENV = "TASKGRID_CHAOS_TASKS"
SEED_ENV = "TASKGRID_CHAOS_SEED"
TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED")
UUID_PREFIX = "chaos-"
#: Tasks per QueueTasks call.
QUEUE_BATCH = 1000
#: How often the fault loop looks at progress (a pacing interval, not a synchronisation).
POLL_S = 0.2
#: Timeouts of the tasks that are not meant to time out (the coordinator's backstop fires at
#: timeout + --timeout-grace, so a lost report would still be closed well within the run).
NORMAL_TIMEOUT_S = 10
#: The overrun kind's timeout and how long it would sleep if nobody stopped it.
OVERRUN_TIMEOUT_S = 1
OVERRUN_SLEEP_S = 5.0
RETRY_DELAY_S = 0.2
#: Probe tasks (queued after the PostgreSQL restart) run before the backlog.
PROBE_PRIORITY = 10
#: Lost-worker requeues allowed per task: high, so every final status is the designed one.
MAX_LOST_REQUEUES = 1000
#: After the PostgreSQL restart the coordinator must complete tasks again within this.
PG_RECONNECT_TIMEOUT_S = 30.0
#: Slack when comparing a process's CLOCK_MONOTONIC marks with the suite's own.
CLOCK_SLACK_S = 0.05
#: Slack when comparing database times (coordinator wall clock) with the suite's wall clock.
WALL_SLACK_S = 1.0
EXAMPLES_PER_VIOLATION = 8


# -- scale --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big a run is and which faults it injects."""

    name: str
    tasks: int
    workers: int
    concurrency: int
    #: progress fractions (terminal tasks / all) at which the coordinator is SIGKILLed
    coordinator_crashes: tuple[float, ...]
    #: progress fraction at which PostgreSQL is restarted (PostgreSQL runs only)
    pg_restart_at: float
    #: seconds between two worker kills: uniform in this range
    kill_every_s: tuple[float, float]
    #: the load must settle within this many seconds of its start
    load_deadline_s: float
    #: ... and the load is declared stalled after this long without a task becoming terminal
    stall_s: float
    #: after the load, how long stragglers get to settle (backstops, orphan checks)
    settle_s: float
    #: the pytest timeout of one run
    test_timeout_s: int


SCALES = {
    "small": Scale("small", tasks=600, workers=3, concurrency=2, coordinator_crashes=(0.3, 0.7),
                   pg_restart_at=0.55, kill_every_s=(2.0, 5.0), load_deadline_s=75.0,
                   stall_s=20.0, settle_s=30.0, test_timeout_s=240),
    "full": Scale("full", tasks=10_000, workers=4, concurrency=4,
                  coordinator_crashes=(0.3, 0.7), pg_restart_at=0.5, kill_every_s=(2.0, 5.0),
                  load_deadline_s=1500.0, stall_s=60.0, settle_s=40.0, test_timeout_s=2400),
}


def current_scale() -> Scale:
    """The scale named by $TASKGRID_CHAOS_SCALE (small by default); $TASKGRID_CHAOS_TASKS
    overrides its task count."""
    name = os.environ.get(SCALE_ENV, "small") or "small"
    if name not in SCALES:
        raise ValueError(f"${SCALE_ENV} must be one of {sorted(SCALES)}, not {name!r}")
    scale = SCALES[name]
    if os.environ.get(TASKS_ENV):
        scale = dataclasses.replace(scale, tasks=int(os.environ[TASKS_ENV]))
    return scale


def current_seed() -> int:
    """$TASKGRID_CHAOS_SEED, or a fresh one (printed in the summary to replay a run)."""
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(1, 1 << 31)


# -- workload -----------------------------------------------------------------------------------

#: kind -> (share of the workload, task function)
MIX: dict[str, tuple[float, str]] = {
    "trivial": (0.43, "chaos_trivial"),
    "nap": (0.35, "chaos_nap"),
    "flaky": (0.12, "chaos_flaky"),
    "doomed": (0.05, "chaos_doomed"),
    "overrun": (0.05, "chaos_overrun"),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One queued task and what it is designed to end as."""

    key: str
    kind: str
    function: str
    pargs: tuple[Any, ...]
    timeout: int
    retry_failed: int
    #: designed failures before success (flaky); failures/timeouts it ends with (doomed,
    #: overrun: retry_failed + 1); 0 otherwise
    fails: int
    #: "chaos-" for the workload (the progress count looks for it), "probe-" for probes
    prefix: str = UUID_PREFIX

    @property
    def uuid(self) -> str:
        return self.prefix + self.key

    @property
    def expected_status(self) -> str:
        return {"doomed": "FAILED", "overrun": "TIMEOUT"}.get(self.kind, "COMPLETED")

    def queue_entry(self) -> dict[str, Any]:
        entry = {"function": self.function, "pargs": list(self.pargs), "uuid": self.uuid,
                 "timeout": self.timeout, "retry_failed": self.retry_failed,
                 "retry_delay": RETRY_DELAY_S}
        if self.prefix != UUID_PREFIX:  # a probe goes before the backlog
            entry["priority"] = PROBE_PRIORITY
        return entry

    def describe(self) -> str:
        return (f"{self.key} kind={self.kind} retry_failed={self.retry_failed} "
                f"fails={self.fails} timeout={self.timeout}s expect={self.expected_status}")


def build_workload(n: int, rng: random.Random, log_dir: Path) -> list[Spec]:
    """`n` tasks in MIX proportions, shuffled so kinds interleave in id order."""
    kinds = [kind for kind, (share, _) in MIX.items() for _ in range(round(n * share))]
    while len(kinds) < n:
        kinds.append("trivial")
    kinds = kinds[:n]
    rng.shuffle(kinds)
    specs = []
    for i, kind in enumerate(kinds):
        key = f"{i:05d}-{kind}"
        function = MIX[kind][1]
        d = str(log_dir)
        if kind == "trivial":
            specs.append(Spec(key, kind, function, (d, key), NORMAL_TIMEOUT_S, 0, 0))
        elif kind == "nap":
            seconds = round(rng.uniform(0.05, 0.2), 3)
            specs.append(Spec(key, kind, function, (d, key, seconds), NORMAL_TIMEOUT_S, 0, 0))
        elif kind == "flaky":
            fails = rng.choice([1, 2])
            retries = fails + rng.choice([0, 1])
            specs.append(Spec(key, kind, function, (d, key, fails), NORMAL_TIMEOUT_S, retries,
                              fails))
        elif kind == "doomed":
            retries = rng.choice([0, 1, 2])
            specs.append(Spec(key, kind, function, (d, key), NORMAL_TIMEOUT_S, retries,
                              retries + 1))
        else:
            retries = rng.choice([0, 1])
            specs.append(Spec(key, kind, function, (d, key, OVERRUN_SLEEP_S), OVERRUN_TIMEOUT_S,
                              retries, retries + 1))
    return specs


# -- the execution journal ----------------------------------------------------------------------


@dataclasses.dataclass
class Execution:
    """One execution of a task function, as its own start and end lines tell it."""

    key: str
    task_id: int
    attempt: int
    run_id: int
    worker: str
    pid: int
    start: float
    end: float | None = None
    outcome: str | None = None  # done, fail, sigterm, overslept; None: no end line
    lines: list[str] = dataclasses.field(default_factory=list)


class Journal:
    """The shared journal.log, read incrementally (only complete lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.executions: list[Execution] = []
        self.open: dict[tuple[int, int, int], Execution] = {}
        self.bad_lines: list[str] = []
        self.orphan_ends: list[str] = []

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._line(raw.decode(errors="replace"))

    def _line(self, text: str) -> None:
        try:
            rec = json.loads(text)
        except ValueError:
            self.bad_lines.append(text)
            return
        ident = (rec["id"], rec["a"], rec["p"])
        if rec["e"] == "s":
            if ident in self.open:  # same lease started twice in one process
                self.bad_lines.append(f"second start without end: {text}")
            ex = Execution(rec["k"], rec["id"], rec["a"], rec["r"], rec["w"], rec["p"], rec["t"],
                           lines=[text])
            self.executions.append(ex)
            self.open[ident] = ex
        else:
            ex = self.open.pop(ident, None)
            if ex is None:
                self.orphan_ends.append(text)
                return
            ex.end, ex.outcome = rec["t"], rec.get("o")
            ex.lines.append(text)

    def running_on(self, worker: str) -> list[Execution]:
        return [ex for ex in self.open.values() if ex.worker == worker]


# -- fault records ------------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerKill:
    worker: str
    pid: int
    killed_at: float  # monotonic, just before SIGKILL
    dead_at: float  # monotonic, the worker reaped
    wall: float
    progress: int
    running: list[tuple[str, int, int]]  # (key, task id, attempt) with no end line at the kill


@dataclasses.dataclass
class CoordinatorCrash:
    crash: Crash
    wall: float
    progress: int


@dataclasses.dataclass
class PgRestart:
    started_at: float
    took_s: float
    wall: float
    progress: int
    coordinator_pid: int
    #: seconds from the server's return to the first task the coordinator made terminal
    first_progress_s: float | None = None
    #: seconds from the server's return to QueueTask accepting a probe task, and to that
    #: task being COMPLETED
    probe_queued_s: float | None = None
    probe_s: float | None = None
    error: str = ""


# -- the verdict --------------------------------------------------------------------------------


@dataclasses.dataclass
class Finding:
    task_id: int | None
    message: str


class Verdict:
    """Figures and violations of one run; `report()` is the failure message."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}
        self.violations: dict[str, list[Finding]] = collections.defaultdict(list)
        self.notes: list[str] = []
        self._details: Callable[[int], str] = lambda task_id: ""

    def add(self, category: str, task_id: int | None, message: str) -> None:
        self.violations[category].append(Finding(task_id, message))

    @property
    def failed(self) -> bool:
        return any(self.violations.values())

    def summary_line(self) -> str:
        f = self.figures
        keys = ["tasks", "executions", "run_rows", "worker_kills", "interrupted",
                "coordinator_restarts", "pg_restarts", "lost", "stuck", "reruns_explained",
                "reruns_unexplained", "completed_twice", "done_twice_report_lost",
                "runs_never_started", "violations", "load_s", "duration_s", "seed"]
        return f"chaos[{f.get('db')}/{f.get('scale')}] " + " ".join(
            f"{k}={f[k]}" for k in keys if k in f)

    def report(self) -> str:
        out = [self.summary_line(), ""]
        out += self.notes
        for category, findings in self.violations.items():
            if not findings:
                continue
            out.append(f"=== {category}: {len(findings)} ===")
            shown: set[int] = set()
            for finding in findings[:EXAMPLES_PER_VIOLATION * 4]:
                out.append(f"- task {finding.task_id}: {finding.message}")
            for finding in findings:
                if finding.task_id is None or finding.task_id in shown:
                    continue
                if len(shown) >= EXAMPLES_PER_VIOLATION:
                    break
                shown.add(finding.task_id)
                out.append(self._details(finding.task_id))
            out.append("")
        return "\n".join(out)


# -- the run ------------------------------------------------------------------------------------


def _wall(value: dt.datetime | None) -> float | None:
    """A naive-UTC database datetime as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite through a raw text() query
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC).timestamp()


def run_class(row: dict[str, Any]) -> str:
    """completed, designed_fail, timeout, backstop_timeout, lost, running, or the status in
    lower case (stopped)."""
    status, tb = row["status"], row["traceback"] or ""
    if status == "COMPLETED":
        return "completed"
    if status == "FAILED":
        # not ours: the coordinator closed it (WorkerLost: its worker was declared dead, or
        # the lease was orphaned)
        return "designed_fail" if FAILURE_MARKER in tb else "lost"
    if status == "TIMEOUT":
        return "backstop_timeout" if "no report from worker" in tb else "timeout"
    return status.lower()


class ChaosRun:
    """One chaos run against a coordinator on `db_url` (and its PostgreSQL cluster, if any)."""

    def __init__(self, *, scale: Scale, seed: int, db_url: str, tmp_path: Path,
                 start_coordinator: Callable[..., CoordinatorProcess],
                 start_worker: Callable[..., WorkerProcess], pg_cluster: Any = None,
                 coordinators: int = 1) -> None:
        self.scale = scale
        #: several coordinators share the database (PostgreSQL): crashes kill them in turn,
        #: and workers and clients are given every address
        self.n_coordinators = coordinators
        self.coordinators: list[CoordinatorProcess] = []
        self.seed = seed
        self.rng = random.Random(seed)
        self.db_url = db_url
        self.db = "postgres" if db_url.startswith("postgresql") else "sqlite"
        self.pg_cluster = pg_cluster
        self.log_dir = tmp_path / "chaos"
        (self.log_dir / "tasks").mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.log_dir / "journal.log")
        self._start_coordinator = start_coordinator
        self._start_worker = start_worker
        self.coordinator: CoordinatorProcess | None = None
        self.workers: list[WorkerProcess] = []  # alive ones
        self.all_workers: list[WorkerProcess] = []
        self.kills: list[WorkerKill] = []
        self.crashes: list[CoordinatorCrash] = []
        self.pg_restarts: list[PgRestart] = []
        self.specs: list[Spec] = []
        self.probes: list[Spec] = []
        self.verdict = Verdict()
        self._worker_seq = 0
        self.t0 = 0.0

    # -- processes --------------------------------------------------------------------------

    def _new_worker(self) -> WorkerProcess | None:
        self._worker_seq += 1
        name = f"cw{self._worker_seq}"
        try:
            worker = self._start_worker(
                name, coordinator=self._addresses(self._worker_seq), tasks=TASKS_FILE,
                extra_args=["--concurrency", str(self.scale.concurrency)],
                env={WORKER_ENV: name})
        except AssertionError as exc:
            self.verdict.add("worker_start_failed", None, f"{name}: {exc}")
            return None
        self.workers.append(worker)
        self.all_workers.append(worker)
        return worker

    def _addresses(self, start: int = 0) -> str:
        """Every coordinator's address, starting from a different one for each caller."""
        if len(self.coordinators) < 2:
            assert self.coordinator is not None
            return self.coordinator.address
        addresses = [c.address for c in self.coordinators]
        k = start % len(addresses)
        return ",".join(addresses[k:] + addresses[:k])

    def _client(self) -> Any:
        from taskgrid.client import Scheduler

        assert self.coordinator is not None
        return Scheduler(self._addresses(), timeout_s=60.0)

    # -- observation ------------------------------------------------------------------------

    def _progress(self) -> int | None:
        """Terminal chaos tasks, read from the database (None while it cannot be read)."""
        try:
            rows = read_rows(self.db_url,
                             "SELECT count(*) AS n FROM scheduler_task WHERE status IN "
                             "('COMPLETED','FAILED','TIMEOUT','STOPPED','EXPIRED') "
                             "AND uuid LIKE 'chaos-%'")
        except Exception:  # noqa: BLE001 - a restarting server, a locked file: not yet
            return None
        return int(rows[0]["n"])

    def _running_runs(self) -> int | None:
        try:
            rows = read_rows(self.db_url, "SELECT count(*) AS n FROM scheduler_run "
                                          "WHERE status = 'RUNNING'")
        except Exception:  # noqa: BLE001
            return None
        return int(rows[0]["n"])

    def rel(self, t: float | None) -> str:
        return "-" if t is None else f"{t - self.t0:+.3f}s"

    # -- faults -----------------------------------------------------------------------------

    def kill_worker(self, progress: int) -> None:
        victim = self.rng.choice(self.workers)
        self.journal.poll()
        running = [(ex.key, ex.task_id, ex.attempt) for ex in self.journal.running_on(victim.name)]
        killed_at, wall = time.monotonic(), time.time()
        victim.kill(signal.SIGKILL)  # its whole session: the worker and its task children
        victim.wait(10)
        self.kills.append(WorkerKill(victim.name, victim.pid, killed_at, time.monotonic(), wall,
                                     progress, running))
        self.workers.remove(victim)
        self._new_worker()

    def crash(self, progress: int) -> None:
        """SIGKILL a coordinator and start it again; with several, each in turn."""
        victim = self.coordinators[len(self.crashes) % len(self.coordinators)]
        wall = time.time()
        self.crashes.append(CoordinatorCrash(crash_coordinator(victim), wall, progress))

    def restart_pg(self, progress: int) -> None:
        assert self.coordinator is not None and self.pg_cluster is not None
        pids = [c.pid for c in self.coordinators]
        pid = pids[0]
        rec = PgRestart(time.monotonic(), 0.0, time.time(), progress, pid)
        self.pg_restarts.append(rec)
        rec.took_s = restart_postgres(self.pg_cluster, "fast")
        back = time.monotonic()
        # The coordinator must reconnect by itself: tasks become terminal again, and a task
        # queued now is accepted and completed, with the same coordinator process. The
        # baseline is read after the restart: nothing commits while the server is down.
        baseline = wait_until(lambda: (p := self._progress()) is not None and (p,),
                              timeout=PG_RECONNECT_TIMEOUT_S, interval=POLL_S,
                              desc="the database to answer the suite after the restart")[0]
        try:
            wait_until(lambda: (p := self._progress()) is not None and p > baseline,
                       timeout=PG_RECONNECT_TIMEOUT_S, interval=POLL_S,
                       desc="a task to become terminal after the PostgreSQL restart")
            rec.first_progress_s = time.monotonic() - back
            self._probe(rec, back)
        except AssertionError as exc:
            rec.error = str(exc)
        for c, old in zip(self.coordinators, pids, strict=True):
            if not c.is_alive() or c.pid != old:
                rec.error += f" coordinator pid {old} is gone"

    def _probe(self, rec: PgRestart, back: float) -> None:
        """Queue one trivial task through the client and wait for it to be COMPLETED."""
        key = f"pgprobe-{len(self.pg_restarts)}"
        spec = Spec(key, "trivial", "chaos_trivial", (str(self.log_dir), key), NORMAL_TIMEOUT_S,
                    0, 0, prefix="probe-")
        with self._client() as client:
            result = wait_until(lambda: client.queue_task(**_as_kwargs(spec.queue_entry())),
                                timeout=PG_RECONNECT_TIMEOUT_S, interval=POLL_S,
                                desc="QueueTask after the PostgreSQL restart",
                                ignore=(Exception,))
            if result.errors:
                raise AssertionError(f"probe refused: {result.errors}")
            rec.probe_queued_s = time.monotonic() - back
            self.probes.append(spec)
            wait_until(lambda: getattr(client.task_status(result.id), "status", "") ==
                       "COMPLETED", timeout=PG_RECONNECT_TIMEOUT_S, interval=POLL_S,
                       desc="the probe task to complete", ignore=(grpc.RpcError, Exception))
            rec.probe_s = time.monotonic() - back

    # -- the run ----------------------------------------------------------------------------

    def execute(self) -> Verdict:
        scale = self.scale
        started = time.monotonic()
        self.coordinators = [self._start_coordinator(
            extra_args=["--max-lost-requeues", str(MAX_LOST_REQUEUES)])
            for _ in range(self.n_coordinators)]
        self.coordinator = self.coordinators[0]
        self.specs = build_workload(scale.tasks, self.rng, self.log_dir)
        with self._client() as client:
            entries = [s.queue_entry() for s in self.specs]
            for i in range(0, len(entries), QUEUE_BATCH):
                results = client.queue_tasks(entries[i:i + QUEUE_BATCH])
                bad = [r.errors for r in results if r.errors]
                assert not bad, f"the workload was refused: {bad[:3]}"
        self.t0 = time.monotonic()
        for _ in range(scale.workers):
            self._new_worker()
        self._drive()
        load_s = time.monotonic() - self.t0
        self._settle()
        self.journal.poll()
        self._analyse()
        self.verdict.figures["load_s"] = round(load_s, 1)
        self.verdict.figures["duration_s"] = round(time.monotonic() - started, 1)
        return self.verdict

    def _drive(self) -> None:
        """Inject the faults while the load runs; return when it is done or stalled."""
        scale = self.scale
        total = len(self.specs)
        crashes = list(scale.coordinator_crashes)
        pg_at = [scale.pg_restart_at] if self.pg_cluster is not None else []
        # The fault schedule: the deliberate timing of worker kills (every 2-5 s).
        next_kill = self.t0 + self.rng.uniform(*scale.kill_every_s)
        last_change, last_done = time.monotonic(), -1
        while True:
            done = self._progress()
            now = time.monotonic()
            if done is not None and done != last_done:
                last_done, last_change = done, now
            if done is not None and done >= total:
                break
            if now - self.t0 > scale.load_deadline_s:
                self.verdict.notes.append(f"load deadline {scale.load_deadline_s}s passed")
                break
            if now - last_change > scale.stall_s:
                self.verdict.notes.append(
                    f"load stalled: {last_done}/{total} terminal, none more for {scale.stall_s}s")
                break
            for w in list(self.workers):
                if not w.is_alive():  # nobody killed it: a crash of its own
                    self.verdict.add("worker_exited_by_itself", None,
                                     f"{w.name} exited {w.proc.returncode if w.proc else '?'}; "
                                     f"log tail:\n{w.log_tail(20)}")
                    self.workers.remove(w)
                    self._new_worker()
            frac = None if done is None else done / total
            if frac is not None and crashes and frac >= crashes[0]:
                crashes.pop(0)
                self.crash(done or 0)
                continue
            if frac is not None and pg_at and frac >= pg_at[0]:
                pg_at.pop(0)
                self.restart_pg(done or 0)
                continue
            if now >= next_kill:
                if self.workers:
                    self.kill_worker(done or 0)
                while len(self.workers) < scale.workers:
                    if self._new_worker() is None:
                        break
                next_kill = time.monotonic() + self.rng.uniform(*scale.kill_every_s)
                continue
            # pacing of the progress poll (the condition is re-read after it)
            time.sleep(max(0.0, min(POLL_S, next_kill - now)))
        missed = len(crashes) + len(pg_at)
        if missed:
            self.verdict.add("faults_not_injected", None,
                             f"the load ended before {missed} planned fault(s) "
                             f"(crashes left {crashes}, pg restarts left {pg_at}): "
                             "the run proves less than planned")
        if not self.kills:
            self.verdict.add("faults_not_injected", None, "no worker was killed")

    def _settle(self) -> None:
        """Let stragglers end (or prove stuck), then drain the workers so the journal is final."""
        total = len(self.specs)
        try:
            wait_until(lambda: self._progress() == total and self._running_runs() == 0,
                       timeout=self.scale.settle_s, interval=POLL_S, desc="the load to settle")
        except AssertionError as exc:
            self.verdict.notes.append(f"settle: {exc}")
        # SIGTERM drains a worker (nothing should run now); what is left after 15 s is killed.
        stop_all(self.workers, grace_s=15.0)

    # -- analysis ---------------------------------------------------------------------------

    def _analyse(self) -> None:
        v = self.verdict
        tasks = read_rows(self.db_url, "SELECT * FROM scheduler_task")
        runs = read_rows(self.db_url, "SELECT * FROM scheduler_run ORDER BY task_id, attempt, id")
        by_uuid = {t["uuid"]: t for t in tasks}
        runs_of: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in runs:
            runs_of[r["task_id"]].append(r)
        execs_of: dict[int, list[Execution]] = collections.defaultdict(list)
        for ex in self.journal.executions:
            execs_of[ex.task_id].append(ex)
        kill_of = {k.worker: k for k in self.kills}
        coord_logs = self._coordinator_lines()
        spec_of_id: dict[int, Spec] = {}

        def details(task_id: int) -> str:
            return self._describe(task_id, spec_of_id.get(task_id), tasks_by_id.get(task_id),
                                  runs_of.get(task_id, []), execs_of.get(task_id, []),
                                  coord_logs.get(task_id, []))

        tasks_by_id = {t["id"]: t for t in tasks}
        v._details = details

        def killed(ex: Execution) -> WorkerKill | None:
            k = kill_of.get(ex.worker)
            return k if k is not None and k.killed_at + CLOCK_SLACK_S >= ex.start else None

        counts: collections.Counter[str] = collections.Counter()
        lost: set[str] = set()
        for spec in self.specs + self.probes:
            task = by_uuid.get(spec.uuid)
            if task is None:
                v.add("lost", None, f"{spec.describe()}: no such task in the database")
                lost.add(spec.key)
                continue
            tid = task["id"]
            spec_of_id[tid] = spec
            rows = runs_of.get(tid, [])
            execs = sorted(execs_of.get(tid, []), key=lambda e: e.start)
            self._check_task(spec, task, rows, execs, killed, counts, lost)
        for ex in self.journal.executions:
            if ex.task_id not in spec_of_id:
                v.add("unknown_execution", None, f"execution of an unknown task: {ex.lines}")
        for text in self.journal.bad_lines + self.journal.orphan_ends:
            v.add("journal", None, f"unexpected journal line: {text}")
        if any(p.error or p.first_progress_s is None for p in self.pg_restarts):
            for p in self.pg_restarts:
                v.add("pg_reconnect", None,
                      f"after pg_ctl restart at {self.rel(p.started_at)} the coordinator did "
                      f"not resume by itself: {p.error or 'no progress'}")
        for c in self.coordinators:
            if not c.is_alive():
                v.add("coordinator_died", None, f"{c.name} exited by itself; log tail:\n"
                      + c.log_tail(40))
        f = v.figures
        f.update(db=self.db, scale=self.scale.name, seed=self.seed, tasks=len(self.specs),
                 coordinators=len(self.coordinators),
                 executions=len(self.journal.executions), run_rows=len(runs),
                 worker_kills=len(self.kills),
                 interrupted=sum(len(k.running) for k in self.kills),
                 coordinator_restarts=len(self.crashes), pg_restarts=len(self.pg_restarts),
                 lost=len(lost), stuck=counts["stuck"],
                 reruns_explained=counts["rerun_explained"],
                 reruns_unexplained=counts["rerun_unexplained"],
                 completed_twice=counts["completed_twice"],
                 done_twice_report_lost=counts["done_twice_report_lost"],
                 runs_never_started=counts["runs_never_started"],
                 designed_retries=counts["designed_retry"])
        f["violations"] = sum(len(x) for x in v.violations.values())
        f["by_status"] = dict(collections.Counter(by_uuid[s.uuid]["status"] for s in self.specs
                                                  if s.uuid in by_uuid))
        f["crash_downtime_s"] = [round(c.crash.downtime_s, 2) for c in self.crashes]
        f["pg"] = [{"took_s": round(p.took_s, 2),
                    "first_progress_s": _round(p.first_progress_s),
                    "probe_queued_s": _round(p.probe_queued_s),
                    "probe_s": _round(p.probe_s)} for p in self.pg_restarts]

    def _check_task(self, spec: Spec, task: dict[str, Any], rows: list[dict[str, Any]],
                    execs: list[Execution], killed: Callable[[Execution], WorkerKill | None],
                    counts: collections.Counter[str], lost: set[str]) -> None:
        v = self.verdict
        tid = task["id"]
        status = task["status"]
        cls = {r["id"]: run_class(r) for r in rows}
        by_attempt: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in rows:
            by_attempt[r["attempt"]].append(r)

        # every task terminal; none stuck
        if status not in TERMINAL:
            counts["stuck"] += 1
            v.add("stuck", tid, f"{spec.key} is {status} (assigned to "
                                f"{task['assigned_worker_name']!r}, attempt {task['attempt']})")
        elif status != spec.expected_status:
            lost.add(spec.key)
            v.add("wrong_final_status", tid, f"{spec.describe()} ended {status}")
        for r in rows:
            if r["status"] == "RUNNING" or r["stop_time"] is None:
                v.add("run_left_running", tid, f"run {r['id']} attempt {r['attempt']} is "
                                               f"{r['status']} with stop_time {r['stop_time']}")
        if status == "COMPLETED" and not any(e.outcome == "done" for e in execs):
            lost.add(spec.key)
            v.add("completed_without_execution", tid, f"{spec.key} is COMPLETED but no "
                                                      "execution of it returned")

        # the journal against the run rows
        seen_attempts: dict[int, Execution] = {}
        for ex in execs:
            if ex.attempt in seen_attempts:
                v.add("lease_executed_twice", tid, f"attempt {ex.attempt} executed by "
                      f"{seen_attempts[ex.attempt].worker} and {ex.worker}")
            seen_attempts[ex.attempt] = ex
            matching = by_attempt.get(ex.attempt, [])
            if not matching:
                v.add("execution_without_run", tid, f"attempt {ex.attempt} ran on {ex.worker} "
                      f"at {self.rel(ex.start)} but has no run record")
                continue
            row = matching[-1]
            c = cls[row["id"]]
            k = killed(ex)
            if row["worker_name"] != ex.worker:
                v.add("run_worker_mismatch", tid, f"attempt {ex.attempt} ran on {ex.worker}, its "
                      f"run record names {row['worker_name']}")
            if ex.outcome == "overslept":
                v.add("timeout_not_enforced", tid, f"attempt {ex.attempt} slept "
                      f"{OVERRUN_SLEEP_S}s past its {spec.timeout}s timeout")
            ok = {"done": {"completed"}, "fail": {"designed_fail"},
                  "sigterm": {"timeout"} if spec.kind == "overrun" else set(),
                  None: {"timeout"} if spec.kind == "overrun" else set(),
                  "overslept": set()}.get(ex.outcome, set())
            if c in ok:
                continue
            if c == "lost" and k is not None:
                continue  # its worker was killed: the coordinator closed the run as lost
            why = ("its worker was never killed" if k is None else
                   f"its worker was killed at {self.rel(k.killed_at)}")
            v.add("execution_run_mismatch", tid,
                  f"attempt {ex.attempt} on {ex.worker} ended {ex.outcome or 'without an end line'}"
                  f" but its run is {row['status']} ({c}); {why}; traceback: "
                  f"{_last_line(row['traceback'])}")

        # run rows no execution belongs to: only a lease that never reached a live child
        for attempt, rs in by_attempt.items():
            if len(rs) > 1:
                v.add("duplicate_run_rows", tid, f"{len(rs)} run records for attempt {attempt}")
            if attempt in seen_attempts:
                continue
            for r in rs:
                counts["runs_never_started"] += 1
                if cls[r["id"]] != "lost":
                    v.add("outcome_without_execution", tid,
                          f"run {r['id']} attempt {attempt} is {r['status']} ({cls[r['id']]}) "
                          "but nothing executed that attempt")
                elif not self._explains_unstarted(r):
                    v.add("unstarted_run_unexplained", tid,
                          f"run {r['id']} attempt {attempt} on {r['worker_name']} never started "
                          f"and no worker kill or coordinator crash explains it; traceback: "
                          f"{_last_line(r['traceback'])}")

        # re-runs: an execution after one whose outcome the coordinator did not record
        dones = [e for e in execs if e.outcome == "done"]
        designed_so_far = 0
        for prev, cur in zip(execs, execs[1:], strict=False):
            prev_rows = by_attempt.get(prev.attempt, [])
            c = cls[prev_rows[-1]["id"]] if prev_rows else "missing"
            end = prev.end
            k = killed(prev)
            if end is None and k is not None:
                end = k.dead_at
            if end is not None and cur.start + CLOCK_SLACK_S < end:
                v.add("concurrent_executions", tid,
                      f"attempt {cur.attempt} started on {cur.worker} at {self.rel(cur.start)} "
                      f"while attempt {prev.attempt} ran on {prev.worker} until {self.rel(end)}")
            if c in ("designed_fail", "timeout") and prev.outcome != "done":
                designed_so_far += 1
                if designed_so_far <= spec.retry_failed:
                    counts["designed_retry"] += 1
                    continue
            if c == "lost" and k is not None and k.killed_at <= (
                    cur.start + CLOCK_SLACK_S):
                counts["rerun_explained"] += 1
                continue
            counts["rerun_unexplained"] += 1
            v.add("rerun_unexplained", tid,
                  f"attempt {cur.attempt} ran on {cur.worker} at {self.rel(cur.start)} after "
                  f"attempt {prev.attempt} on {prev.worker} ended "
                  f"{prev.outcome or 'without an end line'} with run {c}; "
                  + ("its worker was never killed" if k is None else
                     f"its worker was killed at {self.rel(k.killed_at)}"))
        # completions: one COMPLETED run row; a second 'done' only after a report lost to a kill
        completed_rows = [r for r in rows if r["status"] == "COMPLETED"]
        if len(completed_rows) > 1 or (len(dones) > 1 and not all(
                killed(d) is not None and by_attempt.get(d.attempt)
                and cls[by_attempt[d.attempt][-1]["id"]] == "lost" for d in dones[:-1])):
            counts["completed_twice"] += 1
            v.add("completed_twice", tid, f"{len(completed_rows)} COMPLETED runs, "
                                          f"{len(dones)} executions returned")
        elif len(dones) > 1:
            counts["done_twice_report_lost"] += 1

        # run rows against the task counters
        n = collections.Counter(cls.values())
        designed = n["designed_fail"] + n["timeout"]
        problems = []
        trailing = 0
        for r in sorted(rows, key=lambda r: r["attempt"]):
            trailing = trailing + 1 if cls[r["id"]] == "lost" else 0
        # lost_count counts the losses since the last outcome a worker reported (consecutive,
        # lifecycle.finish resets it); an older reading counted every loss: either is accepted
        if task["lost_count"] not in (trailing, n["lost"]):
            problems.append(f"lost_count={task['lost_count']} but {n['lost']} lost runs, "
                            f"{trailing} of them since the last reported outcome")
        if rows and max(r["attempt"] for r in rows) > task["attempt"]:
            problems.append(f"a run has attempt {max(r['attempt'] for r in rows)} > task "
                            f"attempt {task['attempt']}")
        if len(by_attempt) > task["attempt"]:
            problems.append(f"{len(by_attempt)} attempts with runs > task attempt "
                            f"{task['attempt']}")
        if status == "COMPLETED":
            if n["completed"] != 1 or task["times_run"] != 1 or task["times_failed"] != 0:
                problems.append(f"COMPLETED with {n['completed']} COMPLETED runs, times_run="
                                f"{task['times_run']}, times_failed={task['times_failed']}")
            if designed > spec.retry_failed:
                problems.append(f"{designed} designed failures > retry_failed "
                                f"{spec.retry_failed}")
            fail_lines = sum(1 for e in execs if e.outcome == "fail")
            if spec.kind == "flaky" and not n["designed_fail"] <= fail_lines == spec.fails:
                # a designed failure whose report died with its worker is a lost run
                problems.append(f"{n['designed_fail']} designed FAILED runs and {fail_lines} "
                                f"failing executions; designed {spec.fails}")
        elif status in ("FAILED", "TIMEOUT"):
            if (designed != spec.retry_failed + 1 or task["times_failed"] != designed
                    or task["times_run"] != 0 or n["completed"]):
                problems.append(f"{status} with {n['designed_fail']} designed FAILED and "
                                f"{n['timeout']} TIMEOUT runs, {n['completed']} COMPLETED, "
                                f"times_failed={task['times_failed']}, "
                                f"times_run={task['times_run']}, retry_failed="
                                f"{spec.retry_failed}")
        for bad in ("backstop_timeout", "stopped", "expired"):
            if n[bad]:
                problems.append(f"{n[bad]} {bad} runs")
        for p in problems:
            v.add("counters_disagree", tid, p)

    def _explains_unstarted(self, row: dict[str, Any]) -> bool:
        """A run that never started: its worker was killed after the lease, or the
        coordinator crashed while it was open (the lease reply died with it)."""
        start = _wall(row["start_time"]) or 0.0
        stop = _wall(row["stop_time"]) or float("inf")
        for k in self.kills:
            if k.worker == row["worker_name"] and k.wall + WALL_SLACK_S >= start:
                return True
        return any(start - WALL_SLACK_S <= c.wall <= stop + WALL_SLACK_S for c in self.crashes)

    # -- diagnostics ------------------------------------------------------------------------

    def _coordinator_lines(self) -> dict[int, list[str]]:
        """Log lines of the coordinator and the workers that name task ids (task=N,
        tasks=N,M,..., leases=N:A,...), by task id."""
        found: dict[int, list[str]] = collections.defaultdict(list)
        pattern = re.compile(r"\b(?:tasks?|leases?)=([0-9:,]+)")
        children: list[Any] = list(self.coordinators)
        for child in children + self.all_workers:
            try:
                text = child.log_text()
            except OSError:
                continue
            for line in text.splitlines():
                for match in pattern.finditer(line):
                    for part in match.group(1).split(","):
                        task = part.split(":")[0]
                        if task.isdigit() and len(found[int(task)]) < 20:
                            found[int(task)].append(f"[{child.name}] {line}")
        return found

    def _describe(self, task_id: int, spec: Spec | None, task: dict[str, Any] | None,
                  rows: list[dict[str, Any]], execs: list[Execution],
                  coord_lines: list[str]) -> str:
        out = [f"  --- task {task_id}: {spec.describe() if spec else '?'}"]
        if task is not None:
            out.append("    row: " + ", ".join(f"{k}={task[k]}" for k in (
                "status", "attempt", "times_run", "times_failed", "lost_count",
                "assigned_worker_name", "retry_failed", "next_run_time")))
        for r in rows:
            out.append(f"    run {r['id']} attempt={r['attempt']} {r['status']} "
                       f"({run_class(r)}) worker={r['worker_name']} start={r['start_time']} "
                       f"stop={r['stop_time']} tb={_last_line(r['traceback'])!r}")
        for ex in sorted(execs, key=lambda e: e.start):
            k = next((k for k in self.kills if k.worker == ex.worker), None)
            kill = f" (worker killed at {self.rel(k.killed_at)})" if k else ""
            out.append(f"    exec attempt={ex.attempt} worker={ex.worker} pid={ex.pid} "
                       f"start={self.rel(ex.start)} end={self.rel(ex.end)} "
                       f"outcome={ex.outcome}{kill}")
        for line in coord_lines:
            out.append(f"    log: {line}")
        return "\n".join(out)

    def fault_log(self) -> str:
        """Every injected fault, in order, for the report."""
        events: list[tuple[float, str]] = []
        for k in self.kills:
            events.append((k.killed_at, f"SIGKILL worker {k.worker} (pid {k.pid}) at progress "
                                        f"{k.progress}; running: {len(k.running)}"))
        for c in self.crashes:
            events.append((c.crash.killed_at, f"SIGKILL coordinator pid {c.crash.old_pid} at "
                                              f"progress {c.progress}; serving again after "
                                              f"{c.crash.downtime_s:.2f}s as pid "
                                              f"{c.crash.new_pid}"))
        for p in self.pg_restarts:
            events.append((p.started_at, f"pg_ctl restart -m fast at progress {p.progress}: "
                                         f"{p.took_s:.2f}s; after it: first task terminal "
                                         f"{_round(p.first_progress_s)}s, probe queued "
                                         f"{_round(p.probe_queued_s)}s, probe COMPLETED "
                                         f"{_round(p.probe_s)}s {p.error}"))
        return "\n".join(f"{self.rel(t)} {text}" for t, text in sorted(events))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _as_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    fields = dict(entry)
    return {"function": fields.pop("function"), "pargs": fields.pop("pargs"), **fields}
