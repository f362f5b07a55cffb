"""The worker's side of the protocol: register, lease, heartbeat, commands, delivery.

`Agent` owns the session and its loops; with ``_convert`` (messages <->
worker records) and ``delivery`` (`DeliveryMixin`: sending batches, reacting
to failed calls) it is the only code of taskgrid.worker that touches the
generated stubs. It runs a runner.Pool and three loops, each a `*_once` step
inside a thin loop:

- the calling thread (`run`): register, then long-poll Lease for exactly
  the free slots (wait_s = heartbeat) and submit what comes back; while
  DISABLED too (the coordinator holds that call until the worker is resumed),
  so that `resume` reaches it at once, not at its next heartbeat;
- a heartbeat thread: Heartbeat every `heartbeat` seconds with every held
  lease and the RSS; it never waits on a task, so a hung task cannot stop it.
  A lease is held (``_held``) from the Lease answer until its report is
  acknowledged or it is handed back or dropped, so a run that has finished
  but whose report is not queued yet is still listed;
- the reporter thread (reporter.py), which batches output and reports and
  hands them to `send_output` / `send_reports` (delivery.py).

Commands (DISABLED, TERMINATE, KILL, stop lease X) arrive in Lease and
Heartbeat replies and are obeyed by whichever thread got them; leases an
answer lists as ``stale`` are stopped and dropped (delivery.py). The three
threads share one channel, to the current address of the coordinator list
(``--coordinator A,B``, or a DNS name with several records): a call that
finds its coordinator away moves the channel to the next address and is
sent again there at once, keeping the session, the leases and the running
tasks (delivery.py `_call`, docs/connecting.md). While every coordinator is
away, tasks keep running and every call is retried with a jittered
exponential backoff; NOT_FOUND means the coordinator forgot this worker:
its runs are stopped and dropped, and it registers again.
UNAUTHENTICATED or PERMISSION_DENIED on Register can only mean a bad bearer
token (or one of the wrong role): it is logged once and, after
DEFAULT_AUTH_ATTEMPTS tries, the worker exits EXIT_AUTH. ALREADY_EXISTS on
Register means another live worker uses this name: it may be an earlier
process of this very worker that died without a word, which the coordinator
declares dead after ``dead_after``, so Register is retried for that long
plus two heartbeats (`name_wait_s`) before the worker exits EXIT_NAME_TAKEN.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from taskgrid import tracing
from taskgrid.client._addresses import Address, AddressBook
from taskgrid.client._channel import tls_hint
from taskgrid.client._failover import Failover
from taskgrid.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from ._convert import (
    lease_keys,
    lease_ref,
    register_request,
    report_to_pb,
    stale_keys,
    task_run_from_lease,
)
from .backoff import Backoff
from .channel import ChannelSecurity, open_channel
from .command import CommandPolicy
from .delivery import DEFAULT_RPC_TIMEOUT_S, DeliveryMixin
from .metrics import WorkerMetrics
from .records import LeaseKey, Outcome, RunResult, TaskRun, describe_leases
from .reporter import Reporter
from .runner import DEFAULT_KILL_GRACE_S, Pool

logger = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "127.0.0.1:50051"
DEFAULT_GROUP = "main"
DEFAULT_HEARTBEAT = 3.0
DEFAULT_EXIT_FLUSH_S = 10.0
"""How long a leaving worker keeps trying to deliver its last reports."""
DEFAULT_AUTH_ATTEMPTS = 5
"""Registrations rejected for bad credentials in a row before the worker gives up."""
EXIT_AUTH = 5
"""Exit code when the coordinator keeps rejecting the worker's token or certificate."""
EXIT_NAME_TAKEN = 6
"""Exit code when another live worker keeps using this worker's name (ALREADY_EXISTS)."""
DEFAULT_DEAD_AFTER_BEATS = 3
"""The coordinator's default --dead-after-beats, to guess dead_after before registering."""
LEASE_COALESCE_S = 0.002
"""How long a busy worker waits for its slots to free before its next Lease."""
DEFAULT_HEARTBEAT_TRIES = 3
"""Heartbeats an older coordinator may refuse for stale leases in a row before a backoff."""
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    # gRPC's own reconnect backoff grows to 2 minutes; a restarted coordinator must
    # hear from us well within its dead-worker limit (3 heartbeats), so keep it short.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_S = common_pb2
