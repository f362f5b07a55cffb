"""Requests of the wait and housekeeping calls, shared by `Scheduler` and `AsyncScheduler`.

Pure: arguments in, protobuf requests (or records and errors) out; the two
clients only send them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from taskgrid.v1 import client_pb2, common_pb2

from . import _convert, _requests
from .errors import (
    InvalidArgumentError,
    TaskEndedError,
    TaskExpiredError,
    TaskFailedError,
    TaskStoppedError,
    TaskTimedOutError,
    WaitTimeoutError,
)
from .records import (
    ChangedResult,
    JobView,
    MinuteCount,
    StatsResult,
    StatusCount,
    TaskStatus,
    TaskStatusResult,
    UpdateResult,
    decode_result,
)

#: the longest one WaitTask call waits; longer waits call again
WAIT_SLICE_S = 60.0

#: fields update_task may change, and what each must be
EDITABLE: Mapping[str, str] = {
    "start_time": "time", "next_run_time": "time", "stop_time": "time", "priority": "int",
    "repeats": "int", "period": "int", "prevent_drift": "bool", "timeout": "int",
    "retry_failed": "int", "retry_delay": "float", "retry_backoff": "float",
    "retry_delay_max": "float", "retry_jitter": "float",
}
_KIND_MESSAGES = {"time": "must be a datetime", "int": "must be an integer",
                  "bool": "must be a boolean", "float": "must be a number"}

_ENDED: Mapping[TaskStatus, type[TaskEndedError]] = {
    TaskStatus.FAILED: TaskFailedError, TaskStatus.TIMEOUT: TaskTimedOutError,
    TaskStatus.STOPPED: TaskStoppedError, TaskStatus.EXPIRED: TaskExpiredError,
}


class WaitLoop:
    """The requests of one wait, and what each answer means (sync and asyncio clients).

    ``while (record := loop.answer(send(loop.request()))) is None: pass``
    """

    def __init__(self, ref: object, timeout: float | None) -> None:
        """Check `timeout` (None: for ever, else seconds >= 0) and start its clock."""
        if timeout is not None and (not isinstance(timeout, int | float) or isinstance(
                timeout, bool) or math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be None or seconds >= 0, not {timeout!r}")
        self.ref = _requests.task_ref_to_proto(ref)
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def request(self) -> Any:
        """The next WaitTask request: at most WAIT_SLICE_S, at most the time left."""
        left = WAIT_SLICE_S if self.deadline is None else self.deadline - time.monotonic()
        return client_pb2.WaitTaskRequest(ref=self.ref, timeout=min(max(left, 0.001),
                                                                    WAIT_SLICE_S))

    def answer(self, response: Any) -> TaskStatusResult | None:
        """The final record, or None to ask again.

        Raises:
            WaitTimeoutError: the task has not ended and the time is up.
        """
        if response.done:
            return waited(response)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            status = _convert.task_status_from_proto(response.task.status).value
            ref = self.ref.id if self.ref.WhichOneof("ref") == "id" else self.ref.uuid
            raise WaitTimeoutError(
                f"task {ref} has not ended after {self.timeout:g} s (it is {status})")
        return None


def waited(response: Any) -> TaskStatusResult:
    """A WaitTaskResponse -> the record `wait` returns."""
    run = _convert.run_from_proto(response.run) if response.HasField("run") else None
    result = decode_result(run.run_result) if run is not None else None
    return TaskStatusResult(task=_convert.task_from_proto(response.task), run=run,
                            result=result)


def result_of(record: TaskStatusResult) -> Any:
    """The result of a COMPLETED task, or the typed error of how it ended otherwise."""
    status = record.task.status
    if status is TaskStatus.COMPLETED:
        return record.result
    error = _ENDED.get(status, TaskEndedError)
    detail = ""
    if record.run is not None and record.run.traceback:
        detail = ": " + record.run.traceback.strip().splitlines()[-1]
    raise error(f"task {record.task.id} ended {status.value}{detail}", record)


def selector(refs: Iterable[object], status: Any = None, group_name: str | None = None,
             function_name: str | None = None, task_name: str | None = None,
             finished_before: datetime | None = None, all: bool = False) -> Any:
    """A TaskSelector: task refs, or filters (or ``all``), never neither.

    Raises:
        InvalidArgumentError: no refs, no filter and not ``all`` (it would be refused
            anyway: this says so before sending anything), or refs and filters together.
    """
    refs = list(refs)
    if status is None:
        statuses: list[Any] = []
    elif isinstance(status, str):
        statuses = [status]
    else:
        statuses = list(status)
    filtered = bool(statuses or group_name or function_name or task_name
                    or finished_before is not None)
    if refs and (filtered or all):
        raise InvalidArgumentError("give task refs or filters, not both")
    if not refs and not filtered and not all:
        raise InvalidArgumentError("give task refs, a filter, or all=True")
    sel = client_pb2.TaskSelector(
        refs=[_requests.task_ref_to_proto(r) for r in refs],
        statuses=[_convert.task_status_to_proto(s) for s in statuses],
        group_name=group_name or "", function_name=function_name or "",
        task_name=task_name or "", all=all)
    if finished_before is not None:
        sel.finished_before.FromDatetime(_convert.as_utc(finished_before))
    return sel


def changed(response: Any) -> ChangedResult:
    """A TasksChangedResponse -> ChangedResult."""
    return ChangedResult(count=int(response.count), task_ids=tuple(response.task_ids))


def update_request(ref: object, fields: Mapping[str, Any]) -> tuple[Any, dict[str, str]]:
    """An UpdateTaskRequest, or the field errors found before sending (then None)."""
    errors: dict[str, str] = {}
    spec = common_pb2.TaskSpec()
    for name, value in fields.items():
        kind = EDITABLE.get(name)
        if kind is None:
            errors[name] = f"not editable (editable: {', '.join(sorted(EDITABLE))})"
        elif value is None:
            continue  # named in the mask, left unset: back to its default
        elif kind == "time":
            if not isinstance(value, datetime):
                errors[name] = _KIND_MESSAGES[kind]
            else:
                stamp = Timestamp()
                stamp.FromDatetime(_convert.as_utc(value))
                getattr(spec, name).CopyFrom(stamp)
        elif not _fits(kind, value):
            errors[name] = _KIND_MESSAGES[kind]
        else:
            setattr(spec, name, value)
    if not fields:
        errors["fields"] = "name at least one field to change"
    if errors:
        return None, errors
    request = client_pb2.UpdateTaskRequest(ref=_requests.task_ref_to_proto(ref), task=spec)
    request.update_mask.paths.extend(fields)
    return request, {}


def _fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int) and -2**63 <= value < 2**63
    return isinstance(value, int | float) and math.isfinite(value)


def updated(response: Any) -> UpdateResult:
    """An UpdateTaskResponse -> UpdateResult."""
    if response.errors:
        return UpdateResult(task=None, errors=dict(response.errors))
    return UpdateResult(task=_convert.task_from_proto(response.task))


def stats(response: Any) -> StatsResult:
    """A GetStatsResponse -> StatsResult."""
    return StatsResult(
        counts=tuple(StatusCount(_convert.task_status_from_proto(c.status), str(c.group_name),
                                 int(c.count)) for c in response.counts),
        last_hour=tuple(MinuteCount(m.minute.ToDatetime(tzinfo=UTC), int(m.completed),
                                    int(m.failed), int(m.other)) for m in response.last_hour),
        oldest_due=(_convert.task_from_proto(response.oldest_due)
                    if response.HasField("oldest_due") else None),
        computed_at=(response.computed_at.ToDatetime(tzinfo=UTC)
                     if response.HasField("computed_at") else None))


def job(response: Any) -> JobView:
    """A GetJobResponse -> JobView."""
    met = list(response.edge_met) + [False] * (len(response.edges) - len(response.edge_met))
    return JobView(
        job_name=str(response.job_name),
        tasks=tuple(_convert.task_from_proto(t) for t in response.tasks),
        edges=tuple((int(e.task.task_id), int(e.waits_for.task_id), bool(m))
                    for e, m in zip(response.edges, met, strict=True)))
