"""Rows <-> protobuf messages for the servicers: the one place that knows both shapes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from taskgrid.coordinator.errors import InvalidRequestError
from taskgrid.coordinator.lifecycle import RunStatus, WorkerStatus
from taskgrid.v1 import client_pb2, common_pb2, worker_pb2

if TYPE_CHECKING:
    from taskgrid.coordinator.leasing import Granted
    from taskgrid.coordinator.workers import LiveWorker

_OPTIONAL_SCALARS = (
    "task_name", "group_name", "uuid", "args", "vars", "enabled", "repeats", "retry_failed",
    "period", "prevent_drift", "cronline", "timeout", "sync_output", "immediate", "broadcast",
    "priority", "discard_results", "retry_delay", "retry_backoff", "retry_delay_max",
    "retry_jitter",
)
_TIMES = ("start_time", "next_run_time", "stop_time")
_TASK_SCALARS = (
    "id", "uuid", "task_name", "group_name", "function_name", "args", "vars", "enabled",
    "repeats", "retry_failed", "period", "prevent_drift", "timeout", "sync_output", "times_run",
    "times_failed", "assigned_worker_name", "broadcast", "priority", "discard_results", "attempt",
    "lost_count", "stop_requested", "retry_delay", "retry_backoff", "retry_delay_max",
    "retry_jitter", "broadcast_parent", "target_worker_name",
)


def ts(value: dt.datetime | None) -> Timestamp | None:
    """Aware datetime -> Timestamp (None stays None)."""
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def from_ts(value: Timestamp) -> dt.datetime:
    """Timestamp -> aware UTC datetime."""
    return value.ToDatetime(tzinfo=dt.UTC)


def spec_fields(spec: common_pb2.TaskSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields a client set in a TaskSpec, and its raw (untyped) fields."""
    fields: dict[str, Any] = {"function_name": spec.function_name}
    for name in _OPTIONAL_SCALARS:
        if spec.HasField(name):
            fields[name] = getattr(spec, name)
    if spec.HasField("command"):
        c = spec.command
        fields["command"] = {"executable": c.executable, "args": list(c.args),
                             "env": dict(c.env), "cwd": c.cwd}
    for name in _TIMES:
        if spec.HasField(name):
            try:
                fields[name] = from_ts(getattr(spec, name))
            except (ValueError, OverflowError) as exc:
                raise InvalidRequestError(f"task.{name}", f"not a valid timestamp ({exc})") \
                    from exc
    return fields, dict(spec.raw_fields)


def task_ref(ref: client_pb2.TaskRef) -> tuple[int | None, str | None]:
    """(id, None) or (None, uuid); INVALID_ARGUMENT when neither is set."""
    which = ref.WhichOneof("ref")
    if which == "id":
        if ref.id <= 0:
            raise InvalidRequestError("ref.id", "must be a positive task id")
        return ref.id, None
    if which == "uuid":
        if not ref.uuid or "\x00" in ref.uuid or len(ref.uuid) > 255:
            raise InvalidRequestError("ref.uuid", "must be 1 to 255 characters, no NUL")
        return None, ref.uuid
    raise InvalidRequestError("ref", "give a task id or uuid")


def job_ref(ref: client_pb2.JobRef, field: str) -> tuple[str, int]:
    """A JobRef -> ("index", i) or ("task_id", id); INVALID_ARGUMENT when unset."""
    which = ref.WhichOneof("ref")
    if which is None:
        raise InvalidRequestError(field, "give an index or a task_id")
    return which, int(getattr(ref, which))


def task_status(name: str) -> common_pb2.TaskStatus.ValueType:
    """Stored status text -> enum value."""
    return common_pb2.TaskStatus.Value(f"TASK_STATUS_{name}")


def status_name(value: int, enum: Any, prefix: str, field: str = "status") -> str:
    """Enum value -> stored status text; INVALID_ARGUMENT naming `field` if unset or unknown."""
    try:
        name: str = enum.Name(value)
    except ValueError as exc:
        raise InvalidRequestError(field, f"unknown value {value}") from exc
    if name.endswith("UNSPECIFIED"):
        raise InvalidRequestError(field, "must be set")
    return name.removeprefix(prefix)


def task_to_proto(row: Mapping[str, Any]) -> common_pb2.Task:
    """A task row -> Task."""
    msg = common_pb2.Task(**{k: row[k] for k in _TASK_SCALARS},
                          status=task_status(row["status"]), cronline=row["cronline"] or "")
    for name in ("start_time", "next_run_time", "stop_time", "last_run_time"):
        if row[name] is not None:
            getattr(msg, name).CopyFrom(ts(row[name]))
    if row.get("command"):
        msg.command.CopyFrom(command_to_proto(row["command"]))
    return msg


def command_to_proto(text: str) -> common_pb2.Command:
    """The stored JSON of a command -> Command."""
    c = json.loads(text)
    return common_pb2.Command(executable=c["executable"], args=c["args"], env=c["env"],
                              cwd=c["cwd"])


def run_to_proto(row: Mapping[str, Any]) -> common_pb2.Run:
    """A run row -> Run."""
    msg = common_pb2.Run(
        id=row["id"], task_id=row["task_id"], attempt=row["attempt"],
        status=common_pb2.RunStatus.Value(f"RUN_STATUS_{RunStatus(row['status'])}"),
        run_output=row["run_output"] or "", traceback=row["traceback"] or "",
        worker_name=row["worker_name"], start_time=ts(row["start_time"]))
    if row["stop_time"] is not None:
        msg.stop_time.CopyFrom(ts(row["stop_time"]))
    if row["run_result"] is not None:
        msg.run_result = row["run_result"]
    return msg