# On Register (which carries no session) these can only be about the bearer token.
_CREDENTIALS_REJECTED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
#: how gRPC reports a TLS mismatch at connection time (the details tell it from an outage)
_TLS_SUSPECT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN}


@dataclass(frozen=True)
class AgentConfig:
    """Everything the `taskgrid worker` flags decide."""

    tasks: str
    functions: list[str]
    coordinator: str = DEFAULT_COORDINATOR
    """``HOST:PORT``, or several separated by commas; a DNS name stands for all its records."""
    group_names: list[str] = field(default_factory=lambda: [DEFAULT_GROUP])
    worker_name: str = ""
    heartbeat: float = DEFAULT_HEARTBEAT
    max_empty_runs: int = 0
    concurrency: int = 1
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    security: ChannelSecurity = field(default_factory=ChannelSecurity)
    command_policy: CommandPolicy = field(default_factory=CommandPolicy)
    #: HOST:PORT of the Prometheus /metrics endpoint (None: no metrics)
    metrics_listen: str | None = None
    #: an OpenTelemetry span around each run (the `tracing` extra)
    tracing: bool = False
    """Command tasks this worker runs; it declares the capability only when allowed."""


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of this process and `pids` (from Linux /proc; 0 where unknown)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in [os.getpid(), *pids]:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def _describe_policy(policy: CommandPolicy) -> str:
    if not policy.allowed:
        return "no"
    return ",".join(policy.executables) if policy.executables else "any"


