"""The fuzz harness: send calls to a real coordinator, judge every answer, check its health.

`FuzzApi.send(call)` sends one request over a raw gRPC channel and fails unless the status
code is one the API documents for it (never UNKNOWN or INTERNAL, RESOURCE_EXHAUSTED only
for an over-limit request, DEADLINE_EXCEEDED only for a long-poll call given a short
deadline) and an error names its problem. Answers feed `strategies.POOLS` (ids, uuids,
sessions, leases) so later requests can refer to them.

`FuzzApi.check_health()` runs after each hypothesis test: the coordinator process is alive,
an ordinary task queued to a real worker (tests/support/sample_tasks.py) reaches COMPLETED,
and the database invariants hold (`invariant_violations`, read straight from the database).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa

from taskgrid.coordinator import schema
from taskgrid.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    common_pb2,
    worker_pb2_grpc,
)
from tests.fuzz.strategies import CHECK_GROUP, CHECK_PREFIX, MAX_MESSAGE_BYTES, POOLS, Call
from tests.support.processes import CoordinatorProcess, TestProcesses, WorkerProcess
from tests.support.wait import wait_until

Code = grpc.StatusCode

#: Codes a documented answer may carry (README, docs/protocol.md).
DOCUMENTED = frozenset({Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION,
                        Code.ALREADY_EXISTS, Code.OUT_OF_RANGE, Code.PERMISSION_DENIED,
                        Code.UNAUTHENTICATED, Code.ABORTED})
#: Calls that may wait (long-poll, stream): they get a short deadline, which may expire.
LONG_POLLS = {("worker", "Lease"), ("client", "WatchTask"), ("client", "WaitTask")}
CALL_TIMEOUT_S = 20.0
LONG_POLL_TIMEOUT_S = 0.5
#: an InvalidRequestError's details: "field: message", the field a dotted/indexed path
FIELD_ERROR = re.compile(r"^[A-Za-z_][\w.\[\]]*: \S")
#: the coordinator's message limit plus room for framing of the request
OVER_LIMIT_BYTES = MAX_MESSAGE_BYTES
CHECK_TIMEOUT_S = 30.0
#: hypothesis settings
EXAMPLES_ENV = "TASKGRID_FUZZ_EXAMPLES"
SEED_ENV = "TASKGRID_FUZZ_SEED"
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1),
                   ("grpc.max_receive_message_length", -1)]


def examples(default: int) -> int:
    """max_examples of one hypothesis test: the default, or $TASKGRID_FUZZ_EXAMPLES."""
    value = os.environ.get(EXAMPLES_ENV, "")
    return int(value) if value.strip() else default


def fuzz_seed() -> int:
    """The run's seed: $TASKGRID_FUZZ_SEED, or a fresh random one (printed in the summary)."""
    value = os.environ.get(SEED_ENV, "")
    if value.strip():
        return int(value)
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")  # one seed for all xdist workers
    return int(run, 16) % 2**32 if run else random.SystemRandom().randrange(2**32)


class FuzzSummary(UserWarning):
    """Not a problem: the figures of a fuzz run, shown in the warnings summary under xdist."""


class FuzzFailure(AssertionError):
    """An answer the API does not document, or a broken invariant."""


@dataclasses.dataclass(frozen=True)
class KnownFault:
    """A fault found by fuzzing whose fix belongs to files this suite does not own.

    A matching answer is counted (and shown in the summary) instead of failing the run, so
    fuzzing keeps looking for other faults; a targeted xfail test in test_fuzz_api.py sends
    the exact request and passes once the fault is fixed. Nothing else is excused.
    """

    name: str
    owner: str
    reason: str
    #: (call, database, problem) -> is it this fault; problem is the code's name for an
    #: undocumented code, else the judge's rule (e.g. ACCEPTED_BAD_RESULT)
    matches: Callable[[Call, str, str], bool]


