"""ClientService: queue, read, list, stop and watch tasks. Thin: convert, call, convert."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskgrid import tracing
from taskgrid.coordinator import auth, housekeeping, jobs, stats, tasks, waits, watch
from taskgrid.coordinator.errors import InvalidRequestError, PermissionDeniedError
from taskgrid.coordinator.runtime import Runtime
from taskgrid.coordinator.servicers import convert, status
from taskgrid.coordinator.validation import INT64 as INT64_MAX
from taskgrid.v1 import client_pb2, client_pb2_grpc, common_pb2

#: bytes of an answer kept for everything but its tasks and runs (as Lease replies)
REPLY_OVERHEAD_BYTES = 64 * 1024
#: protobuf framing of one task in a ListTasks page
TASK_FRAMING_BYTES = 16
#: job names are stored in a 512-character column
MAX_JOB_NAME = 512
#: a page token is the id the next page starts below: a decimal int64
_PAGE_TOKEN = re.compile(r"[0-9]{1,19}")


def _page_token(text: str) -> str:
    """A ListTasks page_token checked: '' or a decimal id (ASCII digits, at most int64).

    str.isdigit() is not enough: it accepts '²' and other digits int() refuses, and a
    number past int64 overflows the database's bigint.
    """
    if text and (not _PAGE_TOKEN.fullmatch(text) or int(text) > INT64_MAX):
        raise InvalidRequestError("page_token", "not a token from a previous page")
    return text


def _filter_text(key: str, value: str) -> str:
    if "\x00" in value:
        raise InvalidRequestError(key, "must not contain NUL characters")
    return value


def _job_name(value: str, required: bool) -> str:
    """A job name as QueueJob stores it and GetJob looks it up.

    No NUL, at most MAX_JOB_NAME characters; empty means QueueJob's default name, so a
    lookup (`required`) refuses it.
    """
    if "\x00" in value or len(value) > MAX_JOB_NAME or (required and not value):
        raise InvalidRequestError(
            "job_name", f"{'a non-empty name of ' if required else ''}at most {MAX_JOB_NAME} "
            "characters, no NUL")
    return value


def _changed(c: housekeeping.Changed) -> client_pb2.TasksChangedResponse:
    return client_pb2.TasksChangedResponse(count=c.count, task_ids=c.task_ids)


def _queued(q: tasks.Queued) -> client_pb2.QueueTaskResponse:
    return client_pb2.QueueTaskResponse(id=q.id, uuid=q.uuid, errors=dict(q.errors))


class ClientServicer(client_pb2_grpc.ClientServiceServicer):
    """Serves the client API over the shared runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stats = stats.StatsCache()

    @status.unary
    async def QueueTask(self, request: client_pb2.QueueTaskRequest,
                        context: grpc.aio.ServicerContext) -> client_pb2.QueueTaskResponse:
        """Queue one task."""
        if not request.HasField("task"):
            raise InvalidRequestError("task", "required")
        parent = tracing.from_metadata(context.invocation_metadata())
        with tracing.span("QueueTask", parent, "server") as trace:
            [result] = await tasks.queue(self.rt, [convert.spec_fields(request.task)],
                                         context.peer(), trace)
        return _queued(result)

    @status.unary
    async def QueueTasks(self, request: client_pb2.QueueTasksRequest,
                         context: grpc.aio.ServicerContext) -> client_pb2.QueueTasksResponse:
        """Queue many tasks atomically."""
        if not request.tasks:
            raise InvalidRequestError("tasks", "give at least one task")
        if len(request.tasks) > tasks.MAX_QUEUE_BATCH:
            raise InvalidRequestError("tasks", f"at most {tasks.MAX_QUEUE_BATCH} per call")
        parent = tracing.from_metadata(context.invocation_metadata())
        with tracing.span("QueueTasks", parent, "server") as trace:
            results = await tasks.queue(
                self.rt, [convert.spec_fields(s) for s in request.tasks], context.peer(), trace)
        return client_pb2.QueueTasksResponse(results=[_queued(r) for r in results])

    @status.unary
    async def QueueJob(self, request: client_pb2.QueueJobRequest,
                       context: grpc.aio.ServicerContext) -> client_pb2.QueueJobResponse:
        """Queue a dependency graph atomically after validating it."""
        if not request.tasks:
            raise InvalidRequestError("tasks", "give at least one task")
        if len(request.tasks) > tasks.MAX_QUEUE_BATCH:
            raise InvalidRequestError("tasks", f"at most {tasks.MAX_QUEUE_BATCH} per call")
        _job_name(request.job_name, required=False)
        edges = [(convert.job_ref(e.task, f"edges[{i}].task"),
                  convert.job_ref(e.waits_for, f"edges[{i}].waits_for"))
                 for i, e in enumerate(request.edges)]
        answer = await jobs.queue_job(self.rt, request.job_name,
                                      [convert.spec_fields(s) for s in request.tasks], edges)
        return client_pb2.QueueJobResponse(
            results=[_queued(r) for r in answer.results], errors=answer.errors,
            layers=[client_pb2.JobLayer(task_ids=layer) for layer in answer.layers])

    @status.unary
    async def GetTask(self, request: client_pb2.GetTaskRequest,
                      context: grpc.aio.ServicerContext) -> client_pb2.GetTaskResponse:
        """One task with its latest or all runs."""
        view = await tasks.get(self.rt, convert.task_ref(request.ref), request.all_runs)
        reply = client_pb2.GetTaskResponse(
            task=convert.task_to_proto(view.task),
            runs=[convert.run_to_proto(r) for r in view.runs], waiting_reason=view.waiting_reason,
            waiting_for=view.waiting_for)
        if not convert.fit_runs(reply, self._reply_budget()):
            raise InvalidRequestError(
                "all_runs" if request.all_runs else "ref",
                f"the task's runs are {reply.ByteSize()} bytes even with their output cut, "
                f"more than the {self.rt.config.max_message_bytes}-byte message limit"
                + ("; ask for the latest run only" if request.all_runs else ""))
        return reply

    def _reply_budget(self) -> int:
        """Bytes an answer may take: the message limit less room for framing."""
        return max(1024, self.rt.config.max_message_bytes - REPLY_OVERHEAD_BYTES)

    @status.unary
    async def ListTasks(self, request: client_pb2.ListTasksRequest,
                        context: grpc.aio.ServicerContext) -> client_pb2.ListTasksResponse:
        """A page of tasks."""
        if request.page_size < 0:
            raise InvalidRequestError("page_size", "must not be negative")
        page_token = _page_token(request.page_token)
        statuses = [convert.status_name(s, common_pb2.TaskStatus, "TASK_STATUS_",
                                        f"statuses[{i}]") for i, s in enumerate(request.statuses)]
        filters = {k: _filter_text(k, getattr(request, k))
                   for k in ("group_name", "function_name", "task_name", "uuid")}
        created = tuple(self._time(request, name) for name in ("created_after",
                                                                "created_before"))
        rows, token = await tasks.list_tasks(self.rt, statuses, filters, request.page_size,
                                             page_token, created, request.oldest_first)
        # A page ends early rather than exceed the message limit (tasks with big args).
        page: list[Any] = []
        budget = self._reply_budget()
        for row in rows:
            task = convert.task_to_proto(row)
            budget -= task.ByteSize() + TASK_FRAMING_BYTES
            if page and budget < 0:
                token = str(page[-1].id)
                break
            page.append(task)
        return client_pb2.ListTasksResponse(tasks=page, next_page_token=token)

    @staticmethod
    def _time(message: Any, name: str, field: str = "") -> Any:
        """An optional Timestamp field as a datetime (None when unset), or INVALID_ARGUMENT."""
        if not message.HasField(name):
            return None
        try:
            return convert.from_ts(getattr(message, name))
        except (ValueError, OverflowError) as exc:
            raise InvalidRequestError(field or name, "not a valid timestamp") from exc

    @status.unary
    async def GetStats(self, request: client_pb2.GetStatsRequest,
                       context: grpc.aio.ServicerContext) -> client_pb2.GetStatsResponse:
        """Counts for dashboards (shared for stats.CACHE_S)."""
        got = await self._stats.get(self.rt)
        reply = client_pb2.GetStatsResponse(
            counts=[client_pb2.StatusCount(status=convert.task_status(st), group_name=g,
                                           count=n) for st, g, n in got.counts],
            last_hour=[client_pb2.MinuteCount(minute=convert.ts(m.start), completed=m.completed,
                                              failed=m.failed, other=m.other)
                       for m in got.last_hour],
            computed_at=convert.ts(got.computed_at))
        if got.oldest_due is not None:
            reply.oldest_due.CopyFrom(convert.task_to_proto(got.oldest_due))
        return reply

    @status.unary
    async def GetJob(self, request: client_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> client_pb2.GetJobResponse:
        """A job graph's tasks and edges."""
        which = request.WhichOneof("job")
        if which is None:
            raise InvalidRequestError("job", "give a job_name or a task_id")
        if which == "job_name":
            _job_name(request.job_name, required=True)
        name, rows, edges = await jobs.get_job(
            self.rt, request.job_name if which == "job_name" else None,
            request.task_id if which == "task_id" else None)
        ref = client_pb2.JobRef
        return client_pb2.GetJobResponse(
            job_name=name, tasks=[convert.task_to_proto(r) for r in rows],
            edges=[client_pb2.JobEdge(task=ref(task_id=e["task_parent"]),
                                      waits_for=ref(task_id=e["task_child"])) for e in edges],
            edge_met=[bool(e["can_visit"]) for e in edges])

    @status.unary
    async def StopTask(self, request: client_pb2.StopTaskRequest,
                       context: grpc.aio.ServicerContext) -> client_pb2.StopTaskResponse:
        """Stop a task."""
        stopped, after, message = await tasks.stop(self.rt, convert.task_ref(request.ref))
        return client_pb2.StopTaskResponse(stopped=stopped, status=convert.task_status(after),
                                           message=message)

    @status.stream
    async def WatchTask(self, request: client_pb2.WatchTaskRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[client_pb2.TaskEvent]:
        """Stream status snapshots and output until the task ends."""
        async for event in watch.watch(self.rt, convert.task_ref(request.ref)):
            if "seq" in event:
                yield client_pb2.TaskEvent(output=convert.chunk_to_proto(event))
            else:
                yield client_pb2.TaskEvent(task=convert.task_to_proto(event))

    @status.unary
    async def WaitTask(self, request: client_pb2.WaitTaskRequest,
                       context: grpc.aio.ServicerContext) -> client_pb2.WaitTaskResponse:
        """Wait until the task ends or the timeout passes."""
        timeout = request.timeout
        if not 0 <= timeout <= waits.MAX_WAIT_S:  # also refuses NaN
            raise InvalidRequestError("timeout", f"must be 0 to {waits.MAX_WAIT_S:g} seconds")
        left = context.time_remaining()
        if not timeout:
            timeout = waits.DEFAULT_WAIT_S if left is None else min(left, waits.MAX_WAIT_S)
        if left is not None:  # answer before the deadline, with room for the way back
            timeout = min(timeout, max(0.0, left - min(0.5, max(0.05, 0.2 * left))))
        done, view = await waits.wait(self.rt, convert.task_ref(request.ref), timeout)
        reply = client_pb2.WaitTaskResponse(done=done, task=convert.task_to_proto(view.task))
        if view.runs:
            reply.run.CopyFrom(convert.run_to_proto(view.runs[-1]))
        return reply

    def _selector(self, sel: client_pb2.TaskSelector,
                  context: grpc.aio.ServicerContext) -> housekeeping.Selector:
        if len(sel.refs) > housekeeping.MAX_REFS:
            raise InvalidRequestError("select.refs", f"at most {housekeeping.MAX_REFS} tasks "
                                      "by reference per call; use a filter for more")
        refs: list[housekeeping.Ref] = []
        for i, ref in enumerate(sel.refs):
            try:
                task_id, uuid = convert.task_ref(ref)
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"select.refs[{i}]", str(exc)) from exc
            refs.append(task_id if task_id is not None else str(uuid))
        statuses = tuple(convert.status_name(s, common_pb2.TaskStatus, "TASK_STATUS_",
                                             f"select.statuses[{i}]")
                         for i, s in enumerate(sel.statuses))
        filters = {k: _filter_text(f"select.{k}", getattr(sel, k))
                   for k in ("group_name", "function_name", "task_name")}
        before = self._time(sel, "finished_before", "select.finished_before")
        out = housekeeping.Selector(tuple(refs), statuses, filters, before, sel.all)
        out.check()
        if out.by_filter and auth.caller_role(
                self.rt.tokens, context.invocation_metadata()) is not auth.Role.ADMIN:
            raise PermissionDeniedError("changing tasks by filter needs the admin role; "
                                        "a client token may name tasks by id or uuid")
        return out

    @status.unary
    async def RequeueTasks(self, request: client_pb2.RequeueTasksRequest,
                           context: grpc.aio.ServicerContext) -> client_pb2.TasksChangedResponse:
        """Queue finished tasks again."""
        sel = self._selector(request.select, context)
        return _changed(await housekeeping.requeue(self.rt, sel, request.keep_counters))

    @status.unary
    async def SetTasksEnabled(
        self, request: client_pb2.SetTasksEnabledRequest, context: grpc.aio.ServicerContext,
    ) -> client_pb2.TasksChangedResponse:
        """Enable or disable QUEUED tasks."""
        sel = self._selector(request.select, context)
        return _changed(await housekeeping.set_enabled(self.rt, sel, request.enabled))

    @status.unary
    async def DeleteTasks(self, request: client_pb2.DeleteTasksRequest,
                          context: grpc.aio.ServicerContext) -> client_pb2.TasksChangedResponse:
        """Delete finished tasks with their runs and output."""
        sel = self._selector(request.select, context)
        return _changed(await housekeeping.delete(self.rt, sel))

    @status.unary
    async def UpdateTask(self, request: client_pb2.UpdateTaskRequest,
                         context: grpc.aio.ServicerContext) -> client_pb2.UpdateTaskResponse:
        """Change the editable fields of one QUEUED task."""
        task_id, uuid = convert.task_ref(request.ref)
        fields = convert.spec_fields(request.task)[0]
        paths = list(request.update_mask.paths)
        if len(set(paths)) != len(paths):
            raise InvalidRequestError("update_mask", "a field is named twice")
        values = {p: fields.get(p) for p in paths}
        edited = await housekeeping.edit(
            self.rt, task_id if task_id is not None else str(uuid), values)
        reply = client_pb2.UpdateTaskResponse(errors=edited.errors)
        if edited.task is not None:
            reply.task.CopyFrom(convert.task_to_proto(edited.task))
        return reply