class Agent(DeliveryMixin):
    """One worker: a session with the coordinator and a pool of task children."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._pool = Pool(
            config.tasks, config.concurrency, self._on_finish, kill_grace_s=config.kill_grace_s,
            command_policy=config.command_policy,
        )
        self._reporter = Reporter(self, self._pool.active_runs, self._has_session)
        self._metrics = (WorkerMetrics(config.concurrency, self._pool.free_slots)
                         if config.metrics_listen else None)
        if config.tracing:
            tracing.enable()
        self._spans: dict[LeaseKey, Any] = {}  # open run spans, while tracing
        self._cond = threading.Condition()
        self._session: worker_pb2.WorkerSession | None = None
        self._generation = 0  # bumped when a session is lost: late errors of old calls are moot
        self._status: int = _S.WORKER_STATUS_ACTIVE
        self._leaving: str | None = None  # why the worker exits once its runs are over
        self._killing = False
        self._heartbeat = config.heartbeat
        self._empty_runs = 0
        self._hold_until = 0.0  # Lease answers at once while a stop is pending: pause leasing
        # DISABLED: Lease is long-polled all the same, so the coordinator can answer it the
        # moment the worker is resumed; a coordinator that answers such a Lease at once
        # (older ones) is asked again only after a heartbeat instead (`_disabled_poll`).
        self._quiet_until = 0.0
        self._dropped: set[LeaseKey] = set()  # unfinished runs whose outcome must not be reported
        self._unfinished: set[LeaseKey] = set()  # submitted runs whose outcome is not queued yet
        # Leases this worker holds, from the Lease answer until the report is acknowledged
        # (or the lease is handed back or dropped): what every heartbeat lists.
        self._held: set[LeaseKey] = set()
        self._warned: dict[LeaseKey, None] = {}  # stale leases already logged (delivery.py)
        self._dead_after: float | None = None  # from the last RegisterResponse
        self._lease_takes_reports = False  # from the last RegisterResponse
        self._carrying = False  # the main loop is about to lease: finished runs ride along
        self._lease_in_flight = False  # a Lease call is out (maybe parked): Report them
        self._name_taken_since: float | None = None  # first ALREADY_EXISTS of this streak
        self._failed_calls = 0  # consecutive failed calls, so an outage is logged once
        self._auth_failures = 0  # consecutive registrations refused for bad credentials
        self._exit_code = 0
        self._stopping = threading.Event()
        # The channel to the current coordinator, shared by the threads; opened in run().
        self._link = Failover(AddressBook(config.coordinator, log=logger), self._connect,
                              log=logger)  # fmt: skip

    # ---- entry points --------------------------------------------------------------

    def run(self) -> int:
        """Start the children, then serve until told to leave; return the exit code.

        0 after TERMINATE, KILL, a signal or max_empty_runs; 1 when the
        coordinator rejected the registration as invalid; EXIT_AUTH when it
        rejected the worker's credentials DEFAULT_AUTH_ATTEMPTS times in a row;
        EXIT_NAME_TAKEN when another live worker kept this worker's name for
        longer than `name_wait_s`.

        Raises:
            runner.PoolError: the task children could not load the tasks.
        """
        self._pool.start()  # before the channel: nothing of gRPC exists when children start
        if self._metrics is not None and self.config.metrics_listen:
            self._metrics.serve(self.config.metrics_listen)
        self._link.current()
        if self._link.size > 1:
            logger.info("coordinator addresses: %s",
                        ", ".join(map(str, self._link.book.addresses)))  # fmt: skip
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="taskgrid-heartbeat",
                                     daemon=True)  # fmt: skip
        heartbeat.start()
        self._reporter.start()
        try:
            self._main_loop()
            if self._reporter.wait_idle(DEFAULT_EXIT_FLUSH_S):
                self._say_leaving()
            else:
                logger.error("exiting with undelivered reports leases=%s",
                             sorted(self._reporter.outbox.held_keys()))  # fmt: skip
        finally:
            self._stopping.set()
            with self._cond:
                self._cond.notify_all()
            self._reporter.stop(DEFAULT_RPC_TIMEOUT_S)
            heartbeat.join(DEFAULT_RPC_TIMEOUT_S)
            self._pool.close()
            self._link.close()
            if self._metrics is not None:
                self._metrics.close()
        logger.info("worker exiting reason=%s", self._leaving)
        return self._exit_code

    def _connect(
        self, address: Address
    ) -> tuple[grpc.Channel, worker_pb2_grpc.WorkerServiceStub]:
        """Open the channel to one coordinator (`Failover` calls it on each move)."""
        channel = open_channel(address, self.config.security, CHANNEL_OPTIONS)
        return channel, worker_pb2_grpc.WorkerServiceStub(channel)

    def request_drain(self) -> None:
        """Leave like TERMINATE: take no more work, finish running tasks, exit 0.

        A heartbeat saying so goes out at once, so the coordinator marks this
        worker TERMINATE and answers its pending long-poll with no task.
        Safe from a signal handler (see request_exit).
        """
        def drain() -> None:
            self._apply_status(_S.WORKER_STATUS_TERMINATE)
            self.heartbeat_once()

        threading.Thread(target=drain, daemon=True).start()

    def request_exit(self) -> None:
        """Leave like KILL: stop running tasks (reported STOPPED), take no more, exit.

        Safe from a signal handler: the work happens on a new thread, because
        the interrupted main thread may hold the locks it needs.
        """
        threading.Thread(target=self._apply_status, args=(_S.WORKER_STATUS_KILL,),
                         daemon=True).start()  # fmt: skip

    # ---- main loop: register and lease ------------------------------------------

    def _main_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                if self._leaving and not self._pool.active_keys() and not self._unfinished:
                    return
                if self._session is not None and not self._may_lease():
                    if self._carrying:  # no Lease is coming: the reporter sends them
                        self._carrying = False
                        self._reporter.wake()
                    wake_at = max(self._hold_until, self._quiet_until
                                  if self._status == _S.WORKER_STATUS_DISABLED else 0.0)
                    hold = wake_at - time.monotonic()
                    self._cond.wait(hold if hold > 0 else None)
                    continue
            ok = self.register_once() if self._session is None else self.lease_once()
            if ok:
                backoff.reset()
            else:
                delay = backoff.next_delay()
                with self._cond:
                    if self._name_taken_since is not None:
                        # Try again at least every heartbeat, and once more at the deadline.
                        left = self._name_taken_since + self.name_wait_s() - time.monotonic()
                        delay = min(delay, self.config.heartbeat, max(left, 0.0))
                    if not self._leaving:  # giving up just now: leave without a pause
                        self._cond.wait(delay)

    def _may_lease(self) -> bool:
        """Caller holds the lock: whether the main loop calls Lease now.

        A DISABLED worker calls it too (it leases nothing): the coordinator holds the
        call open until the worker is resumed, so `resume` reaches it at once.
        """
        now = time.monotonic()
        return (
            not self._leaving
            and (self._status == _S.WORKER_STATUS_ACTIVE
                 or (self._status == _S.WORKER_STATUS_DISABLED and now >= self._quiet_until))
            and now >= self._hold_until
            and self._pool.free_slots() > 0
        )

    def register_once(self) -> bool:
        """Register (again); True on success, False to retry after a backoff."""
        config = self.config
        request = register_request(config)
        try:
            response = self._call("Register", request, DEFAULT_RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            if error.code() in _CREDENTIALS_REJECTED:
                self._credentials_rejected(error)
                return False
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                self._name_taken(error)
                return False
            hint = tls_hint(str(error.details() or ""), config.security.tls,
                            config.security.certificate_chain is not None)
            if hint is not None and error.code() in _TLS_SUSPECT:
                self._credentials_rejected(error, f"a TLS setting, likely: {hint}")
                return False
            self._log_failure("Register", error)
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:  # our flags are wrong
                with self._cond:
                    self._leaving = "registration rejected"
                    self._exit_code = 1
            return False
        self._note_success()
        with self._cond:
            self._auth_failures = 0
            self._name_taken_since = None
            self._session = response.session
            self._heartbeat = response.heartbeat or config.heartbeat
            self._dead_after = response.dead_after or None
            self._lease_takes_reports = response.lease_takes_reports
            self._empty_runs = 0
            self._cond.notify_all()
        logger.info("worker registered name=%s id=%s groups=%s functions=%s commands=%s",
                    config.worker_name, response.session.worker_id,
                    ",".join(config.group_names), len(request.functions),
                    _describe_policy(config.command_policy))  # fmt: skip
        self._apply_status(response.status)
        self._reporter.wake()
        return True

    def _credentials_rejected(self, error: grpc.RpcError, why: str = "") -> None:
        """Register was refused for the token or its role: say so once, give up soon.

        Unlike a lost session (re-registering fixes it) or an outage (waiting
        fixes it), retrying bad credentials forever would only spin quietly,
        so the worker exits EXIT_AUTH after a few tries, for a supervisor or
        a person to notice.
        """
        with self._cond:
            self._auth_failures += 1
            failures = self._auth_failures
        if failures == 1:
            fix = why or "give a worker or admin token with --token or $TASKGRID_TOKEN"
            logger.error(
                "coordinator %s rejected this worker's credentials (%s: %s): %s; trying %s "
                "times in all", self._link.address, error.code().name, error.details(), fix,
                DEFAULT_AUTH_ATTEMPTS)  # fmt: skip
        if failures >= DEFAULT_AUTH_ATTEMPTS:
            logger.error("credentials rejected %s times in a row: leaving", failures)
            with self._cond:
                self._leaving = self._leaving or "credentials rejected"
                self._exit_code = EXIT_AUTH
                self._cond.notify_all()

    def name_wait_s(self) -> float:
        """How long Register is retried while another live worker has this worker's name.

        That worker may be an earlier process of this one that died: the
        coordinator declares it dead after ``dead_after`` seconds of silence
        (known from an earlier registration, else guessed from the default
        --dead-after-beats), and it fell silent up to a heartbeat before this
        process began, so: dead_after plus two heartbeats (15 s by default).
        """
        heartbeat = self.config.heartbeat
        dead_after = self._dead_after or DEFAULT_DEAD_AFTER_BEATS * heartbeat
        return dead_after + 2 * heartbeat

    def _name_taken(self, error: grpc.RpcError) -> None:
        """Register answered ALREADY_EXISTS: wait out a dead predecessor, then give up."""
        now = time.monotonic()
        name, limit = self.config.worker_name, self.name_wait_s()
        with self._cond:
            if self._name_taken_since is None:
                self._name_taken_since = now
            waited = now - self._name_taken_since
        if waited == 0:
            logger.warning("worker name %r is in use by another live worker (%s): retrying "
                           "for up to %.1f s in case it is an earlier process of this worker "
                           "that died", name, error.details(), limit)  # fmt: skip
        if waited >= limit:
            logger.error("worker name %r is taken: another live worker has used it for %.1f s "
                         "(Register answered ALREADY_EXISTS); give every worker its own --name, "
                         "or stop the other one; leaving", name, waited)  # fmt: skip
            with self._cond:
                self._leaving = self._leaving or "worker name taken"
                self._exit_code = EXIT_NAME_TAKEN
                self._cond.notify_all()

    def lease_once(self) -> bool:
        """One long-poll Lease for the free slots; False when the call failed.

        Finished runs waiting in the outbox ride along (ACK+FETCH) when the
        coordinator takes reports on Lease: one call instead of a Report and a
        Lease. If the call fails they go back to the outbox, and the reporter
        delivers them with Report and its retry rules.
        """
        with self._cond:
            self._carrying = self._lease_takes_reports
            self._gather_free_slots()
            session, generation = self._session, self._generation
            free = self._pool.free_slots()
            was_busy = bool(self._pool.active_keys())
            calling = session is not None and free > 0
            carried = self._reporter.outbox.take_reports() if (
                self._carrying and calling) else []
            self._carrying = False
            self._lease_in_flight = calling  # runs ending from now on go by Report
            disabled = self._status == _S.WORKER_STATUS_DISABLED
        self._reporter.wake()  # it may have left reports to this call
        if session is None or free <= 0:
            return True
        sent = time.monotonic()
        request = worker_pb2.LeaseRequest(
            session=session, max_tasks=free, wait_s=self._heartbeat, prefetch=False,
            reports=[report_to_pb(result) for result in carried],
        )
        try:
            response = self._call("Lease", request, self._heartbeat + DEFAULT_RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            self._lease_in_flight = False
            if carried:
                self._reporter.outbox.restore_reports(carried)
                self._reporter.wake()
            return self._failed("Lease", error, generation)
        self._lease_in_flight = False
        self._note_success()
        if carried:
            self._drop_stale(lease_keys(response.stale), "Lease")
            self._forget(result.task.key for result in carried)
            self._reporter.outbox.settle_reports(carried)
            logger.debug("reported on Lease runs=%s", len(carried))
        logger.debug("lease answered asked=%s got=%s stop=%s",
                     free, len(response.leases), len(response.stop))  # fmt: skip
        self._apply_status(response.status)
        self._apply_stops(response.stop)
        with self._cond:
            if disabled:
                self._disabled_poll(response, time.monotonic() - sent)
            if generation != self._generation:
                return True  # the session was lost meanwhile, and these leases with it
            unwanted = [lease.ref for lease in response.leases] if self._leaving else []
            if not unwanted:
                for lease in response.leases:
                    self._start(task_run_from_lease(lease))
            if response.stop and not response.leases:
                self._hold_until = time.monotonic() + self._heartbeat
            self._count_empty_run(bool(response.leases) or was_busy)
        if unwanted and self._release(session, lease_keys(unwanted)):
            # Handed back: re-leased at once, counting neither as a failure nor as lost.
            logger.info("leases handed back while leaving leases=%s",
                        describe_leases(lease_keys(unwanted)))  # fmt: skip
        return True

    def _disabled_poll(self, response: worker_pb2.LeaseResponse, took: float) -> None:
        """Caller holds the lock: after a Lease sent while DISABLED, when to send the next.

        A coordinator holds such a call until the worker's status changes (or a stop
        comes, or wait_s passes). One that answered at once, still DISABLED, with
        nothing to say, does not (an older one): ask again only after a heartbeat,
        whose answer brings `resume` as before, rather than spin.
        """
        quick = took < self._heartbeat / 2
        if (quick and response.status == _S.WORKER_STATUS_DISABLED and not response.leases
                and not response.stop):
            self._quiet_until = time.monotonic() + self._heartbeat
            logger.debug("DISABLED Lease answered at once: polling at heartbeats")

    def carrying(self) -> bool:
        """True while the main loop prepares a Lease that will carry finished runs.

        Read without the lock: the reporter asks while holding its own lock, and
        `_on_finish` takes the two locks in the other order.
        """
        return self._carrying

    def _gather_free_slots(self) -> None:
        """Caller holds the lock: a busy worker lets its slots free before it leases.

        Runs of a busy worker end within moments of each other; waiting up to
        LEASE_COALESCE_S for all its slots makes one Lease carry a batch instead
        of one task each (a 2 x 8 burn-down: 8 tasks per Lease, against 4.6
        leasing at once). An idle worker (nothing running) leases at once.
        """
        want = max(1, self.config.concurrency)
        deadline = time.monotonic() + LEASE_COALESCE_S
        while (not self._leaving and self._pool.active_keys()
               and self._pool.free_slots() < want):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _start(self, task: TaskRun) -> None:
        """Caller holds the lock: run a fresh lease."""
        logger.debug("leased task=%s attempt=%s function=%s", *task.key, task.function_name)
        if task.key in self._held:
            logger.warning("lease received twice task=%s attempt=%s", *task.key)
        else:
            self._held.add(task.key)
            self._unfinished.add(task.key)
            self._pool.submit(task)
            self._reporter.run_started(task)
            if self._metrics is not None:
                self._metrics.started(task)
            if tracing.enabled():
                self._spans[task.key] = tracing.start(
                    f"taskgrid.run {task.function_name}", task.traceparent or None,
                    {"taskgrid.task_id": task.task_id, "taskgrid.attempt": task.attempt,
                     "taskgrid.worker": self.config.worker_name})

    def _count_empty_run(self, had_work: bool) -> None:
        """web2py's max_empty_runs: consecutive empty leases while idle end the worker."""
        if had_work:
            self._empty_runs = 0
        elif self._status == _S.WORKER_STATUS_ACTIVE:  # DISABLED passes are not counted
            self._empty_runs += 1
            limit = self.config.max_empty_runs
            if 0 < limit <= self._empty_runs and not self._leaving:
                logger.info("no work after %s empty lease calls, leaving", self._empty_runs)
                self._leaving = "max_empty_runs"

    # ---- commands -------------------------------------------------------------------

    def _apply_status(self, status: int) -> None:
        """Obey the worker status the coordinator sent (or a signal asked for)."""
        stop_all = False
        with self._cond:
            if status == _S.WORKER_STATUS_KILL and not self._killing:
                logger.info("KILL: stopping running tasks, then leaving")
                self._leaving = self._leaving or "KILL"
                self._killing = stop_all = True
            elif status == _S.WORKER_STATUS_TERMINATE and not self._leaving:
                logger.info("TERMINATE: finishing running tasks, then leaving")
                self._leaving = "TERMINATE"
            elif status in (_S.WORKER_STATUS_ACTIVE, _S.WORKER_STATUS_DISABLED):
                if status != self._status and not self._leaving:
                    name = _S.WorkerStatus.Name(status).removeprefix("WORKER_STATUS_")
                    logger.info("worker status now %s", name)
                    self._status = status
            self._cond.notify_all()
        if stop_all:
            self._pool.stop_all(Outcome.STOPPED)

    def _apply_stops(self, refs: Iterable[common_pb2.LeaseRef]) -> None:
        for ref in refs:
            if self._pool.stop((ref.task_id, ref.attempt), Outcome.STOPPED):  # first time only
                logger.info("stopping task on request task=%s attempt=%s",
                            ref.task_id, ref.attempt)  # fmt: skip

    def _on_finish(self, result: RunResult) -> None:
        """Pool callback (from its I/O thread): queue the report, free the slot.

        The lease stays held (and listed by heartbeats) until its report is
        acknowledged. Checking `_dropped` and queueing the report under one
        lock means a lease found stale meanwhile is never reported.
        """
        key = result.task.key
        logger.debug("run ended task=%s attempt=%s outcome=%s", *key, result.outcome.value)
        if self._metrics is not None:
            self._metrics.finished(result)
        if tracing.enabled():
            with self._cond:
                handle = self._spans.pop(key, None)
            tracing.finish(handle, result.outcome.value, result.traceback)
        with self._cond:
            if (self._lease_takes_reports and not self._lease_in_flight and not self._leaving
                    and self._session is not None):
                self._carrying = True  # the main loop leases next: the report rides along
            if key in self._dropped:
                self._dropped.discard(key)
            else:
                self._reporter.add_report(result)
            # Only now may the main loop see this run as over: its report is queued, so a
            # leaving worker waits for it to be delivered (pool bookkeeping ends earlier).
            self._unfinished.discard(key)
            self._hold_until = 0.0
            self._cond.notify_all()

    # ---- heartbeat thread -----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                if self._stopping.is_set():
                    return
                if self._session is None:
                    self._cond.wait()  # registration and exit notify
                    continue
            if self.heartbeat_once():
                backoff.reset()
                delay = self._heartbeat
            else:
                delay = min(backoff.next_delay(), self._heartbeat)
            if self._stopping.wait(delay):
                return

    def _say_leaving(self) -> None:
        """One last heartbeat: this worker is gone now, not after dead_after (best effort)."""
        with self._cond:
            session = self._session
        if session is None:
            return
        try:
            self._link.current().Heartbeat(
                worker_pb2.HeartbeatRequest(session=session, leaving=True), timeout=2.0)
        except grpc.RpcError as error:
            logger.debug("leaving heartbeat failed code=%s", error.code().name)

    def heartbeat_once(self) -> bool:
        """Send one Heartbeat and obey its reply; False when it should be retried soon.

        It lists every held lease; the leases the answer calls stale are
        stopped and dropped. An older coordinator refused a whole beat naming
        a stale lease (FAILED_PRECONDITION): the beat is sent again at once
        without the leases its trailer names, a few times at most.
        """
        for _ in range(DEFAULT_HEARTBEAT_TRIES):
            with self._cond:
                session, generation = self._session, self._generation
                held = sorted(self._held)
            if session is None:
                return True
            request = worker_pb2.HeartbeatRequest(
                session=session,
                running=[lease_ref(key) for key in held],
                rss_bytes=rss_bytes(self._pool.child_pids()),
                draining=self._leaving == "TERMINATE",
            )
            try:
                response = self._call("Heartbeat", request, max(self._heartbeat, 1.0))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    named = stale_keys(error)
                    self._drop_stale(named, "Heartbeat")
                    if named & set(held):
                        continue
                self._failed("Heartbeat", error, generation)
                return False
            self._note_success()
            if response.heartbeat > 0:
                self._heartbeat = response.heartbeat
            self._apply_status(response.status)
            self._apply_stops(response.stop)
            self._drop_stale(lease_keys(response.stale), "Heartbeat")
            return True
        return False