#: the judge's rule for a Report applied with a result that is not JSON
ACCEPTED_BAD_RESULT = "accepted a result that is not JSON"

#: Faults found by fuzzing and not fixed yet (each with its own xfail test). Empty: the
#: register-language-over-64 and report-result-not-json faults were fixed in the core.
KNOWN_FAULTS: list[KnownFault] = [
]


def strict_json(text: str) -> bool:
    """Whether text is JSON a client can decode: no NaN or Infinity, not nested past
    Python's recursion limit."""

    def refuse(name: str) -> Any:
        raise ValueError(name)
    try:
        json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    return True


class FuzzApi:
    """One coordinator under fuzz, its database, a health-check worker and the counts."""

    def __init__(self, db_name: str, db_url: str, processes: TestProcesses, seed: int) -> None:
        self.db_name = db_name
        self.db_url = db_url
        self.processes = processes
        self.seed = seed
        self.coordinator: CoordinatorProcess = processes.start_coordinator(
            db_url, extra_args=["--max-message-bytes", str(MAX_MESSAGE_BYTES),
                                # in the proportions of the defaults (64 MiB messages,
                                # 16 MiB output and results): a run fits in an answer
                                "--max-output-bytes", str(MAX_MESSAGE_BYTES // 4),
                                "--max-result-bytes", str(MAX_MESSAGE_BYTES // 4)])
        self.channel = grpc.insecure_channel(self.coordinator.address, options=CHANNEL_OPTIONS)
        self.stubs = {"client": client_pb2_grpc.ClientServiceStub(self.channel),
                      "worker": worker_pb2_grpc.WorkerServiceStub(self.channel),
                      "admin": admin_pb2_grpc.AdminServiceStub(self.channel)}
        self.engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
        self.codes: collections.Counter[str] = collections.Counter()
        self.known: collections.Counter[str] = collections.Counter()
        self.by_method: collections.Counter[tuple[str, str]] = collections.Counter()
        self.check_worker: WorkerProcess | None = None
        self.checks = 0
        POOLS.reset()

    def close(self) -> None:
        """Close the channel and the engine (the fixture stops the processes)."""
        self.channel.close()
        self.engine.dispose()

    # -- sending -------------------------------------------------------------------------

    def send(self, call: Call, excuse_known: bool = True) -> tuple[grpc.StatusCode, Any]:
        """Send one call, judge the answer, feed the pools; returns (code, reply or error).

        With `excuse_known` (fuzzing), an answer matching a KNOWN_FAULTS entry is counted
        under its name instead of failing; without (the targeted xfail tests) it fails and
        is left out of the counts.
        """
        stub = getattr(self.stubs[call.service], call.method)
        long_poll = (call.service, call.method) in LONG_POLLS
        timeout = LONG_POLL_TIMEOUT_S if long_poll else CALL_TIMEOUT_S
        try:
            if call.method == "WatchTask":
                reply: Any = list(stub(call.request, timeout=timeout))
            else:
                reply = stub(call.request, timeout=timeout)
            code = Code.OK
        except grpc.RpcError as error:
            code, reply = error.code(), error
        if excuse_known:
            self.codes[code.name] += 1
            self.by_method[(call.method, code.name)] += 1
        self._judge(call, code, reply, long_poll, excuse_known)
        if code == Code.OK:
            self._remember(call, reply)
        return code, reply

    def _judge(self, call: Call, code: grpc.StatusCode, reply: Any, long_poll: bool,
               excuse_known: bool) -> None:
        if not self.coordinator.is_alive():
            self.fail(call, f"the coordinator exited ({self.coordinator.proc.returncode})")
        size = call.request.ByteSize()
        if code == Code.RESOURCE_EXHAUSTED:
            if size <= OVER_LIMIT_BYTES:
                self.fail(call, f"RESOURCE_EXHAUSTED for a {size}-byte request: "
                                f"{reply.details()}")
            return
        if code == Code.DEADLINE_EXCEEDED and long_poll:
            return
        if code not in DOCUMENTED:
            details = reply.details() if isinstance(reply, grpc.RpcError) else ""
            if not self._excused(call, code.name, excuse_known):
                self.fail(call, f"answered {code.name}: {details}",
                          self._traceback_for(details))
            return
        if code == Code.OK:
            self._judge_ok(call, reply, excuse_known)
            return
        details = reply.details() or ""
        if not details.strip():
            self.fail(call, f"{code.name} without details")
        if code == Code.INVALID_ARGUMENT and not FIELD_ERROR.match(details):
            self.fail(call, f"INVALID_ARGUMENT that names no field: {details!r}")

    def _excused(self, call: Call, problem: str, excuse_known: bool) -> bool:
        for fault in KNOWN_FAULTS if excuse_known else []:
            if fault.matches(call, self.db_name, problem):
                self.known[fault.name] += 1
                return True
        return False

    def _judge_ok(self, call: Call, reply: Any, excuse_known: bool) -> None:
        if call.method == "Report":
            stale = {(r.task_id, r.attempt) for r in reply.stale}
            bad = [r for r in call.request.reports if (r.ref.task_id, r.ref.attempt) not in stale
                   and r.HasField("result") and r.status == common_pb2.RUN_STATUS_COMPLETED
                   and not strict_json(r.result)]
            for r in bad:  # applied, so the run must have ended FAILED, never storing it
                view = self.stubs["client"].GetTask(client_pb2.GetTaskRequest(
                    ref=client_pb2.TaskRef(id=r.ref.task_id), all_runs=True))
                stored = [run for run in view.runs if run.attempt == r.ref.attempt
                          and run.run_result == r.result]
                if stored and not self._excused(call, ACCEPTED_BAD_RESULT, excuse_known):
                    self.fail(call, f"Report {ACCEPTED_BAD_RESULT}: {r.result[:200]!r}")
        results = []
        if call.method == "QueueTask":
            results = [reply]
        elif call.method in ("QueueTasks", "QueueJob"):
            results = list(reply.results)
        if not results:
            return
        graph_errors = dict(reply.errors) if call.method == "QueueJob" else {}
        failed = bool(graph_errors) or any(r.errors for r in results)
        for r in results:
            # all or nothing: with any error no task has an id, else every task has one
            if bool(r.id) == failed or (r.id and r.errors):
                self.fail(call, f"a queue answer must be all ids or none: {reply}")
        for errors in [graph_errors, *(dict(r.errors) for r in results)]:
            if any(not v.strip() for v in errors.values()):
                self.fail(call, f"an empty field error: {errors}")
        if call.method == "QueueJob" and failed and reply.layers:
            self.fail(call, f"QueueJob answered layers despite errors: {reply}")

    def _remember(self, call: Call, reply: Any) -> None:
        if call.method in ("QueueTask", "QueueTasks", "QueueJob"):
            for r in [reply] if call.method == "QueueTask" else reply.results:
                if r.id:
                    POOLS.add("task_ids", r.id)
                    POOLS.add("uuids", r.uuid)
        elif call.method == "Register":
            POOLS.add("sessions", reply.session)
            POOLS.add("worker_names", call.request.worker_name)
        elif call.method in ("Lease", "StartRuns"):
            for lease in reply.leases:
                POOLS.add("leases", (lease.ref.task_id, lease.ref.attempt))
        elif call.method == "ListTasks":
            if reply.next_page_token:
                POOLS.add("page_tokens", reply.next_page_token)
            for t in reply.tasks[:5]:
                POOLS.add("task_ids", t.id)

    def fail(self, call: Call | None, problem: str, extra: str = "") -> None:
        """Raise FuzzFailure with the request, the problem and the coordinator's log tail."""
        text = [f"[{self.db_name}] {problem}"]
        if call is not None:
            text.append(f"request: {call!r}")
        text.append(f"seed: {self.seed} (rerun with {SEED_ENV}={self.seed})")
        if extra:
            text.append(extra)
        text.append(f"coordinator log tail:\n{self.coordinator.log_tail(40)}")
        raise FuzzFailure("\n".join(text))

    def _traceback_for(self, details: str) -> str:
        """The coordinator's logged traceback of an INTERNAL answer (found by its error id)."""
        match = re.search(r"error id ([0-9a-f]+)", details)
        if not match:
            return ""
        log = self.coordinator.log_text()
        at = log.find(f"error_id={match.group(1)}")
        return f"coordinator traceback:\n{log[at:at + 6000]}" if at >= 0 else ""

    # -- health --------------------------------------------------------------------------

    def check_health(self) -> None:
        """Coordinator alive, a real task COMPLETED through a real worker, invariants hold."""
        if not self.coordinator.is_alive():
            self.fail(None, f"the coordinator exited ({self.coordinator.proc.returncode})")
        self.checks += 1
        violations = self.invariant_violations()
        if violations:
            self.fail(None, "database invariants broken:\n  " + "\n  ".join(violations))
        self._ordinary_task_completes()
        violations = self.invariant_violations()
        if violations:
            self.fail(None, "database invariants broken:\n  " + "\n  ".join(violations))

    def _ensure_check_worker(self) -> WorkerProcess:
        """The health check's worker (group fuzzcheck), restarted when fuzzing ended it."""
        w = self.check_worker
        if w is not None and w.is_alive():
            listed = {x.worker_name: x for x in self.coordinator.list_workers()}
            mine = listed.get(w.name)
            if mine is not None and mine.alive:
                if mine.status == common_pb2.WORKER_STATUS_DISABLED:
                    self.stubs["admin"].SetWorkerStatus(admin_pb2.SetWorkerStatusRequest(
                        status=common_pb2.WORKER_STATUS_ACTIVE, worker_name=w.name))
                    return w
                if mine.status == common_pb2.WORKER_STATUS_ACTIVE:
                    return w
        if w is not None:
            w.kill()
        name = f"{CHECK_PREFIX}-{self.db_name}-{len(self.processes.workers) + 1}"
        self.check_worker = self.processes.start_worker(self.coordinator.address, name,
                                                        groups=[CHECK_GROUP])
        return self.check_worker

    def _ordinary_task_completes(self) -> None:
        worker = self._ensure_check_worker()
        a, b = self.checks, 1000
        reply = self.stubs["client"].QueueTask(client_pb2.QueueTaskRequest(
            task=common_pb2.TaskSpec(function_name="add", args=f"[{a}, {b}]",
                                     group_name=CHECK_GROUP)), timeout=CALL_TIMEOUT_S)
        if not reply.id:
            self.fail(None, f"an ordinary task was refused: {dict(reply.errors)}")
        get = client_pb2.GetTaskRequest(ref=client_pb2.TaskRef(id=reply.id))

        def done() -> Any:
            view = self.stubs["client"].GetTask(get, timeout=CALL_TIMEOUT_S)
            status = common_pb2.TaskStatus.Name(view.task.status)
            return view if status not in ("TASK_STATUS_QUEUED", "TASK_STATUS_ASSIGNED",
                                          "TASK_STATUS_RUNNING") else None
        try:
            view = wait_until(done, CHECK_TIMEOUT_S, 0.05, "the ordinary task to end")
        except AssertionError as exc:
            self.fail(None, f"{exc}", f"worker log tail:\n{worker.log_tail(30)}")
        status = common_pb2.TaskStatus.Name(view.task.status)
        if status != "TASK_STATUS_COMPLETED" or view.runs[-1].run_result != str(a + b):
            self.fail(None, f"the ordinary task ended {status}: {view}",
                      f"worker log tail:\n{worker.log_tail(30)}")

    def invariant_violations(self) -> list[str]:
        """What is wrong in the database now; each check is one statement (one snapshot)."""
        t, r, o = schema.task.c, schema.run.c, schema.output.c
        running_runs = (sa.select(sa.func.count()).select_from(schema.run)
                        .where(r.task_id == t.id, r.status == "RUNNING").scalar_subquery())
        current_run = (sa.select(sa.func.count()).select_from(schema.run)
                       .where(r.task_id == t.id, r.status == "RUNNING", r.attempt == t.attempt)
                       .scalar_subquery())
        task_of_run = sa.select(schema.task).where(t.id == r.task_id).correlate(schema.run)
        checks = {
            "RUNNING task (keeping results) without exactly one open run of its attempt":
                sa.select(t.id, t.attempt, running_runs, current_run).where(
                    t.status == "RUNNING", t.discard_results.is_(False),
                    sa.or_(running_runs != 1, current_run != 1)),
            "RUNNING task with discard_results and an open run":
                sa.select(t.id).where(t.status == "RUNNING", t.discard_results.is_(True),
                                      running_runs != 0),
            "open run of a task that is not RUNNING at that attempt":
                sa.select(r.id, r.task_id, r.attempt).where(
                    r.status == "RUNNING",
                    ~sa.exists(task_of_run.where(t.status == "RUNNING",
                                                 t.attempt == r.attempt))),
            "ASSIGNED or RUNNING task without assigned_worker_name":
                sa.select(t.id, t.status).where(t.status.in_(["ASSIGNED", "RUNNING"]),
                                                t.assigned_worker_name == ""),
            "two runs of one attempt":
                sa.select(r.task_id, r.attempt, sa.func.count()).group_by(
                    r.task_id, r.attempt).having(sa.func.count() > 1),
            "task with an unknown status or negative counters":
                sa.select(t.id, t.status).where(sa.or_(
                    t.status.not_in(["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED",
                                     "TIMEOUT", "STOPPED", "EXPIRED"]),
                    t.attempt < 0, t.times_run < 0, t.times_failed < 0, t.lost_count < 0)),
            "live output of a run that is not open":
                sa.select(o.run_id, sa.func.count()).where(
                    ~sa.exists(sa.select(r.id).where(r.id == o.run_id, r.status == "RUNNING"))
                ).group_by(o.run_id),
        }
        problems = []
        with self.engine.connect() as conn:
            for what, stmt in checks.items():
                rows = conn.execute(stmt.limit(5)).all()
                if rows:
                    problems.append(f"{what}: {[tuple(row) for row in rows]}")
        return problems

    # -- figures -------------------------------------------------------------------------

    def summary(self) -> str:
        """One line: requests sent and the codes seen."""
        total = sum(self.codes.values())
        codes = " ".join(f"{k}={v}" for k, v in self.codes.most_common())
        known = "".join(f", known fault {k} x{v}" for k, v in sorted(self.known.items()))
        return (f"fuzz summary [{self.db_name}]: {total} requests, {self.checks} health checks, "
                f"seed {self.seed}: {codes}{known}")

    def by_method_table(self) -> str:
        """Per method: the codes seen."""
        methods: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for (method, code), n in sorted(self.by_method.items()):
            methods[method][code] = n
        return "\n".join(f"  {m}: " + " ".join(f"{c}={n}" for c, n in codes.items())
                         for m, codes in methods.items())


@contextlib.contextmanager
def uncaptured(config: Any) -> Iterator[None]:
    """Write to the real terminal even under capture (and from an xdist worker)."""
    manager = config.pluginmanager.getplugin("capturemanager")
    if manager is None:
        yield
        return
    with manager.global_and_fixture_disabled():
        yield


def stats_dir(root: Path) -> Path:
    """Where the per-database summaries of a run are kept (for quoting the figures)."""
    return root / ".pytest_cache" / "taskgrid-fuzz"


def elapsed(since: float) -> str:
    """Seconds since `since` (monotonic), for the summary line."""
    return f"{time.monotonic() - since:.1f}s"
