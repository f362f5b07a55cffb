"""`Scheduler`: web2py's scheduler client API, spoken over gRPC to a coordinator.

It owns one channel (to the current address of its coordinator list, see
``_failover.Failover``) and the stubs on it; every method is one request (or one
paged loop, or one stream) built by ``_requests``, converted by ``_convert`` and guarded by
``_channel.translated_errors``, so callers only ever see records and
``taskgrid.client.errors``.

A call that finds its coordinator away (UNAVAILABLE) moves to the next
address and is sent again there, each address at most once per call. That
is safe for reads, stops and admin calls, and for WatchTask, whose restarted
stream is cut so the caller sees nothing twice (``_resend.WatchResume``). A
queue call might have been applied by a coordinator that died before
answering, so it is sent again only when that cannot duplicate tasks
(``_resend.QueueResend``; `Scheduler._landed` reads back the tasks it finds
already queued).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from taskgrid import tracing as _tracing
from taskgrid.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc

from . import _addresses, _channel, _convert, _failover, _manage, _requests, _resend
from ._addresses import Address
from ._channel import TlsConfig
from .errors import NotFoundError, ProtocolError
from .records import (
    ChangedResult,
    JobView,
    QueueResult,
    RunRecord,
    StatsResult,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskStatus,
    TaskStatusResult,
    UpdateResult,
    WorkerRecord,
    WorkerStatus,
    decode_result,
)

if TYPE_CHECKING:
    import grpc

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:50051"
#: Deadline of every unary call; watch streams have none.
DEFAULT_TIMEOUT_S = 30.0
#: Tasks asked for per ListTasks page (the coordinator caps it at 1000).
DEFAULT_PAGE_SIZE = 100
_MAX_PAGE_SIZE = 1000

#: A task reference: its id or its uuid.
TaskRef = int | str


class Scheduler:
    """A client of one taskgrid coordinator, with web2py's Scheduler methods.

    Use it as a context manager, or call `close` when done. It is safe to
    share between threads.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        token: str | None = None,
        tls: TlsConfig | bool | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        insecure: bool = False,
        tracing: bool = False,
    ) -> None:
        """Connect (lazily) to the coordinator at ``target``.

        Args:
            target: ``HOST:PORT`` of the coordinator, or several separated by
                commas (``[ADDR]:PORT`` for IPv6); a DNS name stands for every
                address it resolves to. A call that finds one away goes on to
                the next (docs/connecting.md).
            token: Bearer token sent with every call; None reads ``$TASKGRID_TOKEN``,
                ``""`` sends none. It is never shown by ``repr`` or logged.
            tls: A `TlsConfig` (CA, client certificate and key files), True for TLS
                with the system's root CAs, False for plain text; None reads
                ``$TASKGRID_TLS_CA``, ``$TASKGRID_TLS_CERT`` and ``$TASKGRID_TLS_KEY``
                (plain text when none is set).
            timeout_s: Deadline in seconds of each unary call.
            insecure: Allow sending the token in plain text to a coordinator that is
                not on this machine (only on a network you trust).
            tracing: Trace queueing with OpenTelemetry (the ``tracing`` extra): a
                ``taskgrid.queue_task`` span whose context the coordinator, and the
                worker that runs the task, continue (docs/tracing.md).

        Raises:
            ValueError: the address list is malformed (an empty entry, no port), a
                token would go in plain text to another machine without
                ``insecure``, the token has spaces or non-ASCII characters, a client
                certificate comes without its key, or a TLS file cannot be read.
        """
        self.target = target
        self.timeout_s = timeout_s
        if tracing:
            _tracing.enable()
        book = _addresses.AddressBook(target, log=logger)
        self._token = _channel.resolve_token(token)
        self._tls = _channel.resolve_tls(tls)
        self._insecure = insecure
        self._secured = (self._tls is not None, self._token is not None)
        _channel.refuse_plain_text_token(target, self._token, self._tls, insecure)
        self._credentials = _channel.channel_credentials(self._tls) if self._tls else None
        self._link = _failover.Failover(book, self._connect, log=logger)
        self._link.current()  # open the first channel now, so unusable settings raise here

    def _connect(self, address: Address) -> tuple[grpc.Channel, _Stubs]:
        channel = _channel.create_channel(
            address, token=self._token, tls=self._tls, insecure=self._insecure,
            credentials=self._credentials,
        )  # fmt: skip
        return channel, _Stubs(channel)

    @property
    def _tasks(self) -> Any:
        """The ClientService stub of the current channel (tests assign fakes to it)."""
        return self._link.current().tasks

    @_tasks.setter
    def _tasks(self, stub: Any) -> None:
        self._link.current().tasks = stub

    @property
    def _admin(self) -> Any:
        """The AdminService stub of the current channel (tests assign fakes to it)."""
        return self._link.current().admin

    @_admin.setter
    def _admin(self, stub: Any) -> None:
        self._link.current().admin = stub

    def _unary(
        self,
        send: Callable[[_Stubs], Any],
        resend: Callable[[grpc.RpcError], bool] = lambda error: True,
    ) -> Any:
        """``send(stubs)`` through the current channel, on the next address if it is away."""
        with _channel.translated_errors(self._tls, self._tls is not None):
            return self._link.call(send, _failover.is_unavailable, resend)

    # --- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; running watches end with `CancelledError`."""
        self._link.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        tls, token = self._secured
        extra = (", tls=True" if tls else "") + (", token=<redacted>" if token else "")
        return f"Scheduler({self.target!r}{extra})"

    # --- queueing ----------------------------------------------------------------------

    def queue_task(
        self,
        function: str | Callable[..., Any],
        pargs: list[Any] | None = None,
        pvars: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> QueueResult:
        """Queue one task; bad field values come back in ``errors``, never raised.

        Args:
            function: The function's name, or anything with a ``__name__``.
            pargs: Positional arguments (JSON-encoded into ``args``).
            pvars: Keyword arguments (JSON-encoded into ``vars``).
            **kwargs: Task fields (timeout, repeats, period, group_name, uuid,
                start_time, ...; ``command={"executable": ..., "args": [...],
                "env": {...}, "cwd": ...}`` with function ``"@command"`` makes a
                command task, see `queue_command`). ``args=``/``vars=`` JSON strings win over
                pargs/pvars when truthy, as in web2py. Unknown or read-only
                names and values of the wrong type are reported in ``errors``.

        Returns:
            The new task's id and uuid, or the field errors (nothing queued).
        """
        spec, client_errors = _requests.task_spec_from_call(function, pargs, pvars, kwargs)
        if client_errors:  # values the spec cannot hold: nothing is sent
            return _convert.queue_result_from_proto(None, client_errors)
        request = client_pb2.QueueTaskRequest(task=spec)  # a copy of spec
        resend = _resend.QueueResend([request.task])
        with _tracing.span("taskgrid.queue_task", kind="client",
                           attributes={"taskgrid.function": function}) as parent:
            md = _tracing.call_options(parent)
            response = self._unary(
                lambda stubs: stubs.tasks.QueueTask(request, timeout=self.timeout_s, **md),
                resend.allows)
        if "uuid" in response.errors and (ids := self._landed(resend)) is not None:
            response = client_pb2.QueueTaskResponse(id=ids[0], uuid=request.task.uuid)
        return _convert.queue_result_from_proto(response, client_errors)

    def queue_command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **kwargs: Any,
    ) -> QueueResult:
        """Queue a command task: a program run by a worker instead of a function.

        Only workers started with ``--allow-commands`` (and, when they have an
        ``--allow-executable`` list, only for a program on it) run command
        tasks; until one is ACTIVE in the task's group the task stays QUEUED
        (`explain` says so). The run COMPLETES with result ``{"exit_code": 0}``
        when the program exits 0, and FAILS otherwise, its traceback naming the
        exit code and quoting the last lines of stderr. Its stdout and stderr
        are the run's output (``!clear!`` applies). The program finds its task's
        id, uuid, run id and attempt in ``TASKGRID_TASK_ID``,
        ``TASKGRID_TASK_UUID``, ``TASKGRID_RUN_ID`` and ``TASKGRID_ATTEMPT``.

        Like `queue_task`, it never raises on bad values: they come back in
        ``errors`` (a malformed command under ``command``).

        Args:
            argv: The command line, never split on spaces: ``argv[0]`` is the
                executable (a path, or a name the worker looks up in its PATH),
                the rest its arguments.
            env: Variables added to the worker's environment.
            cwd: Working directory on the worker; None for the worker's own.
            **kwargs: queue_task's task fields (timeout, retry_failed,
                group_name, repeats, period, task_name, ...). The task name
                defaults to the executable's file name.

        Returns:
            The new task's id and uuid, or the field errors (nothing queued).
        """
        command = _requests.command_from_argv(argv, env, cwd)
        return self.queue_task(_requests.COMMAND_FUNCTION, **{**kwargs, "command": command})

    def queue_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> list[QueueResult]:
        """Queue many tasks in one call: all of them, or none if any has errors.

        Args:
            tasks: One mapping per task with queue_task's argument names, e.g.
                ``{"function": "add", "pargs": [1, 2], "timeout": 5}``.

        Returns:
            One result per task, in order.

        Raises:
            TypeError: An entry is not a mapping or has no ``function``.
        """
        specs: list[Any] = []
        client_errors: list[dict[str, str]] = []
        for entry in tasks:
            if not isinstance(entry, Mapping):
                raise TypeError(f"each task is a mapping, not {type(entry).__name__}")
            fields = dict(entry)
            if "function" not in fields:
                raise TypeError("each task needs a 'function'")
            function = fields.pop("function")
            pargs = fields.pop("pargs", None)
            pvars = fields.pop("pvars", None)
            spec, errors = _requests.task_spec_from_call(function, pargs, pvars, fields)
            specs.append(spec)
            client_errors.append(errors)
        if not specs:
            return []
        if any(client_errors):  # values a spec cannot hold: nothing is sent
            return [_convert.queue_result_from_proto(None, e) for e in client_errors]
        request = client_pb2.QueueTasksRequest(tasks=specs)
        resend = _resend.QueueResend(request.tasks)
        with _tracing.span("taskgrid.queue_tasks", kind="client",
                           attributes={"taskgrid.tasks": len(specs)}) as parent:
            md = _tracing.call_options(parent)
            response = self._unary(
                lambda stubs: stubs.tasks.QueueTasks(request, timeout=self.timeout_s, **md),
                resend.allows)
        refused = any("uuid" in result.errors for result in response.results)
        if refused and (ids := self._landed(resend)) is not None:
            response = client_pb2.QueueTasksResponse(results=[
                client_pb2.QueueTaskResponse(id=i, uuid=t.uuid)
                for i, t in zip(ids, request.tasks, strict=True)])
        if len(response.results) != len(specs):
            raise ProtocolError(
                f"QueueTasks answered {len(response.results)} results for {len(specs)} tasks"
            )
        results = [
            _convert.queue_result_from_proto(r, e)
            for r, e in zip(response.results, client_errors, strict=True)
        ]
        if any(r.errors for r in results):
            # All-or-nothing: ids of tasks that would have been fine were never written.
            results = [QueueResult(id=None, uuid=None, errors=r.errors) for r in results]
        return results

    def _queue_job(self, request: Any) -> Any:
        """Send one ``QueueJobRequest`` (built by `JobGraph`); its raw response."""
        resend = _resend.QueueResend(request.tasks)
        response = self._unary(
            lambda stubs: stubs.tasks.QueueJob(request, timeout=self.timeout_s), resend.allows)
        if "uuid" in response.errors and (ids := self._landed(resend)) is not None:
            return _resend.job_answer(request, ids)
        return response

    def _landed(self, resend: _resend.QueueResend) -> list[int] | None:
        """The ids of a resent queue request's tasks when an earlier attempt queued them.

        Called when the answer says a uuid is taken. After an attempt that may
        have reached a coordinator, a uuid this client made up being taken
        means that attempt was applied (a request is queued whole or not at
        all), so its tasks are read back by uuid; otherwise None (the caller's
        own uuid is in use, and the answer says so).
        """
        if not (resend.maybe_applied and resend.generated):
            return None
        try:
            proof = self._get_task(resend.generated[0], all_runs=False)
        except NotFoundError:
            return None
        ids = [int(proof.task.id) if spec.uuid == resend.generated[0]
               else int(self._get_task(spec.uuid, all_runs=False).task.id)
               for spec in resend.specs]  # fmt: skip
        logger.info("a queue request cut off by a failover had been applied: tasks=%s", ids)
        return ids

    # --- reading -----------------------------------------------------------------------

    def _get_task(self, ref: TaskRef, all_runs: bool) -> Any:
        request = client_pb2.GetTaskRequest(ref=_requests.task_ref_to_proto(ref), all_runs=all_runs)
        return self._unary(lambda stubs: stubs.tasks.GetTask(request, timeout=self.timeout_s))

    @overload
    def task_status(self, ref: TaskRef, output: Literal[False] = False) -> TaskRecord | None: ...

    @overload
    def task_status(self, ref: TaskRef, output: Literal[True]) -> TaskStatusResult | None: ...

    @overload
    def task_status(
        self, ref: TaskRef, output: bool = False
    ) -> TaskRecord | TaskStatusResult | None: ...

    def task_status(
        self, ref: TaskRef, output: bool = False
    ) -> TaskRecord | TaskStatusResult | None:
        """The task named by ``ref`` (id or uuid), or None if there is none.

        Args:
            ref: The task's id (int) or uuid (str).
            output: Also return its latest run and that run's decoded result.

        Returns:
            A `TaskRecord`; with ``output=True`` a `TaskStatusResult`; None
            when no such task exists.

        Raises:
            TypeError: ``ref`` is neither an int nor a str.
        """
        try:
            response = self._get_task(ref, all_runs=False)
        except NotFoundError:
            return None
        task = _convert.task_from_proto(response.task)
        if not output:
            return task
        run = _convert.run_from_proto(response.runs[-1]) if response.runs else None
        result = decode_result(run.run_result) if run is not None else None
        waiting_for = tuple(int(t) for t in response.waiting_for)
        return TaskStatusResult(task=task, run=run, result=result, waiting_for=waiting_for)

    def runs(self, ref: TaskRef) -> list[RunRecord]:
        """Every run of the task, oldest first.

        Raises:
            NotFoundError: No such task.
        """
        response = self._get_task(ref, all_runs=True)
        return [_convert.run_from_proto(r) for r in response.runs]

    def explain(self, ref: TaskRef) -> str | None:
        """Why a QUEUED task is not running yet, if the coordinator knows.

        Raises:
            NotFoundError: No such task.
        """
        response = self._get_task(ref, all_runs=False)
        return str(response.waiting_reason) or None

    def waiting_for(self, ref: TaskRef) -> tuple[int, ...]:
        """Ids of the task's prerequisites that are not COMPLETED for good yet.

        Empty when the task waits for nothing (or has no prerequisites at all).
        A prerequisite that ended FAILED, TIMEOUT, STOPPED or EXPIRED stays in
        the list for ever, as in web2py: the dependent task never runs.

        Raises:
            NotFoundError: No such task.
        """
        response = self._get_task(ref, all_runs=False)
        return tuple(int(t) for t in response.waiting_for)

    def list_tasks(
        self,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        group_name: str | None = None,
        function_name: str | None = None,
        task_name: str | None = None,
        limit: int | None = 100,
        *,
        uuid: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        oldest_first: bool = False,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, newest first (or oldest first).

        Args:
            status: One status or several; None for any.
            group_name: Only this group.
            function_name: Only this function.
            task_name: Only this task name.
            limit: At most this many tasks; None for all of them.
            uuid: Only the task with this uuid.
            created_after: Only tasks queued at or after this time.
            created_before: Only tasks queued before this time.
            oldest_first: By id ascending instead of newest first.

        Raises:
            ValueError: A status name is not a `TaskStatus`.
        """
        request = self._list_request(status, group_name, function_name, task_name, uuid,
                                     created_after, created_before, oldest_first)
        tasks: list[TaskRecord] = []
        while limit is None or len(tasks) < limit:
            want = _MAX_PAGE_SIZE if limit is None else limit - len(tasks)
            request.page_size = min(want, _MAX_PAGE_SIZE)
            response = self._unary(
                lambda stubs: stubs.tasks.ListTasks(request, timeout=self.timeout_s))
            tasks.extend(_convert.task_from_proto(t) for t in response.tasks)
            if not response.next_page_token or not response.tasks:
                break
            request.page_token = response.next_page_token
        return tasks if limit is None else tasks[:limit]

    def list_tasks_page(
        self,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        group_name: str | None = None,
        function_name: str | None = None,
        task_name: str | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        uuid: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        oldest_first: bool = False,
    ) -> TaskPage:
        """One page of `list_tasks` (one ListTasks call), and the token of the next one.

        Pass ``page.next_page_token`` back as ``page_token`` for the next page; it is empty
        on the last page. Paging is by id, so it stays fast however many tasks exist.
        """
        request = self._list_request(status, group_name, function_name, task_name, uuid,
                                     created_after, created_before, oldest_first)
        request.page_size = max(1, min(page_size, _MAX_PAGE_SIZE))
        request.page_token = page_token
        response = self._unary(
            lambda stubs: stubs.tasks.ListTasks(request, timeout=self.timeout_s))
        return TaskPage(tuple(_convert.task_from_proto(t) for t in response.tasks),
                        str(response.next_page_token))

    @staticmethod
    def _list_request(status: Any, group_name: str | None, function_name: str | None,
                      task_name: str | None, uuid: str | None, created_after: datetime | None,
                      created_before: datetime | None, oldest_first: bool) -> Any:
        if status is None:
            statuses: list[TaskStatus | str] = []
        elif isinstance(status, str):
            statuses = [status]
        else:
            statuses = list(status)
        request = client_pb2.ListTasksRequest(
            statuses=[_convert.task_status_to_proto(s) for s in statuses],
            group_name=group_name or "",
            function_name=function_name or "",
            task_name=task_name or "",
            uuid=uuid or "",
            oldest_first=oldest_first,
        )
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                getattr(request, name).FromDatetime(_convert.as_utc(value))
        return request

    def watch(self, ref: TaskRef) -> Iterator[TaskEvent]:
        """Follow a task: status snapshots and output chunks, from the start, until it ends.

        Closing the iterator (or leaving a ``for`` loop early) cancels the stream.

        Raises:
            TypeError: ``ref`` is neither an int nor a str (raised at once).
            NotFoundError: No such task (raised when iteration starts).
        """
        request = client_pb2.WatchTaskRequest(ref=_requests.task_ref_to_proto(ref))
        return self._watch(request)

    def _watch(self, request: Any) -> Iterator[TaskEvent]:
        """The task's events, the stream restarted on the next address when one is away."""
        resume = _resend.WatchResume()
        with _channel.translated_errors(self._tls, self._tls is not None):
            for message in self._link.stream(lambda stubs: stubs.tasks.WatchTask(request),
                                             resume.restart):  # fmt: skip
                event = resume.admit(_convert.event_from_proto(message))
                if event is not None:
                    yield event

    # --- stopping and workers ----------------------------------------------------------

    def stop_task(self, ref: TaskRef) -> bool:
        """Stop a task: QUEUED or ASSIGNED at once, RUNNING through its worker.

        Returns:
            True when something was stopped or a stop was sent; False when the
            task had already ended or does not exist.
        """
        request = client_pb2.StopTaskRequest(ref=_requests.task_ref_to_proto(ref))
        try:
            response = self._unary(
                lambda stubs: stubs.tasks.StopTask(request, timeout=self.timeout_s))
        except NotFoundError:
            return False
        logger.debug(
            "stop_task ref=%s stopped=%s message=%s", ref, response.stopped, response.message
        )
        return bool(response.stopped)

    # --- waiting for results ------------------------------------------------------------

    def wait(self, ref: TaskRef, timeout: float | None = None) -> TaskStatusResult:
        """Wait until the task ends, then return it with its latest run and decoded result.

        A task ends COMPLETED, FAILED, TIMEOUT, STOPPED or EXPIRED; a repeating task
        ends after its last repeat. The coordinator answers the moment it ends (no
        polling); a long wait is several WaitTask calls of at most a minute each.

        Args:
            ref: The task's id (int) or uuid (str).
            timeout: Seconds to wait at most; None waits for ever.

        Raises:
            WaitTimeoutError: The task had not ended when ``timeout`` passed.
            NotFoundError: No such task.
        """
        loop = _manage.WaitLoop(ref, timeout)
        while (record := loop.answer(self._wait_once(loop.request()))) is None:
            pass
        return record

    def _wait_once(self, request: Any) -> Any:
        return self._unary(lambda stubs: stubs.tasks.WaitTask(
            request, timeout=request.timeout + self.timeout_s))

    def result(self, ref: TaskRef, timeout: float | None = None) -> Any:
        """Wait until the task ends and return its decoded result (Celery's ``get``).

        Raises:
            TaskFailedError: It ended FAILED (``.record.run.traceback`` says why).
            TaskTimedOutError: It ended TIMEOUT.
            TaskStoppedError: It ended STOPPED.
            TaskExpiredError: It ended EXPIRED.
            WaitTimeoutError: It had not ended when ``timeout`` passed.
            NotFoundError: No such task.
        """
        return _manage.result_of(self.wait(ref, timeout))

    def stats(self) -> StatsResult:
        """Counts by status and group, ends per minute over the last hour, the oldest due task."""
        response = self._unary(lambda stubs: stubs.tasks.GetStats(
            client_pb2.GetStatsRequest(), timeout=self.timeout_s))
        return _manage.stats(response)

    def get_job(self, job_name: str | None = None, *, task: TaskRef | None = None) -> JobView:
        """A job graph (`JobGraph`): by its name, or by one of its tasks' id.

        Raises:
            NotFoundError: No such job, or the task is in no job.
        """
        if (job_name is None) == (task is None):
            raise TypeError("give a job_name or task=, not both")
        request = client_pb2.GetJobRequest()
        if job_name is not None:
            request.job_name = job_name
        elif isinstance(task, int) and not isinstance(task, bool):
            request.task_id = task
        else:
            raise TypeError("task= is a task id (int)")
        return _manage.job(self._unary(
            lambda stubs: stubs.tasks.GetJob(request, timeout=self.timeout_s)))

    # --- housekeeping --------------------------------------------------------------------

    def requeue(self, *refs: TaskRef, keep_counters: bool = False, status: Any = None,
                group_name: str | None = None, function_name: str | None = None,
                task_name: str | None = None, finished_before: datetime | None = None,
                all: bool = False) -> ChangedResult:
        """Queue finished tasks (COMPLETED, FAILED, TIMEOUT, STOPPED, EXPIRED) again, due now.

        Name the tasks (``requeue(12, 13)``), or select them by filter (the admin
        role only): ``requeue(status="FAILED", group_name="mail")``, or
        ``requeue(all=True)`` for every finished task. times_run, times_failed and
        lost_count start again from 0 unless ``keep_counters``.

        Raises:
            FailedPreconditionError: A named task has not ended (nothing changed).
            NotFoundError: A named task does not exist (nothing changed).
            PermissionDeniedError: A filter call without the admin role.
            InvalidArgumentError: Neither refs, nor a filter, nor ``all``.
        """
        request = client_pb2.RequeueTasksRequest(
            select=_manage.selector(refs, status, group_name, function_name, task_name,
                                    finished_before, all), keep_counters=keep_counters)
        return _manage.changed(self._unary(
            lambda stubs: stubs.tasks.RequeueTasks(request, timeout=self.timeout_s)))

    def enable_tasks(self, *refs: TaskRef, status: Any = None, group_name: str | None = None,
                     function_name: str | None = None, task_name: str | None = None,
                     all: bool = False) -> ChangedResult:
        """Enable QUEUED tasks (e.g. queued with ``enabled=False``); selection as `requeue`."""
        return self._set_enabled(True, refs, status, group_name, function_name, task_name, all)

    def disable_tasks(self, *refs: TaskRef, status: Any = None, group_name: str | None = None,
                      function_name: str | None = None, task_name: str | None = None,
                      all: bool = False) -> ChangedResult:
        """Disable QUEUED tasks: they stay queued, never leased until enabled."""
        return self._set_enabled(False, refs, status, group_name, function_name, task_name, all)

    def _set_enabled(self, enabled: bool, refs: Sequence[TaskRef], status: Any,
                     group_name: str | None, function_name: str | None, task_name: str | None,
                     all: bool) -> ChangedResult:
        request = client_pb2.SetTasksEnabledRequest(
            select=_manage.selector(refs, status, group_name, function_name, task_name, None,
                                    all), enabled=enabled)
        return _manage.changed(self._unary(
            lambda stubs: stubs.tasks.SetTasksEnabled(request, timeout=self.timeout_s)))

    def update_task(self, ref: TaskRef, **fields: Any) -> UpdateResult:
        """Change editable fields of a QUEUED task; a value of None restores the default.

        Editable: start_time, next_run_time, stop_time, priority, repeats, period,
        prevent_drift, timeout, retry_failed, retry_delay, retry_backoff,
        retry_delay_max, retry_jitter. Values are validated as queue_task validates
        them; bad ones come back in ``errors`` and nothing changes.

        Raises:
            FailedPreconditionError: The task is not QUEUED.
            NotFoundError: No such task.
        """
        request, errors = _manage.update_request(ref, fields)
        if request is None:
            return UpdateResult(task=None, errors=errors)
        return _manage.updated(self._unary(
            lambda stubs: stubs.tasks.UpdateTask(request, timeout=self.timeout_s)))

    def delete_tasks(self, *refs: TaskRef, status: Any = None, group_name: str | None = None,
                     function_name: str | None = None, task_name: str | None = None,
                     finished_before: datetime | None = None,
                     all: bool = False) -> ChangedResult:
        """Delete finished tasks with their runs and output; selection as `requeue`.

        Raises:
            FailedPreconditionError: A named task has not ended (nothing deleted).
            NotFoundError: A named task does not exist (nothing deleted).
            PermissionDeniedError: A filter call without the admin role.
        """
        request = client_pb2.DeleteTasksRequest(
            select=_manage.selector(refs, status, group_name, function_name, task_name,
                                    finished_before, all))
        return _manage.changed(self._unary(
            lambda stubs: stubs.tasks.DeleteTasks(request, timeout=self.timeout_s)))

    def get_workers(self, include_dead: bool = False) -> dict[str, WorkerRecord]:
        """Known workers by name; dead ones only with ``include_dead``."""
        request = admin_pb2.ListWorkersRequest(include_dead=include_dead)
        response = self._unary(
            lambda stubs: stubs.admin.ListWorkers(request, timeout=self.timeout_s))
        workers = (_convert.worker_from_proto(w) for w in response.workers)
        return {w.worker_name: w for w in workers}

    def _set_worker_status(
        self, status: WorkerStatus, group_names: str | Iterable[str] | None, worker_name: str | None
    ) -> list[str]:
        groups = [group_names] if isinstance(group_names, str) else list(group_names or [])
        request = admin_pb2.SetWorkerStatusRequest(
            status=_convert.worker_status_to_proto(status),
            group_names=groups,
            worker_name=worker_name or "",
        )
        response = self._unary(
            lambda stubs: stubs.admin.SetWorkerStatus(request, timeout=self.timeout_s))
        return [str(name) for name in response.worker_names]

    def resume(
        self, group_names: str | Iterable[str] | None = None, worker_name: str | None = None
    ) -> list[str]:
        """Set workers ACTIVE (never a TERMINATE or KILL one); returns those changed.

        With neither argument every worker is targeted.
        """
        return self._set_worker_status(WorkerStatus.ACTIVE, group_names, worker_name)

    def disable(
        self, group_names: str | Iterable[str] | None = None, worker_name: str | None = None
    ) -> list[str]:
        """Set workers DISABLED (they lease nothing); returns those changed."""
        return self._set_worker_status(WorkerStatus.DISABLED, group_names, worker_name)

    def terminate(
        self, group_names: str | Iterable[str] | None = None, worker_name: str | None = None
    ) -> list[str]:
        """Tell workers to finish their tasks and exit; returns those changed."""
        return self._set_worker_status(WorkerStatus.TERMINATE, group_names, worker_name)

    def kill(
        self, group_names: str | Iterable[str] | None = None, worker_name: str | None = None
    ) -> list[str]:
        """Tell workers to stop their tasks now and exit; returns those changed."""
        return self._set_worker_status(WorkerStatus.KILL, group_names, worker_name)


class _Stubs:
    """The stubs on one channel; `_failover.Failover` swaps the whole bundle when it moves."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.tasks: Any = client_pb2_grpc.ClientServiceStub(channel)
        self.admin: Any = admin_pb2_grpc.AdminServiceStub(channel)
