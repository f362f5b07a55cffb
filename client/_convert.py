"""Conversions between taskgrid.v1 protobuf messages and the client's records.

The only client module (with `scheduler`, which just passes messages along,
and ``_requests``, which builds the requests) that reads message classes;
`jobgraph` goes through it too. Each record has a ``*_from_proto`` /
``*_to_proto`` pair, round-trip tested; ``queue_result_from_proto`` and
``job_answer_from_proto`` read the answers to ``queue_task`` and `JobGraph`'s
one call, and `spec_field_error` words the field errors the client finds itself
(from the ``TaskSpec`` and ``Task`` descriptors). Building requests from user
arguments (``queue_task`` keywords, ``command=`` values, task references)
belongs to ``_requests``, not here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from taskgrid.v1 import client_pb2, common_pb2

from .errors import ProtocolError
from .records import (
    CommandSpec,
    OutputChunk,
    QueueResult,
    RunRecord,
    RunStatus,
    TaskEvent,
    TaskRecord,
    TaskStatus,
    WorkerRecord,
    WorkerStatus,
)

logger = logging.getLogger(__name__)

_E = TypeVar("_E", TaskStatus, RunStatus, WorkerStatus)

# --- enums ---------------------------------------------------------------------------------


def _enum_from_proto(enum_cls: type[_E], proto_enum: Any, prefix: str, value: int) -> _E:
    """Map a proto enum number to the client enum of the same name, minus its prefix."""
    try:
        name = str(proto_enum.Name(value))
        return enum_cls(name.removeprefix(prefix))
    except ValueError:
        raise ProtocolError(f"unknown {enum_cls.__name__} value {value}") from None


def task_status_from_proto(value: int) -> TaskStatus:
    """Proto TaskStatus number -> `TaskStatus`."""
    return _enum_from_proto(TaskStatus, common_pb2.TaskStatus, "TASK_STATUS_", value)


def task_status_to_proto(status: TaskStatus | str) -> int:
    """`TaskStatus` (or its name) -> proto TaskStatus number."""
    return int(common_pb2.TaskStatus.Value("TASK_STATUS_" + TaskStatus(status).value))


def run_status_from_proto(value: int) -> RunStatus:
    """Proto RunStatus number -> `RunStatus`."""
    return _enum_from_proto(RunStatus, common_pb2.RunStatus, "RUN_STATUS_", value)


def run_status_to_proto(status: RunStatus | str) -> int:
    """`RunStatus` (or its name) -> proto RunStatus number."""
    return int(common_pb2.RunStatus.Value("RUN_STATUS_" + RunStatus(status).value))


def worker_status_from_proto(value: int) -> WorkerStatus:
    """Proto WorkerStatus number -> `WorkerStatus`."""
    return _enum_from_proto(WorkerStatus, common_pb2.WorkerStatus, "WORKER_STATUS_", value)


def worker_status_to_proto(status: WorkerStatus | str) -> int:
    """`WorkerStatus` (or its name) -> proto WorkerStatus number."""
    return int(common_pb2.WorkerStatus.Value("WORKER_STATUS_" + WorkerStatus(status).value))


# --- scalars -------------------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _time_from(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _time_to(message: Any, name: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, name).FromDatetime(as_utc(value))


def _decode_json(text: str, default: Any, kind: type) -> Any:
    """Decode a stored args/vars text; a bad one is logged, never raised on."""
    if not text:
        return default
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, kind):
        logger.warning("stored JSON is not a %s; using %r instead", kind.__name__, default)
        return default
    return value


# --- field errors the client finds itself ---------------------------------------------------

#: What a TaskSpec field of each kind holds: the coordinator's wording for such errors
#: when the client still sent it the values it could not type (protocol 1.0 to 1.2).
_KIND_MESSAGES = {
    "str": "must be a string", "json": "must be JSON text", "bool": "must be a boolean",
    "time": "must be a timestamp", "int": "must be an integer", "float": "must be a number",
    "command": "must be a command: executable, args, env, cwd",
    "list": "not a queue_task keyword: give pargs (or args= as JSON text)",
    "struct": "not a queue_task keyword: give pvars (or vars= as JSON text)",
}
_SCALAR_KINDS = {
    FieldDescriptor.TYPE_STRING: "str", FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int", FieldDescriptor.TYPE_INT32: "int",
    FieldDescriptor.TYPE_DOUBLE: "float", FieldDescriptor.TYPE_FLOAT: "float",
}
_MESSAGE_KINDS = {
    "google.protobuf.Timestamp": "time", "taskgrid.v1.Command": "command",
    "google.protobuf.ListValue": "list", "google.protobuf.Struct": "struct",
}
#: args and vars are strings on the wire, JSON text in meaning
_JSON_TEXT_FIELDS = frozenset({"args", "vars"})
#: scheduler_task columns that no message carries, read-only as web2py has them
_READ_ONLY_COLUMNS = frozenset({"application_name", "created_at"})


def _field_kind(field: FieldDescriptor) -> str:
    if field.name in _JSON_TEXT_FIELDS:
        return "json"
    if field.message_type is not None:
        return _MESSAGE_KINDS.get(field.message_type.full_name, "")
    return _SCALAR_KINDS.get(field.type, "")


#: The fields a client may set (TaskSpec's), by kind; and those the scheduler owns
#: (Task's that TaskSpec lacks, e.g. status and times_run).
WRITABLE: Mapping[str, str] = {
    f.name: _field_kind(f) for f in common_pb2.TaskSpec.DESCRIPTOR.fields
}
READ_ONLY = (
    frozenset(f.name for f in common_pb2.Task.DESCRIPTOR.fields) - set(WRITABLE)
) | _READ_ONLY_COLUMNS


def spec_field_error(name: str) -> str:
    """The field error for a ``queue_task`` keyword the client could not put in a TaskSpec.

    A read-only name (set by the scheduler), an unknown one, or a writable field
    given a value of the wrong type (worded by the field's kind).
    """
    if name in READ_ONLY:
        return "read-only field: set by the scheduler"
    if name not in WRITABLE:
        return "unknown field"
    return _KIND_MESSAGES.get(WRITABLE[name], "not a queue_task keyword")


# --- commands ------------------------------------------------------------------------------


def command_from_proto(message: Any) -> CommandSpec:
    """``taskgrid.v1.Command`` -> `CommandSpec`."""
    m = message
    return CommandSpec(
        executable=str(m.executable),
        args=tuple(str(a) for a in m.args),
        env={str(k): str(v) for k, v in sorted(m.env.items())},
        cwd=str(m.cwd) or None,
    )


def command_to_proto(record: CommandSpec) -> Any:
    """`CommandSpec` -> ``taskgrid.v1.Command``."""
    r = record
    return common_pb2.Command(
        executable=r.executable, args=list(r.args), env=dict(r.env), cwd=r.cwd or ""
    )


# --- records -------------------------------------------------------------------------------


def task_from_proto(message: Any) -> TaskRecord:
    """``taskgrid.v1.Task`` -> `TaskRecord`."""
    m = message
    return TaskRecord(
        id=int(m.id),
        uuid=str(m.uuid),
        task_name=str(m.task_name),
        group_name=str(m.group_name),
        status=task_status_from_proto(m.status),
        function_name=str(m.function_name),
        args=_decode_json(m.args, [], list),
        vars=_decode_json(m.vars, {}, dict),
        enabled=bool(m.enabled),
        start_time=_time_from(m, "start_time"),
        next_run_time=_time_from(m, "next_run_time"),
        stop_time=_time_from(m, "stop_time"),
        repeats=int(m.repeats),
        retry_failed=int(m.retry_failed),
        period=int(m.period),
        prevent_drift=bool(m.prevent_drift),
        cronline=str(m.cronline) or None,
        timeout=int(m.timeout),
        sync_output=int(m.sync_output),
        times_run=int(m.times_run),
        times_failed=int(m.times_failed),
        last_run_time=_time_from(m, "last_run_time"),
        assigned_worker_name=str(m.assigned_worker_name),
        broadcast=bool(m.broadcast),
        priority=int(m.priority),
        discard_results=bool(m.discard_results),
        attempt=int(m.attempt),
        lost_count=int(m.lost_count),
        stop_requested=bool(m.stop_requested),
        retry_delay=float(m.retry_delay),
        retry_backoff=float(m.retry_backoff),
        retry_delay_max=float(m.retry_delay_max),
        retry_jitter=float(m.retry_jitter),
        broadcast_parent=int(m.broadcast_parent),
        target_worker_name=str(m.target_worker_name),
        command=command_from_proto(m.command) if m.HasField("command") else None,
        finished_at=_time_from(m, "finished_at"),
    )


def task_to_proto(record: TaskRecord) -> Any:
    """`TaskRecord` -> ``taskgrid.v1.Task`` (for tests and fakes)."""
    r = record
    message = common_pb2.Task(
        id=r.id,
        uuid=r.uuid,
        task_name=r.task_name,
        group_name=r.group_name,
        status=task_status_to_proto(r.status),
        function_name=r.function_name,
        args=json.dumps(r.args),
        vars=json.dumps(r.vars),
        enabled=r.enabled,
        repeats=r.repeats,
        retry_failed=r.retry_failed,
        period=r.period,
        prevent_drift=r.prevent_drift,
        cronline=r.cronline or "",
        timeout=r.timeout,
        sync_output=r.sync_output,
        times_run=r.times_run,
        times_failed=r.times_failed,
        assigned_worker_name=r.assigned_worker_name,
        broadcast=r.broadcast,
        priority=r.priority,
        discard_results=r.discard_results,
        attempt=r.attempt,
        lost_count=r.lost_count,
        stop_requested=r.stop_requested,
        retry_delay=r.retry_delay,
        retry_backoff=r.retry_backoff,
        retry_delay_max=r.retry_delay_max,
        retry_jitter=r.retry_jitter,
        broadcast_parent=r.broadcast_parent,
        target_worker_name=r.target_worker_name,
    )
    for name in ("start_time", "next_run_time", "stop_time", "last_run_time", "finished_at"):
        _time_to(message, name, getattr(r, name))
    if r.command is not None:
        message.command.CopyFrom(command_to_proto(r.command))
    return message


def run_from_proto(message: Any) -> RunRecord:
    """``taskgrid.v1.Run`` -> `RunRecord`."""
    m = message
    return RunRecord(
        id=int(m.id),
        task_id=int(m.task_id),
        attempt=int(m.attempt),
        status=run_status_from_proto(m.status),
        start_time=_time_from(m, "start_time"),
        stop_time=_time_from(m, "stop_time"),
        run_output=str(m.run_output),
        run_result=str(m.run_result) if m.HasField("run_result") else None,
        traceback=str(m.traceback),
        worker_name=str(m.worker_name),
    )


def run_to_proto(record: RunRecord) -> Any:
    """`RunRecord` -> ``taskgrid.v1.Run`` (for tests and fakes)."""
    r = record
    message = common_pb2.Run(
        id=r.id,
        task_id=r.task_id,
        attempt=r.attempt,
        status=run_status_to_proto(r.status),
        run_output=r.run_output,
        traceback=r.traceback,
        worker_name=r.worker_name,
    )
    if r.run_result is not None:
        message.run_result = r.run_result
    _time_to(message, "start_time", r.start_time)
    _time_to(message, "stop_time", r.stop_time)
    return message


def worker_from_proto(message: Any) -> WorkerRecord:
    """``taskgrid.v1.Worker`` -> `WorkerRecord`."""
    m = message
    return WorkerRecord(
        worker_name=str(m.worker_name),
        status=worker_status_from_proto(m.status),
        first_heartbeat=_time_from(m, "first_heartbeat"),
        last_heartbeat=_time_from(m, "last_heartbeat"),
        group_names=tuple(str(g) for g in m.group_names),
        functions=tuple(str(f) for f in m.functions),
        capacity=int(m.capacity),
        language=str(m.language),
        alive=bool(m.alive),
        running=tuple(int(t) for t in m.running),
        rss_bytes=int(m.rss_bytes),
        heartbeat=float(m.heartbeat),
        hostname=str(m.hostname),
        pid=int(m.pid),
        capabilities=tuple(str(c) for c in m.capabilities),
        coordinator=str(m.coordinator),
    )


def worker_to_proto(record: WorkerRecord) -> Any:
    """`WorkerRecord` -> ``taskgrid.v1.Worker`` (for tests and fakes)."""
    r = record
    message = common_pb2.Worker(
        worker_name=r.worker_name,
        status=worker_status_to_proto(r.status),
        group_names=list(r.group_names),
        functions=list(r.functions),
        capacity=r.capacity,
        language=r.language,
        alive=r.alive,
        running=list(r.running),
        rss_bytes=r.rss_bytes,
        heartbeat=r.heartbeat,
        hostname=r.hostname,
        pid=r.pid,
        capabilities=list(r.capabilities),
        coordinator=r.coordinator,
    )
    _time_to(message, "first_heartbeat", r.first_heartbeat)
    _time_to(message, "last_heartbeat", r.last_heartbeat)
    return message


def output_from_proto(message: Any) -> OutputChunk:
    """``taskgrid.v1.OutputChunk`` -> `OutputChunk`."""
    m = message
    return OutputChunk(
        task_id=int(m.task_id),
        attempt=int(m.attempt),
        run_id=int(m.run_id),
        seq=int(m.seq),
        data=str(m.data),
        clear=bool(m.clear),
    )


def output_to_proto(record: OutputChunk) -> Any:
    """`OutputChunk` -> ``taskgrid.v1.OutputChunk`` (for tests and fakes)."""
    r = record
    return common_pb2.OutputChunk(
        task_id=r.task_id, attempt=r.attempt, run_id=r.run_id, seq=r.seq, data=r.data, clear=r.clear
    )


def event_from_proto(message: Any) -> TaskEvent | None:
    """``taskgrid.v1.TaskEvent`` -> a `TaskRecord` or `OutputChunk`; None for an empty event."""
    kind = message.WhichOneof("event")
    if kind == "task":
        return task_from_proto(message.task)
    if kind == "output":
        return output_from_proto(message.output)
    return None


def queue_result_from_proto(
    message: Any, client_errors: Mapping[str, str] | None = None
) -> QueueResult:
    """``QueueTaskResponse`` -> `QueueResult`, ids as None when nothing was queued.

    ``client_errors`` are the field errors the client found itself (see
    `_requests.task_spec_from_call`); with any, the spec is never sent, and
    ``message`` is None or an empty response. They join the coordinator's errors.
    """
    if message is None:
        message = client_pb2.QueueTaskResponse()
    errors = {str(k): str(v) for k, v in message.errors.items()}
    if client_errors:
        errors.update(client_errors)
    if errors or not message.id:
        return QueueResult(id=None, uuid=None, errors=errors)
    return QueueResult(id=int(message.id), uuid=str(message.uuid), errors={})


def job_answer_from_proto(
    message: Any, client_errors: Sequence[Mapping[str, str]]
) -> tuple[list[QueueResult], dict[str, str], list[set[int]]]:
    """``QueueJobResponse`` -> (one result per task, errors, topological layers).

    The errors join the graph's own (e.g. ``edges``) and each task's field
    errors keyed ``tasks[i].field``, so one flat mapping says everything that
    kept the job from being written. On any error every result loses its id
    (nothing was written) and the layers are empty.

    Args:
        message: The response; None when the job was not sent because the
            client found field errors itself.
        client_errors: Per task, in request order, the errors the client
            found itself (see `_requests.task_spec_from_call`).

    Raises:
        ProtocolError: The answer does not match the request.
    """
    n_tasks = len(client_errors)
    if message is None:
        message = client_pb2.QueueJobResponse(
            results=[client_pb2.QueueTaskResponse() for _ in client_errors])
    if len(message.results) not in (0, n_tasks):
        raise ProtocolError(f"QueueJob answered {len(message.results)} results for {n_tasks} tasks")
    results = [
        queue_result_from_proto(r, e)
        for r, e in zip(message.results, client_errors, strict=False)
    ]
    errors = {str(k): str(v) for k, v in message.errors.items()}
    for index, result in enumerate(results):
        errors.update({f"tasks[{index}].{k}": v for k, v in result.errors.items()})
    if errors:
        failed = results or [QueueResult(id=None, uuid=None) for _ in range(n_tasks)]
        return [QueueResult(id=None, uuid=None, errors=r.errors) for r in failed], errors, []
    if len(results) != n_tasks or any(r.id is None for r in results):
        raise ProtocolError("QueueJob reported success without an id for every task")
    layers = [{int(t) for t in layer.task_ids} for layer in message.layers]
    return results, {}, layers
