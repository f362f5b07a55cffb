"""Real coordinator and worker processes for integration tests, and their teardown.

Each child runs in its own session (so a signal to its group reaches everything it started,
and a scan of its session finds task processes that moved to their own groups), writes
stdout and stderr to a log file under the test's tmp_path, and is ready when a condition
holds: the coordinator has printed its bound address and answers ListWorkers; a worker is
listed by its coordinator. Teardown sends SIGTERM, waits, then SIGKILLs whatever is left of
the session, so no process outlives its test even when the test fails.

This module knows nothing about pytest; tests/conftest.py wraps it in fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from taskgrid.v1 import admin_pb2, admin_pb2_grpc
from tests.support.wait import wait_until

#: The one line a coordinator prints on stdout once it serves; the newline must be there too,
#: so a half-written line never yields a truncated port.
READY_LINE = re.compile(r"^taskgrid coordinator listening on (\S+:\d+)[ \t\r]*\n", re.MULTILINE)
SAMPLE_TASKS = Path(__file__).with_name("sample_tasks.py")
STATE_DIR_ENV = "TASKGRID_TEST_STATE_DIR"
#: Short heartbeats make dead-worker detection take ~1.5 s (3 intervals) in tests.
DEFAULT_HEARTBEAT_S = 0.5
DEFAULT_READY_TIMEOUT_S = 20.0
DEFAULT_STOP_GRACE_S = 5.0
DEFAULT_TAIL_LINES = 60
#: Poll period of conditions that cost an RPC (a file read is cheap enough to poll faster).
RPC_POLL_INTERVAL_S = 0.05
#: How often a restart retries when the old port is not free yet.
RESTART_ATTEMPTS = 3


def pid_gone(pid: int) -> bool:
    """True once `pid` has exited; a zombie not reaped yet counts (it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid` (read from /proc), however its groups are set."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Fields after "(comm)": state ppid pgrp session ...; comm may hold spaces or parens.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Access:
    """How the test itself reaches a secured coordinator: TLS files and a token (admin, so
    that ListWorkers works). The default is plain text with no token."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    def channel(self, address: str) -> grpc.Channel:
        if self.ca is None and self.cert is None:
            return grpc.insecure_channel(address)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )
        return grpc.secure_channel(address, credentials)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []


PLAIN = Access()


def list_workers(
    address: str, include_dead: bool = False, timeout_s: float = 5.0, access: Access = PLAIN
) -> list[Any]:
    """The coordinator's ListWorkers answer, through the generated admin stub."""
    with access.channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        request = admin_pb2.ListWorkersRequest(include_dead=include_dead)
        response = stub.ListWorkers(request, timeout=timeout_s, metadata=access.metadata())
        return list(response.workers)


class ChildProcess:
    """One child process in its own session, logging to a file."""

    kind = "process"

    def __init__(self, name: str, log_path: Path, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group and session id."""
        assert self.proc is not None, f"{self.name} never started"
        return self.proc.pid

    def is_alive(self) -> bool:
        """True while the child itself has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: Sequence[str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"=== {self.kind} {self.name}: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                list(argv),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_text(self, since_start: bool = False) -> str:
        """The log so far; with since_start, only what the latest start wrote."""
        with open(self.log_path, "rb") as log:
            if since_start:
                log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = DEFAULT_TAIL_LINES) -> str:
        """The last `lines` lines of the log."""
        return _tail(self.log_path, lines)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's process group (ignored when it is already gone)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def signal_session(self, sig: int) -> None:
        """Send `sig` to every process of the child's session, task processes included."""
        if self.proc is None:
            return
        self.signal_group(sig)
        for pid in session_pids(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def wait(self, timeout: float = DEFAULT_STOP_GRACE_S) -> int:
        """Wait for the child to exit and return its exit code (negative: killed by a signal).

        Raises:
            AssertionError: when it is still running after `timeout`, with its log tail.
        """
        assert self.proc is not None, f"{self.name} never started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.kind} {self.name} still running after {timeout}s; log tail:\n"
                f"{self.log_tail()}"
            ) from None

    def _wait(
        self,
        predicate: Any,
        timeout: float,
        desc: str,
        ignore: tuple[type[BaseException], ...] = (),
        interval: float = 0.01,
    ) -> Any:
        """wait_until, with this child's log tail added to a timeout's message."""
        try:
            return wait_until(predicate, timeout, interval, desc, ignore)
        except AssertionError as exc:
            if "log tail:" in str(exc):
                raise
            raise AssertionError(
                f"{exc}\n{self.kind} {self.name} log tail:\n{self.log_tail()}"
            ) from None

    def _fail_if_exited(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"{self.kind} {self.name} exited with {self.proc.returncode} before {what}; "
                f"log tail:\n{self.log_tail()}"
            )


def stop_all(children: Iterable[ChildProcess], grace_s: float = DEFAULT_STOP_GRACE_S) -> list[str]:
    """SIGTERM every child's group at once, wait up to `grace_s` in all, SIGKILL the rest.

    Whatever is left in each child's session afterwards (task processes in their own groups)
    is SIGKILLed too. Returns the names of children that needed SIGKILL, for the report.
    """
    children = [child for child in children if child.proc is not None]
    for child in children:
        if child.is_alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    killed = []
    for child in children:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(child.name)
        child.signal_session(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5.0)
    return killed


class CoordinatorProcess(ChildProcess):
    """A `taskgrid coordinator` child; `.address` is set once it serves."""

    kind = "coordinator"

    def __init__(
        self,
        name: str,
        db_url: str,
        log_path: Path,
        cwd: Path,
        env: dict[str, str],
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        listen: str = "127.0.0.1:0",
        extra_args: Sequence[str] = (),
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        access: Access = PLAIN,
    ) -> None:
        super().__init__(name, log_path, cwd, env)
        self.access = access
        self.db_url = db_url
        self.heartbeat = heartbeat
        self.listen = listen
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.address = ""

    def argv(self) -> list[str]:
        """The command line of the next start."""
        return [
            sys.executable, "-m", "taskgrid", "coordinator",
            "--db", self.db_url,
            "--listen", self.listen,
            "--heartbeat", str(self.heartbeat),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> CoordinatorProcess:
        """Start it and return once it has printed its address and answers ListWorkers."""
        self._spawn(self.argv())

        def bound_address() -> str | None:
            match = READY_LINE.search(self.log_text(since_start=True))
            if match:
                return match.group(1)
            self._fail_if_exited("it printed its address")
            return None

        self.address = self._wait(
            bound_address, self.ready_timeout, f"{self.name} to print its address"
        )

        def answers() -> bool:
            self._fail_if_exited("it answered ListWorkers")
            try:
                list_workers(self.address, timeout_s=2.0, access=self.access)
            except grpc.RpcError as error:
                # a coordinator with tokens that refuses our token has answered: it is up
                if error.code() not in (grpc.StatusCode.UNAUTHENTICATED,
                                        grpc.StatusCode.PERMISSION_DENIED):
                    raise
            return True

        self._wait(
            answers,
            self.ready_timeout,
            f"{self.name} to answer ListWorkers",
            (grpc.RpcError,),
            RPC_POLL_INTERVAL_S,
        )
        return self

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL the group; return the exit code."""
        stop_all([self], grace_s)
        return None if self.proc is None else self.proc.returncode

    def restart(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> CoordinatorProcess:
        """Stop it and start it again on the same port and database."""
        self.stop(grace_s)
        if self.address:
            self.listen = self.address
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                return self.start()
            except AssertionError:
                # The port can stay busy for a moment after the old process is reaped (its
                # listener closes asynchronously); a start that exited early is retried.
                if attempt == RESTART_ATTEMPTS or self.is_alive():
                    raise
        raise AssertionError("unreachable")

    def list_workers(self, include_dead: bool = False) -> list[Any]:
        """Its ListWorkers answer (admin_pb2 Worker messages)."""
        return list_workers(self.address, include_dead=include_dead, access=self.access)


class WorkerProcess(ChildProcess):
    """A `taskgrid worker` child, named `.name`, connected to `.coordinator_address`."""

    kind = "worker"

    def __init__(
        self,
        name: str,
        coordinator_address: str,
        log_path: Path,
        cwd: Path,
        env: dict[str, str],
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        tasks: str | Path = SAMPLE_TASKS,
        groups: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        access: Access = PLAIN,
        program: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, log_path, cwd, env)
        self.access = access
        #: another worker program (e.g. the Go worker) taking the common flags, instead of
        #: `taskgrid worker --tasks ...`
        self.program = list(program) if program else None
        self.coordinator_address = coordinator_address
        self.heartbeat = heartbeat
        self.tasks = str(tasks)
        self.groups = list(groups)
        self.extra_args = list(extra_args)

    def argv(self) -> list[str]:
        """The worker's command line."""
        start = self.program or [sys.executable, "-m", "taskgrid", "worker",
                                 "--tasks", self.tasks]
        argv = [
            *start,
            "--coordinator", self.coordinator_address,
            "--heartbeat", str(self.heartbeat),
            "--name", self.name,
        ]  # fmt: skip
        for group in self.groups:
            argv += ["--group", group]
        return argv + self.extra_args

    def start(self, ready: bool = True, timeout: float = DEFAULT_READY_TIMEOUT_S) -> WorkerProcess:
        """Start it; with `ready`, return once its coordinator lists it as alive."""
        self._spawn(self.argv())
        if ready:
            self.wait_registered(timeout)
        return self

    def wait_registered(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> Any:
        """Wait until the coordinator lists this worker alive; return its Worker message."""

        def listed() -> Any:
            self._fail_if_exited("its coordinator listed it")
            # With several addresses, the first coordinator that answers lists every worker.
            for address in self.coordinator_address.split(","):
                try:
                    workers = list_workers(address.strip(), timeout_s=2.0, access=self.access)
                except grpc.RpcError:
                    continue
                for worker in workers:
                    if worker.worker_name == self.name and worker.alive:
                        return worker
                return None
            return None

        return self._wait(
            listed,
            timeout,
            f"worker {self.name} to appear in ListWorkers",
            (grpc.RpcError,),
            RPC_POLL_INTERVAL_S,
        )

    def kill(self, sig: int = signal.SIGKILL, whole_session: bool = True) -> None:
        """Send `sig` to the worker's process group and, by default, to its whole session.

        The session includes task processes that run in their own groups, so SIGKILL with
        whole_session behaves like the machine losing power; pass whole_session=False to
        signal the worker's group only and leave its task processes orphaned.
        """
        if whole_session:
            self.signal_session(sig)
        else:
            self.signal_group(sig)

    def terminate(self) -> None:
        """SIGTERM the worker process alone, as `kill PID` would: it must stop its tasks."""
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


class TestProcesses:
    """Every child a test started: how fixtures start them and how teardown ends them."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.env.update(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        self.env[STATE_DIR_ENV] = str(self.state_dir)
        self.coordinators: list[CoordinatorProcess] = []
        self.workers: list[WorkerProcess] = []
        self.needed_kill: list[str] = []

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def start_coordinator(
        self,
        db_url: str,
        *,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        listen: str = "127.0.0.1:0",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        access: Access = PLAIN,
    ) -> CoordinatorProcess:
        """Start a coordinator on `db_url` and return it once it serves (probed with `access`)."""
        name = f"coordinator-{len(self.coordinators) + 1}"
        coordinator = CoordinatorProcess(
            name, db_url, self.tmp_path / f"{name}.log", self.tmp_path, self._env(env),
            heartbeat=heartbeat, listen=listen, extra_args=extra_args,
            ready_timeout=ready_timeout, access=access,
        )  # fmt: skip
        self.coordinators.append(coordinator)
        return coordinator.start()

    def start_worker(
        self,
        address: str,
        name: str | None = None,
        *,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        tasks: str | Path = SAMPLE_TASKS,
        groups: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        ready: bool = True,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        access: Access = PLAIN,
        program: Sequence[str] | None = None,
    ) -> WorkerProcess:
        """Start a worker against `address`; with `ready`, return once it is listed (the
        listing is read with `access`)."""
        name = name or f"w{len(self.workers) + 1}"
        worker = WorkerProcess(
            name, address, self.tmp_path / f"worker-{name}.log", self.tmp_path, self._env(env),
            heartbeat=heartbeat, tasks=tasks, groups=groups, extra_args=extra_args,
            access=access, program=program,
        )  # fmt: skip
        self.workers.append(worker)
        return worker.start(ready=ready, timeout=ready_timeout)

    def stop_all(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> None:
        """End every child: workers first (so they do not retry a vanished coordinator)."""
        self.needed_kill += stop_all(self.workers, grace_s)
        self.needed_kill += stop_all(self.coordinators, grace_s)

    def log_sections(self, lines: int = DEFAULT_TAIL_LINES) -> list[tuple[str, str]]:
        """(title, log tail) for every child, for a failing test's report."""
        return [
            (f"{child.kind} {child.name} log tail ({child.log_path})", child.log_tail(lines))
            for child in [*self.coordinators, *self.workers]
            if child.proc is not None
        ]
