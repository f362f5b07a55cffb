"""Rows <-> protobuf messages for the servicers: the one place that knows both shapes."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from taskgrid.coordinator.errors import InvalidRequestError
from taskgrid.coordinator.lifecycle import RunStatus, WorkerStatus
from taskgrid.coordinator.validation import MAX_JSON_DEPTH, json_depth
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
#: Integers a double holds exactly. protobuf values carry numbers as doubles, so an
#: integer beyond this must travel as JSON text (args/vars/run_result), never as a value.
EXACT_INT = 2**53
#: JSON text longer than this gets no protobuf value in answers (args_value, vars_value,
#: result_value stay unset; the text fields carry it): a value can take 5.5 times the bytes
#: of its text (11 for each `1,`), and answers must stay under the message limit.
VALUE_MAX_TEXT = 64 * 1024
#: JSON nested deeper than this gets no protobuf value in answers either: each level is two
#: messages deep (Value, ListValue or Struct), and protobuf decoders refuse messages nested
#: past 100 (Python's, C++'s), which would make the whole answer unreadable.
VALUE_MAX_DEPTH = 32


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


#: a decoded args_value/vars_value, or None and why it is no JSON a worker can take
_Decoded = tuple[Any, str | None]


def spec_fields(spec: common_pb2.TaskSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields a client set in a TaskSpec, and the field errors found reading them.

    args_value/vars_value become the same JSON text as args/vars (which the rest of the
    coordinator stores and checks, size and depth included); their errors, and giving
    both forms of one field, are keyed by the text field's name ("args", "vars").
    """
    fields: dict[str, Any] = {"function_name": spec.function_name}
    errors: dict[str, str] = {}
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
    if spec.HasField("args_value"):
        _value_field(fields, errors, "args", _from_list(spec.args_value, 1))
    if spec.HasField("vars_value"):
        _value_field(fields, errors, "vars", _from_struct(spec.vars_value, 1))
    return fields, errors


def _value_field(fields: dict[str, Any], errors: dict[str, str], name: str,
                 decode: _Decoded) -> None:
    """Store a decoded args_value/vars_value as field `name`'s JSON text, or an error."""
    if name in fields:
        errors[name] = f"give {name} or {name}_value, not both"
        return
    value, problem = decode
    if problem is not None:
        errors[name] = f"{name}_value: {problem}"
        return
    # Python's own JSON layout, as the Python client writes args and vars; a Struct's keys
    # have no order, so they are sorted for one text per value.
    fields[name] = json.dumps(value, ensure_ascii=False, sort_keys=True)


class _BadValue(ValueError):
    """A protobuf value that is no JSON a worker can take."""


def _from_value(v: struct_pb2.Value, depth: int) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise _BadValue("numbers must be finite")
        # Integral doubles are ints again, so add(1, 2) gets ints, not 1.0 and 2.0. Past
        # EXACT_INT a double is no exact integer: such numbers must use the JSON text form.
        return int(n) if n.is_integer() and -EXACT_INT <= n <= EXACT_INT else n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "list_value":
        return _list_items(v.list_value, depth + 1)
    if kind == "struct_value":
        return _struct_items(v.struct_value, depth + 1)
    return None  # null_value, or no kind set


