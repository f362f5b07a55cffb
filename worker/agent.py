"""The worker's side of the protocol: register, lease, heartbeat, output, reports.

`Agent` is the only module of taskgrid.worker that imports the generated
stubs. It drives a runner.Pool and keeps four loops, each a `*_once` step
wrapped by a thin loop:

- the calling thread (`run`): register, then long-poll Lease for exactly
  the free slots (wait_s = heartbeat) and submit what comes back;
- a heartbeat thread: Heartbeat every `heartbeat` seconds with every held
  lease and the RSS; it never waits on a task, so a hung task cannot stop it;
- a reporter thread: one SendOutput with the due output of every run, then
  one Report with every finished run, each call batching whatever queued up;
- the pool's I/O thread (runner.py), which hands finished runs to `_on_finish`.

Commands (DISABLED, TERMINATE, KILL, stop lease X) may arrive in Lease and
Heartbeat replies and are applied by whichever thread got them. While the
coordinator is away, running tasks continue, calls are retried with jittered
exponential backoff, and reports and output wait in the outbox.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from taskgrid import __version__
from taskgrid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from taskgrid.worker.capture import Chunk
from taskgrid.worker.outbox import Outbox
from taskgrid.worker.runner import LeaseKey, Outcome, Pool, RunResult, TaskRun

logger = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "127.0.0.1:50051"
DEFAULT_GROUP = "main"
DEFAULT_HEARTBEAT = 3.0
DEFAULT_OUTPUT_INTERVAL_S = 1.0
"""Live output cadence of a run whose sync_output is 0 (web2py: about 1 s)."""
DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_BACKOFF_BASE_S = 0.1
DEFAULT_BACKOFF_CAP_S = 5.0
DEFAULT_EXIT_FLUSH_S = 10.0
"""How long a leaving worker keeps retrying unsent reports before giving up."""
STALE_LEASES_KEY = "taskgrid-stale-leases"

_S = common_pb2
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
_RUN_STATUS = {
    Outcome.COMPLETED: _S.RUN_STATUS_COMPLETED,
    Outcome.FAILED: _S.RUN_STATUS_FAILED,
    Outcome.TIMEOUT: _S.RUN_STATUS_TIMEOUT,
    Outcome.STOPPED: _S.RUN_STATUS_STOPPED,
}


@dataclass(frozen=True)
class AgentConfig:
    """Everything `taskgrid worker` flags decide."""

    tasks: str
    functions: list[str]
    coordinator: str = DEFAULT_COORDINATOR
    group_names: list[str] = field(default_factory=lambda: [DEFAULT_GROUP])
    worker_name: str = ""
    heartbeat: float = DEFAULT_HEARTBEAT
    max_empty_runs: int = 0
    concurrency: int = 1
    kill_grace_s: float = 5.0


class Backoff:
    """Jittered exponential delays: base, 2*base, ... capped, each scaled by 0.5-1.0."""

    def __init__(self, base_s: float = DEFAULT_BACKOFF_BASE_S, cap_s: float = DEFAULT_BACKOFF_CAP_S):
        self._base = base_s
        self._cap = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        delay = min(self._cap, self._base * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0


def stale_keys(error: grpc.RpcError) -> set[LeaseKey]:
    """Leases named in the ``taskgrid-stale-leases`` trailer of a FAILED_PRECONDITION."""
    found: set[LeaseKey] = set()
    for key, value in getattr(error, "trailing_metadata", lambda: None)() or ():
        if key == STALE_LEASES_KEY:
            for item in str(value).split(","):
                task, _, attempt = item.strip().partition(":")
                if task.isdigit() and attempt.isdigit():
                    found.add((int(task), int(attempt)))
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of this process and `pids` (Linux /proc; 0 where unknown)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in [os.getpid(), *pids]:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def _ref(key: LeaseKey) -> _S.LeaseRef:
    return _S.LeaseRef(task_id=key[0], attempt=key[1])


def _chunk_pb(key: LeaseKey, chunk: Chunk) -> _S.OutputChunk:
    return _S.OutputChunk(
        task_id=key[0], attempt=key[1], seq=chunk.seq, data=chunk.data, clear=chunk.clear
    )


def task_run_from_lease(lease: worker_pb2.Lease) -> TaskRun:
    """Convert a Lease message into the runner's TaskRun."""
    return TaskRun(
        task_id=lease.ref.task_id,
        attempt=lease.ref.attempt,
        run_id=lease.run_id,
        uuid=lease.uuid,
        function_name=lease.function_name,
        args=lease.args or "[]",
        vars=lease.vars or "{}",
        timeout=float(lease.timeout),
        sync_output=float(lease.sync_output),
        task_name=lease.task_name,
    )