#: what replaces the head of an output or traceback cut to fit an answer
FIT_MARKER = "[taskgrid: {n} bytes cut here: the answer must fit the message limit]\n"


def fit_runs(reply: client_pb2.GetTaskResponse, budget: int) -> bool:
    """Cut run output, then tracebacks, oldest run first, until the reply fits `budget` bytes.

    Each cut keeps the text's end (the latest output) behind a marker saying how much was
    cut. Returns False when it still does not fit (results are JSON and never cut).
    """
    for name in ("run_output", "traceback"):
        for run in reply.runs:
            excess = reply.ByteSize() - budget
            if excess <= 0:
                return True
            data = getattr(run, name).encode()
            if not data:
                continue
            marker = FIT_MARKER.format(n=len(data))
            keep = max(0, len(data) - excess - len(marker.encode()) - 16)
            marker = FIT_MARKER.format(n=len(data) - keep)
            setattr(run, name, marker + data[len(data) - keep:].decode(errors="ignore"))
    return bool(reply.ByteSize() <= budget)


def worker_status(status: WorkerStatus | str) -> common_pb2.WorkerStatus.ValueType:
    """Worker status -> enum value."""
    return common_pb2.WorkerStatus.Value(f"WORKER_STATUS_{WorkerStatus(status)}")


def live_worker_to_proto(w: LiveWorker) -> common_pb2.Worker:
    """A live worker -> Worker."""
    return common_pb2.Worker(
        worker_name=w.name, status=worker_status(w.status),
        first_heartbeat=ts(w.first_heartbeat), last_heartbeat=ts(w.last_heartbeat),
        group_names=w.group_names, functions=sorted(w.functions), capacity=w.capacity,
        language=w.language, alive=w.alive, running=sorted(w.leases), rss_bytes=w.rss_bytes,
        heartbeat=w.heartbeat_s, hostname=w.hostname, pid=w.pid, capabilities=w.capabilities,
        coordinator=w.node)


def worker_row_to_proto(row: Mapping[str, Any], running: Sequence[int] = ()
                        ) -> common_pb2.Worker:
    """A stored worker row (dead, or attached to another coordinator) -> Worker."""
    return common_pb2.Worker(
        worker_name=row["worker_name"], status=worker_status(row["status"]),
        first_heartbeat=ts(row["first_heartbeat"]), last_heartbeat=ts(row["last_heartbeat"]),
        group_names=json.loads(row["group_names"]), functions=json.loads(row["functions"]),
        capacity=row["capacity"], language=row["language"], alive=bool(row["alive"]),
        rss_bytes=row["rss_bytes"], heartbeat=row["heartbeat"], hostname=row["hostname"],
        pid=row["pid"], capabilities=json.loads(row["capabilities"]),
        running=sorted(running), coordinator=row["node_name"] if row["alive"] else "")


def lease_to_proto(g: Granted) -> worker_pb2.Lease:
    """A granted lease -> Lease."""
    t = g.task
    msg = worker_pb2.Lease(
        ref=common_pb2.LeaseRef(task_id=t["id"], attempt=t["attempt"]), run_id=g.run_id,
        uuid=t["uuid"], task_name=t["task_name"], group_name=t["group_name"],
        function_name=t["function_name"], args=t["args"], vars=t["vars"], timeout=t["timeout"],
        sync_output=t["sync_output"], started=g.started)
    if g.started and t["last_run_time"] is not None:
        msg.start_time.CopyFrom(ts(t["last_run_time"]))
    if t.get("command"):
        msg.command.CopyFrom(command_to_proto(t["command"]))
    if t.get("trace_context"):
        msg.traceparent = t["trace_context"]
    return msg


def refs(items: Any) -> list[tuple[int, int]]:
    """LeaseRef messages -> (task_id, attempt) pairs."""
    return [(r.task_id, r.attempt) for r in items]


def ref_msgs(pairs: Any) -> list[common_pb2.LeaseRef]:
    """(task_id, attempt) pairs -> LeaseRef messages."""
    return [common_pb2.LeaseRef(task_id=t, attempt=a) for t, a in pairs]


def text(value: str) -> str:
    """Text from a task as the database can store it.

    NUL, which PostgreSQL text refuses, becomes U+FFFD, so a task printing binary
    noise cannot wedge its reports.
    """
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def chunk_dict(c: common_pb2.OutputChunk) -> dict[str, Any]:
    """An OutputChunk -> the dict the operations use; INVALID_ARGUMENT for a bad seq."""
    if c.seq <= 0:
        raise InvalidRequestError("chunks.seq", "must be 1 or more")
    return {"task_id": c.task_id, "attempt": c.attempt, "seq": c.seq, "data": text(c.data),
            "clear": c.clear}


def chunk_to_proto(c: Mapping[str, Any]) -> common_pb2.OutputChunk:
    """An output chunk dict -> OutputChunk."""
    return common_pb2.OutputChunk(task_id=c["task_id"], attempt=c["attempt"], seq=c["seq"],
                                  data=c["data"], clear=c["clear"], run_id=c["run_id"])