def _list_items(lv: struct_pb2.ListValue, depth: int) -> list[Any]:
    if depth > MAX_JSON_DEPTH:  # before Python's recursion limit; validation's wording
        raise _BadValue(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return [_from_value(v, depth) for v in lv.values]


def _struct_items(s: struct_pb2.Struct, depth: int) -> dict[str, Any]:
    if depth > MAX_JSON_DEPTH:
        raise _BadValue(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return {k: _from_value(v, depth) for k, v in s.fields.items()}


def _from_list(lv: struct_pb2.ListValue, depth: int) -> _Decoded:
    try:
        return _list_items(lv, depth), None
    except _BadValue as exc:
        return None, str(exc)


def _from_struct(s: struct_pb2.Struct, depth: int) -> _Decoded:
    try:
        return _struct_items(s, depth), None
    except _BadValue as exc:
        return None, str(exc)


class _Unrepresentable(Exception):
    """Stored JSON no protobuf value holds exactly (a huge integer, NaN), or too big or deep."""


_INF = math.inf


def _put(v: struct_pb2.Value, x: Any) -> None:
    """Set Value `v` to the decoded JSON `x` (hot: every ListTasks row goes through here)."""
    t = type(x)
    if t is str:
        v.string_value = x
    elif t is int:
        if not -EXACT_INT <= x <= EXACT_INT:
            raise _Unrepresentable
        v.number_value = x
    elif t is float:
        if x != x or x == _INF or x == -_INF:
            raise _Unrepresentable
        v.number_value = x
    elif t is bool:
        v.bool_value = x
    elif x is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif t is list:
        _put_list(v.list_value, x)
    else:
        _put_struct(v.struct_value, x)


def _put_list(lv: struct_pb2.ListValue, items: list[Any]) -> None:
    lv.SetInParent()
    add = lv.values.add
    for item in items:
        _put(add(), item)


def _put_struct(s: struct_pb2.Struct, items: dict[str, Any]) -> None:
    s.SetInParent()
    fields = s.fields
    for key, item in items.items():
        _put(fields[key], item)


def _decoded(text: str | None) -> Any:
    """Stored JSON text decoded for a protobuf value; _Unrepresentable when it cannot be."""
    if not text or len(text) > VALUE_MAX_TEXT:
        raise _Unrepresentable
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise _Unrepresentable from None
    if text.count("[") + text.count("{") > VALUE_MAX_DEPTH and json_depth(value) > \
            VALUE_MAX_DEPTH:
        raise _Unrepresentable
    return value


def _set_value_field(msg: Any, name: str, text: str | None, kind: type) -> None:
    """Fill msg.<name> (a ListValue, Struct or Value) from stored JSON text; never raises.

    Left unset when no such value holds the JSON exactly (a huge integer, not JSON).
    """
    try:
        value = _decoded(text)
        if kind is list:
            if type(value) is not list:
                raise _Unrepresentable
            _put_list(getattr(msg, name), value)
        elif kind is dict:
            if type(value) is not dict:
                raise _Unrepresentable
            _put_struct(getattr(msg, name), value)
        else:
            _put(getattr(msg, name), value)
    except (_Unrepresentable, RecursionError):
        msg.ClearField(name)


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
    if row.get("finished_at") is not None:
        msg.finished_at.CopyFrom(ts(row["finished_at"]))
    if row.get("command"):
        msg.command.CopyFrom(command_to_proto(row["command"]))
    # The common defaults cost no decoding.
    if row["args"] == "[]":
        msg.args_value.SetInParent()
    else:
        _set_value_field(msg, "args_value", row["args"], list)
    if row["vars"] == "{}":
        msg.vars_value.SetInParent()
    else:
        _set_value_field(msg, "vars_value", row["vars"], dict)
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
        _set_value_field(msg, "result_value", row["run_result"], object)
    return msg


#: what replaces the head of an output or traceback cut to fit an answer
FIT_MARKER = "[taskgrid: {n} bytes cut here: the answer must fit the message limit]\n"


def fit_runs(reply: client_pb2.GetTaskResponse, budget: int) -> bool:
    """Cut run output, then tracebacks, oldest run first, until the reply fits `budget` bytes.

    First the protobuf copies of JSON text go (result_value, oldest run first, then the
    task's args_value and vars_value): the text fields still say it all. Each cut keeps
    the text's end (the latest output) behind a marker saying how much was cut. Returns
    False when it still does not fit (results are JSON and never cut).
    """
    copies = [(run, "result_value") for run in reply.runs]
    for holder, name in [*copies, (reply.task, "args_value"), (reply.task, "vars_value")]:
        if reply.ByteSize() <= budget:
            return True
        holder.ClearField(name)
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