def report_to_pb(result: RunResult) -> worker_pb2.RunReport:
    """Convert a finished run into a RunReport message."""
    report = worker_pb2.RunReport(
        ref=_ref(result.task.key),
        status=_RUN_STATUS[result.outcome],
        traceback=result.traceback,
        output=[_chunk_pb(result.task.key, chunk) for chunk in result.output],
    )
    if result.result is not None:
        report.result = result.result
    return report


class Agent:
    """One worker: a session with the coordinator and a pool of task children."""

    def __init__(self, config: AgentConfig, pool: Pool | None = None) -> None:
        self.config = config
        self._pool = pool or Pool(
            config.tasks, config.concurrency, self._on_finish, kill_grace_s=config.kill_grace_s
        )
        self._outbox = Outbox()
        self._cond = threading.Condition(threading.RLock())  # RLock: signal handlers take it
        self._session: worker_pb2.WorkerSession | None = None
        self._generation = 0  # bumped when a session is lost: late errors of old calls are moot
        self._status = _S.WORKER_STATUS_ACTIVE
        self._leaving: str | None = None  # why the worker exits once idle
        self._killing = False
        self._heartbeat = config.heartbeat
        self._empty_runs = 0
        self._dropped: set[LeaseKey] = set()  # runs whose results must not be reported
        self._output_due: dict[LeaseKey, float] = {}
        self._reporter_idle = False
        self._threads_stop = threading.Event()
        self._channel: grpc.Channel | None = None
        self._stub: worker_pb2_grpc.WorkerServiceStub | None = None

    # ---- entry points --------------------------------------------------------------

    def run(self) -> int:
        """Start the children, then serve until told to leave; return the exit code.

        Raises:
            runner.PoolError: the task children could not load the tasks.
        """
        self._pool.start()  # children first, before gRPC starts its threads
        self._channel = grpc.insecure_channel(
            self.config.coordinator,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        self._stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="taskgrid-heartbeat", daemon=True),
            threading.Thread(target=self._reporter_loop, name="taskgrid-reporter", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            return self._main_loop()
        finally:
            self._threads_stop.set()
            with self._cond:
                self._cond.notify_all()
            for thread in threads:
                thread.join(DEFAULT_RPC_TIMEOUT_S)
            self._pool.close()
            self._channel.close()

    def request_exit(self, force: bool = False) -> None:
        """Leave like TERMINATE (finish running tasks), or like KILL when `force`."""
        self._apply_status(_S.WORKER_STATUS_KILL if force else _S.WORKER_STATUS_TERMINATE)

    # ---- main loop: register and lease ------------------------------------------

    def _main_loop(self) -> int:
        backoff = Backoff()
        idle_since: float | None = None
        while True:
            with self._cond:
                if self._leaving and not self._pool.active_keys():
                    if self._outbox.is_empty():
                        break
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > DEFAULT_EXIT_FLUSH_S:
                        logger.error("exiting with unsent reports leases=%s",
                                     sorted(self._outbox.held_keys()))  # fmt: skip
                        break
                    self._cond.wait(0.5)  # woken by the reporter; the bound ends the flush
                    continue
                if self._session is not None and not self._may_lease():
                    self._cond.wait()
                    continue
            if self._session is None:
                if self.register_once():
                    backoff.reset()
                    continue
            elif self.lease_once():
                backoff.reset()
                continue
            with self._cond:
                self._cond.wait(backoff.next_delay())
        logger.info("worker exiting reason=%s", self._leaving)
        return 0

    def _may_lease(self) -> bool:
        return (
            not self._leaving
            and self._status == _S.WORKER_STATUS_ACTIVE
            and self._pool.free_slots() > 0
        )

    def register_once(self) -> bool:
        """Register (again); True on success, False to retry after a backoff."""
        config = self.config
        request = worker_pb2.RegisterRequest(
            worker_name=config.worker_name,
            group_names=config.group_names,
            functions=sorted(config.functions),
            capacity=config.concurrency,
            language="python",
            heartbeat=config.heartbeat,
            hostname=os.uname().nodename,
            pid=os.getpid(),
            version=__version__,
        )
        try:
            response = self._rpc().Register(request, timeout=DEFAULT_RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            self._log_rpc_error("Register", error)
            return False
        with self._cond:
            self._session = response.session
            self._heartbeat = response.heartbeat or config.heartbeat
            self._empty_runs = 0
            self._cond.notify_all()
        logger.info("worker registered name=%s id=%s groups=%s functions=%s",
                    config.worker_name, response.session.worker_id,
                    ",".join(config.group_names), len(config.functions))  # fmt: skip
        self._apply_status(response.status)
        return True

    def lease_once(self) -> bool:
        """One long-poll Lease for the free slots; False when the call failed."""
        with self._cond:
            session, generation = self._session, self._generation
            free = self._pool.free_slots()
            was_busy = bool(self._pool.active_keys())
        if session is None or free <= 0:
            return True
        request = worker_pb2.LeaseRequest(
            session=session, max_tasks=free, wait_s=self._heartbeat, prefetch=False
        )
        try:
            response = self._rpc().Lease(request, timeout=self._heartbeat + DEFAULT_RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            return self._handle_error("Lease", error, generation)
        self._apply_status(response.status)
        self._apply_stops(response.stop)
        with self._cond:
            if generation != self._generation:
                return True  # the session was lost meanwhile: these leases are gone too
            for lease in response.leases:
                task = task_run_from_lease(lease)
                logger.debug("leased task=%s attempt=%s function=%s", *task.key, task.function_name)
                if self._killing:
                    self._outbox.add_report(RunResult(task, Outcome.STOPPED, None, "", []))
                else:
                    self._pool.submit(task)
            if self._reporter_idle:
                self._cond.notify_all()
            self._count_empty_run(bool(response.leases) or was_busy)
        return True

    def _count_empty_run(self, had_work: bool) -> None:
        """web2py's max_empty_runs: consecutive empty leases while idle end the worker."""
        if had_work or self._status != _S.WORKER_STATUS_ACTIVE:
            self._empty_runs = 0
            return
        self._empty_runs += 1
        limit = self.config.max_empty_runs
        if limit > 0 and self._empty_runs >= limit and not self._leaving:
            logger.info("no work after %s empty lease calls, leaving", self._empty_runs)
            self._leaving = "max_empty_runs"

    # ---- commands -------------------------------------------------------------------

    def _apply_status(self, status: int) -> None:
        """Obey the worker status the coordinator sent (or a local signal asked for)."""
        stop_all = False
        with self._cond:
            if status == _S.WORKER_STATUS_KILL and not self._killing:
                logger.info("KILL received: stopping running tasks and leaving")
                self._leaving = self._leaving or "KILL"
                self._killing = stop_all = True
            elif status == _S.WORKER_STATUS_TERMINATE and not self._leaving:
                logger.info("TERMINATE received: finishing running tasks, then leaving")
                self._leaving = "TERMINATE"
            elif status in (_S.WORKER_STATUS_ACTIVE, _S.WORKER_STATUS_DISABLED):
                if status != self._status and not self._leaving:
                    logger.info("worker status now %s", _S.WorkerStatus.Name(status))
                    self._status = status
            self._cond.notify_all()
        if stop_all:
            self._pool.stop_all(Outcome.STOPPED)

    def _apply_stops(self, refs: Iterable[_S.LeaseRef]) -> None:
        for ref in refs:
            if self._pool.stop((ref.task_id, ref.attempt), Outcome.STOPPED):
                logger.info("stop received task=%s attempt=%s", ref.task_id, ref.attempt)

    # ---- heartbeat thread -----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        while not self._threads_stop.is_set():
            with self._cond:
                if self._session is None:
                    self._cond.wait(1.0)  # registration notifies; the bound covers exit
                    continue
            if self.heartbeat_once():
                backoff.reset()
                delay = self._heartbeat
            else:
                delay = min(backoff.next_delay(), self._heartbeat)
            self._threads_stop.wait(delay)

    def heartbeat_once(self) -> bool:
        """Send one Heartbeat and obey its reply; False when it should be retried soon."""
        with self._cond:
            session, generation = self._session, self._generation
            held = set(self._pool.active_keys()) | self._outbox.held_keys()
            held -= self._dropped
        if session is None:
            return True
        request = worker_pb2.HeartbeatRequest(
            session=session,
            running=[_ref(key) for key in sorted(held)],
            rss_bytes=rss_bytes(self._pool.child_pids()),
        )
        try:
            response = self._rpc().Heartbeat(request, timeout=max(self._heartbeat, 1.0))
        except grpc.RpcError as error:
            return self._handle_error("Heartbeat", error, generation)
        if response.heartbeat > 0:
            self._heartbeat = response.heartbeat
        self._apply_status(response.status)
        self._apply_stops(response.stop)
        return True

    # ---- reporter thread: output and reports --------------------------------------

    def _reporter_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._reporter_has_work():
                    if self._threads_stop.is_set():
                        return
                    due = min(self._output_due.values(), default=float("inf"))
                    self._reporter_idle = due == float("inf")
                    wait = None if self._reporter_idle else max(0.0, due - time.monotonic())
                    self._cond.wait(wait)
                self._reporter_idle = False
            if self.flush_once():
                backoff.reset()
            else:
                self._threads_stop.wait(backoff.next_delay())

    def _reporter_has_work(self) -> bool:
        """Caller holds the lock: refresh output schedules and say whether to send now."""
        now = time.monotonic()
        active = {run.task.key: run for run in self._pool.active_runs()}
        for key in [k for k in self._output_due if k not in active]:
            del self._output_due[key]
        for key, run in active.items():
            if key not in self._output_due:
                self._output_due[key] = run.started + _output_interval(run.task)
        has_due_output = any(due <= now for due in self._output_due.values())
        return self._session is not None and (
            has_due_output or self._outbox.has_reports() or self._outbox.has_output()
        )

    def flush_once(self) -> bool:
        """Send due live output, then every finished run; False when a call failed."""
        now = time.monotonic()
        for run in self._pool.active_runs():
            key = run.task.key
            with self._cond:
                due = self._output_due.get(key, float("inf"))
                if due > now:
                    continue
                self._output_due[key] = now + _output_interval(run.task)
            self._outbox.add_chunks(key, run.output.take())
        return self._send_output() and self._send_reports()

    def _send_output(self) -> bool:
        batch = self._outbox.take_output()
        while batch:
            with self._cond:
                session, generation = self._session, self._generation
            if session is None:
                return True
            chunks = [_chunk_pb(key, chunk) for key, items in batch.items() for chunk in items]
            try:
                self._rpc().SendOutput(
                    worker_pb2.SendOutputRequest(session=session, chunks=chunks),
                    timeout=DEFAULT_RPC_TIMEOUT_S,
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION and stale_keys(error):
                    stale = stale_keys(error)
                    self._drop_leases(stale, "SendOutput")
                    batch = {key: items for key, items in batch.items() if key not in stale}
                    continue
                if error.code() in _TRANSIENT:
                    self._outbox.restore_output(batch)
                return self._handle_error("SendOutput", error, generation)
            batch = self._outbox.take_output()
        return True

    def _send_reports(self) -> bool:
        batch = self._outbox.take_reports()
        while batch:
            with self._cond:
                session, generation = self._session, self._generation
            if session is None:
                return True
            request = worker_pb2.ReportRequest(
                session=session, reports=[report_to_pb(result) for result in batch]
            )
            try:
                self._rpc().Report(request, timeout=DEFAULT_RPC_TIMEOUT_S)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION and stale_keys(error):
                    stale = stale_keys(error)
                    self._drop_leases(stale, "Report")
                    batch = [result for result in batch if result.task.key not in stale]
                    continue
                if error.code() in _TRANSIENT:
                    self._outbox.restore_reports(batch)
                return self._handle_error("Report", error, generation)
            logger.debug("reported runs=%s", len(batch))
            with self._cond:
                self._cond.notify_all()  # a leaving main loop waits for an empty outbox
            batch = self._outbox.take_reports()
        return True

    def _on_finish(self, result: RunResult) -> None:
        """Pool callback (its I/O thread): queue the report and wake the reporter."""
        key = result.task.key
        logger.debug("run ended task=%s attempt=%s outcome=%s", *key, result.outcome.value)
        with self._cond:
            self._output_due.pop(key, None)
            if key in self._dropped:
                self._dropped.discard(key)
            else:
                self._outbox.add_report(result)
            self._cond.notify_all()

    # ---- errors and sessions ------------------------------------------------------

    def _rpc(self) -> worker_pb2_grpc.WorkerServiceStub:
        assert self._stub is not None, "Agent.run() creates the channel"
        return self._stub

    def _handle_error(self, method: str, error: grpc.RpcError, generation: int) -> bool:
        """React to a failed call; True when the caller may go on without a backoff."""
        code = error.code()
        if code == grpc.StatusCode.NOT_FOUND:
            self._lose_session(generation)
            return True
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            stale = stale_keys(error)
            if stale:
                self._drop_leases(stale, method)
                return True
        self._log_rpc_error(method, error)
        return code not in _TRANSIENT and code != grpc.StatusCode.FAILED_PRECONDITION

    def _log_rpc_error(self, method: str, error: grpc.RpcError) -> None:
        code = error.code()
        if code in _TRANSIENT:
            logger.debug("%s failed, will retry code=%s", method, code.name)
            if code == grpc.StatusCode.UNAVAILABLE:
                logger.log(logging.INFO, "coordinator unreachable: retrying with backoff")
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            logger.error("%s rejected as invalid (dropped) details=%s", method, error.details())
        else:
            logger.warning("%s failed code=%s details=%s", method, code.name, error.details())

    def _drop_leases(self, keys: set[LeaseKey], method: str) -> None:
        """The coordinator says these leases are stale: stop their runs, forget their output."""
        logger.warning("%s: stale leases dropped leases=%s", method, sorted(keys))
        with self._cond:
            running = set(self._pool.active_keys())
            self._dropped |= keys & running
            self._outbox.discard(keys)
        for key in keys & running:
            self._pool.stop(key, Outcome.STOPPED)

    def _lose_session(self, generation: int) -> None:
        """The coordinator forgot us: drop every lease and register again."""
        with self._cond:
            if generation != self._generation or self._session is None:
                return
            logger.warning("session lost (worker unknown or declared dead): registering again")
            self._session = None
            self._generation += 1
            running = set(self._pool.active_keys())
            self._dropped |= running
            self._outbox.clear()
            self._cond.notify_all()
        for key in running:
            self._pool.stop(key, Outcome.STOPPED)


def _output_interval(task: TaskRun) -> float:
    return task.sync_output if task.sync_output > 0 else DEFAULT_OUTPUT_INTERVAL_S
