"""Hypothesis strategies for every request of the taskgrid API, built from the descriptors.

`message(cls)` walks a request's descriptor and draws a value for each field by its type:
integers at and around their type's bounds, NaN, infinities and huge doubles, strings with
NUL bytes, lookalike digits, JSON fragments and huge sizes (some past the fuzz coordinator's
message limit), unknown enum numbers, repeated and map fields, oneofs. `OVERRIDES` adds
targeted strategies for fields whose meaning matters (JSON args and vars, uuids, cron lines,
times, task and lease references, sessions) and mixes in values taken from `POOLS`: ids,
uuids, sessions and leases the coordinator handed out earlier in the run, so calls get past
the first check (a valid session, a lease that exists) and can be stale or out of order.

Nothing here talks to the coordinator; `harness.py` sends the requests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from taskgrid.v1 import admin_pb2, client_pb2, common_pb2, worker_pb2

FD = _descriptor.FieldDescriptor

#: The group and worker-name prefix of the health check's own worker: fuzzed requests never
#: use them, so no fuzzed call leases, stops or takes over the check.
CHECK_GROUP = "fuzzcheck"
CHECK_PREFIX = "fuzzcheck"
#: --max-message-bytes of the fuzz coordinator: small, so over-limit requests are cheap
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: the coordinator's default --max-args-bytes
MAX_ARGS_BYTES = 1024 * 1024
#: functions of tests/support/sample_tasks.py, so fuzzed tasks may really run somewhere
FUNCTIONS = ("add", "echo", "fail", "sleep_for", "print_lines", "progress")
GROUPS = ("main", "other", "fz")


# -- values the coordinator handed out --------------------------------------------------------


@dataclasses.dataclass
class Pools:
    """What earlier answers returned, for later requests to refer to."""

    task_ids: list[int] = dataclasses.field(default_factory=list)
    uuids: list[str] = dataclasses.field(default_factory=list)
    sessions: list[worker_pb2.WorkerSession] = dataclasses.field(default_factory=list)
    leases: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    worker_names: list[str] = dataclasses.field(default_factory=list)
    page_tokens: list[str] = dataclasses.field(default_factory=list)

    LIMIT = 200

    def add(self, pool: str, value: Any) -> None:
        """Remember a value (newest last; the oldest are dropped past LIMIT)."""
        items = getattr(self, pool)
        if value in items:
            return
        items.append(value)
        del items[:-self.LIMIT]

    def reset(self) -> None:
        """Forget everything (a new coordinator)."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).clear()


POOLS = Pools()


def from_pool(pool: str, fallback: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value from POOLS.<pool>, read at draw time (newest favoured), or `fallback`."""
    def pick(i: int) -> st.SearchStrategy[Any]:
        items = getattr(POOLS, pool)
        return st.just(items[-1 - i % len(items)]) if items else fallback
    return st.integers(0, 10**6).flatmap(pick)


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """one_of with weights; shrinks towards the first option."""
    total = sum(w for w, _ in options)

    def choose(r: int) -> st.SearchStrategy[Any]:
        for w, s in options:
            if r < w:
                return s
            r -= w
        raise AssertionError("unreachable")
    return st.integers(0, total - 1).flatmap(choose)


# -- scalars by type ----------------------------------------------------------------------------

_INT_RANGES = {
    FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
    FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
    FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_INT_EDGES = (0, 1, -1, 2, 3, 7, 100, 999, 1000, 1001, 10_000, 10_001, 3600, 86_400,
              315_360_000, 315_360_001, 2**31 - 1, -2**31, 2**31, 2**32, 2**53 + 1,
              10**15, 2**63 - 1, -2**63, 2**63)


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Integers in [lo, hi], favouring the bounds and the values around them."""
    edges = sorted({v for v in (*_INT_EDGES, lo, lo + 1, hi, hi - 1) if lo <= v <= hi},
                   key=abs)
    return weighted((4, st.sampled_from(edges)), (3, st.integers(max(lo, -3), min(hi, 50))),
                    (2, st.integers(lo, hi)))


_FLOAT_EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, 0.001, 1e-9, 5e-324, -5e-324, 2.0, 1000.0, 1000.0001,
                3600.0, 3600.0001, 315_360_000.0, 315_360_000.5, 2.0**63, 1e18, 1e308, -1e308,
                math.inf, -math.inf, math.nan)
doubles = weighted((4, st.sampled_from(_FLOAT_EDGES)), (2, st.floats(-10.0, 1e4)),
                   (2, st.floats()))

_STRING_EDGES = (
    "", " ", "\t", "\n", "\x00", "a\x00", "\x00b", "main", "add", "echo", "fail", "@command",
    "command", "null", "true", "[]", "{}", "[1,", '{"a":', "NaN", "Infinity", "-1", "0", "1",
    "007", "9" * 19, "9" * 40, str(2**63), str(2**63 - 1), str(-2**63), "\u0661\u0662",
    "\u00b2", "1e3", " 1", "1 ", "0x10", "+5", "\u2028", "\ufeff", "\u00e9", "\U0001f600",
    "\U0010ffff", "'; DROP TABLE scheduler_task; --", "%s%n", "{0}", "\\", "../../etc/passwd",
    "a" * 64, "a" * 65, "a" * 255, "a" * 256, "a" * 512, "a" * 513,
)
#: no lone surrogates: protobuf strings must be valid UTF-8
safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
#: big but under the message limit; 1 MiB + 1 is just past the args limit
big_strings = st.sampled_from([1000, 65_536, MAX_ARGS_BYTES + 1, 2 * MAX_ARGS_BYTES]).map(
    lambda n: "x" * n)
#: one string that alone makes the request larger than the coordinator accepts
oversized = st.just("o" * (MAX_MESSAGE_BYTES + 1024))
strings = weighted((6, st.sampled_from(_STRING_EDGES)), (6, safe_text), (1, big_strings))
#: strings of a field that may also be oversized (one per request is enough)
strings_or_oversized = weighted((60, strings), (1, oversized))


def not_check(value: str) -> str:
    """Keep fuzzed names off the health check's group and worker names."""
    return "x" + value if value.startswith(CHECK_PREFIX) else value


# -- targeted values ----------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | safe_text)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(safe_text, c, max_size=3), max_leaves=8)
DEPTHS = (2, 50, 99, 100, 101, 150, 999, 1000, 1001, 5000, 100_000)
_BAD_JSON = ("", "[", "]", "[1,]", "[1 2]", "[NaN]", "[Infinity]", "[-Infinity]", "[1e400]",
             "[-1e400]", '["\\ud800"]', '["\\u0000"]', "[1] x", "\ufeff[]", "[01]", "[.5]",
             "['a']", '["a" "b"]', "[true, false, null]", " [ ] ", "[" * 3, "{", '{"a" 1}',
             '{"a":1,}', "{1: 2}", "null", "1", '"[]"', "[]" * 2, "[[]", "[{}]", '{"": []}')


#: what JSON text cannot say but a protobuf value can (refused), and numbers near a double's
#: integer precision
_ODD_NUMBERS = (math.nan, math.inf, -math.inf, 2.0**53, 2.0**53 + 2, 1e300, -0.0, 0.5)
value_items = weighted((6, json_values), (1, st.sampled_from(_ODD_NUMBERS)))
#: strings that make args or vars just under or over the coordinator's --max-args-bytes
big_values = st.sampled_from([MAX_ARGS_BYTES - 100, MAX_ARGS_BYTES + 1]).map(lambda n: "y" * n)


def list_value(items: list[Any]) -> struct_pb2.ListValue:
    """A protobuf ListValue of these JSON values (args_value)."""
    value = struct_pb2.ListValue()
    value.extend(items)
    return value


def struct_value(items: dict[str, Any]) -> struct_pb2.Struct:
    """A protobuf Struct of these JSON values (vars_value)."""
    value = struct_pb2.Struct()
    value.update(items)
    return value


def nested(n: int, kind: str) -> str:
    """JSON text nested n levels deep (a list or an object at the outside)."""
    if kind == "list":
        return "[" * n + "]" * n
    if kind == "object":
        return '{"a":' * n + "{}" + "}" * n
    return "[" + '{"a":[' * (n // 2) + "1" + "]}" * (n // 2) + "]"  # mixed, inside a list


def json_text(kind: type) -> st.SearchStrategy[str]:
    """Text for args (kind=list) or vars (kind=dict): valid, invalid, deep, huge."""
    valid = (st.lists(json_values, max_size=4) if kind is list
             else st.dictionaries(safe_text, json_values, max_size=4)).map(json.dumps)
    deep = st.tuples(st.sampled_from(DEPTHS), st.sampled_from(["list", "object", "mixed"],
                                                              )).map(lambda a: nested(*a))
    unclosed = st.sampled_from(DEPTHS).map(lambda n: "[" * n)
    huge = st.sampled_from([MAX_ARGS_BYTES - 100, MAX_ARGS_BYTES + 1]).map(
        lambda n: json.dumps(["y" * n]) if kind is list else json.dumps({"k": "y" * n}))
    return weighted((5, valid), (4, st.sampled_from(_BAD_JSON)), (3, deep), (1, unclosed),
                    (1, huge), (2, strings))


_CRON = ("* * * * *", "*/5 * * * *", "0 9 * * mon-fri", "0 0 29 2 *", "0 0 30 2 *", "0 0 31 4 *",
         "0 0 L 2 *", "0 0 L * *", "0 0 29 2 mon", "59 23 31 12 *", "0 0 1 1 *", "@yearly",
         "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@reboot",
         "@every 5m", "@YEARLY", "* * * *", "* * * * * *", "* * * * * * *", "60 * * * *",
         "-1 * * * *", "*/0 * * * *", "1-0 * * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8",
         "H * * * *", "R * * * *", "? * * * *", "0 0 1W * *", "0 0 * * 5#3", "0 0 * * 5L",
         "\u0663 * * * *", "*/2147483648 * * * *", "0-59/1 0-23 1-31 1-12 0-6",
         ",".join(str(i) for i in range(60)) + " * * * *", "a b c d e", " * * * * * ",
         "*\x00 * * * *", "")
cronlines = weighted((5, st.sampled_from(_CRON)), (2, st.lists(st.sampled_from(
    ["*", "*/7", "0", "1-5", "L", "mon", "jan", "1,2", "99", "W", "#"]), min_size=3,
    max_size=7).map(" ".join)), (2, strings))


def _timestamp(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


_TIME_EDGES = (dt.datetime(1, 1, 1), dt.datetime(1, 1, 1, 0, 0, 1), dt.datetime(1970, 1, 1),
               dt.datetime(2038, 1, 19, 3, 14, 8), dt.datetime(9999, 1, 1),
               dt.datetime(9999, 3, 1), dt.datetime(9999, 12, 1), dt.datetime(9999, 12, 31),
               dt.datetime(9999, 12, 31, 23, 59), dt.datetime(9999, 12, 31, 23, 59, 59, 999999))


def _near_now(offset_s: int) -> Timestamp:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return _timestamp(now + dt.timedelta(seconds=offset_s))


timestamps = weighted(
    (3, st.sampled_from(_TIME_EDGES).map(_timestamp)),
    (3, st.integers(-86_400, 86_400).map(_near_now)),
    (2, st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)).map(
        _timestamp)),
    (2, st.builds(Timestamp, seconds=integers(-2**63, 2**63 - 1),
                  nanos=integers(-2**31, 2**31 - 1))),
)

uuids = weighted((3, st.uuids().map(str)), (2, from_pool("uuids", st.uuids().map(str))),
                 (2, strings))
task_ids = weighted((4, from_pool("task_ids", st.just(1))), (2, integers(-2**63, 2**63 - 1)))
worker_names = weighted((3, st.sampled_from(["fz-a", "fz-b", "fz-c", "fz-d"])),
                        (2, from_pool("worker_names", st.just("fz-a"))),
                        (2, strings)).map(not_check)
groups = weighted((4, st.sampled_from(GROUPS)), (2, strings)).map(not_check)
functions = weighted((4, st.sampled_from(FUNCTIONS)), (2, strings))
page_tokens = weighted((3, st.sampled_from(["", "0", "1", "2", "10", "-1", "+1", " 1", "1 ",
                                            "\u00b2", "\u0661", "1e3", "0x1", "9" * 19,
                                            "9" * 4000, str(2**63 - 1), str(2**63),
                                            str(2**64)])),
                       (2, from_pool("page_tokens", st.just("1"))), (2, strings))


def task_ref(_: Any = None) -> st.SearchStrategy[client_pb2.TaskRef]:
    """A TaskRef: a known id or uuid, a bad one, or nothing set."""
    return weighted((4, task_ids.map(lambda i: client_pb2.TaskRef(id=i))),
                    (3, uuids.map(lambda u: client_pb2.TaskRef(uuid=u))),
                    (1, st.just(client_pb2.TaskRef())))


def _lease_ref(pair: tuple[int, int], shift: int) -> common_pb2.LeaseRef:
    return common_pb2.LeaseRef(task_id=pair[0], attempt=pair[1] + shift)


lease_refs = weighted(
    # a lease the coordinator granted: current, stale (an older attempt) or from the future
    (5, st.tuples(from_pool("leases", st.just((1, 1))), st.sampled_from([0, 0, 0, -1, 1, -2**40])
                  ).map(lambda a: _lease_ref(*a))),
    (2, st.builds(common_pb2.LeaseRef, task_id=task_ids, attempt=integers(-2**63, 2**63 - 1))),
)


def _session_variant(args: tuple[worker_pb2.WorkerSession, int]) -> worker_pb2.WorkerSession:
    session, how = args
    out = worker_pb2.WorkerSession()
    out.CopyFrom(session)
    if how == 1:
        out.session_token = "not-the-token"
    elif how == 2:
        out.session_token = ""
    elif how == 3:
        out.worker_id = -out.worker_id
    return out


sessions = weighted(
    (6, from_pool("sessions", st.just(worker_pb2.WorkerSession(worker_id=1)))),
    (2, st.tuples(from_pool("sessions", st.just(worker_pb2.WorkerSession(worker_id=1))),
                  st.integers(0, 3)).map(_session_variant)),
    (1, st.builds(worker_pb2.WorkerSession, worker_id=integers(-2**63, 2**63 - 1),
                  session_token=strings)),
)


# -- messages from descriptors ------------------------------------------------------------------

#: "Message.field" -> strategy for that field's value, or "Message" -> for the whole message.
OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "Timestamp": timestamps,
    "TaskSpec.function_name": weighted((6, functions), (1, strings_or_oversized)),
    "TaskSpec.task_name": strings_or_oversized,
    "TaskSpec.group_name": groups,
    "TaskSpec.uuid": uuids,
    "TaskSpec.args": json_text(list),
    "TaskSpec.vars": json_text(dict),
    "TaskSpec.cronline": cronlines,
    "TaskSpec.args_value": st.lists(value_items, max_size=4).map(list_value) | big_values.map(
        lambda text: list_value([text])),
    "TaskSpec.vars_value": st.dictionaries(safe_text, value_items, max_size=4).map(
        struct_value) | big_values.map(lambda text: struct_value({"k": text})),
    "TaskRef": st.deferred(task_ref),
    "JobRef": weighted((3, st.integers(-2, 6).map(lambda i: client_pb2.JobRef(index=i))),
                       (1, integers(-2**31, 2**31 - 1).map(lambda i: client_pb2.JobRef(index=i))),
                       (2, task_ids.map(lambda i: client_pb2.JobRef(task_id=i))),
                       (1, st.just(client_pb2.JobRef()))),
    "ListTasksRequest.page_token": page_tokens,
    "ListTasksRequest.group_name": groups,
    "ListTasksRequest.function_name": functions,
    "LeaseRef": lease_refs,
    "WorkerSession": sessions,
    "RegisterRequest.worker_name": worker_names,
    "RegisterRequest.group_names": st.lists(groups, max_size=3),
    "RegisterRequest.functions": st.lists(functions, max_size=4),
    "RegisterRequest.capabilities": st.lists(weighted((3, st.just("command")), (1, strings)),
                                             max_size=2),
    "RegisterRequest.language": weighted((3, st.sampled_from(["python", "go", "test"])),
                                         (2, strings)),
    "LeaseRequest.wait_s": weighted((4, st.sampled_from([0.0, 0.01, 0.05])), (2, doubles)),
    "OutputChunk.task_id": task_ids,
    "OutputChunk.data": strings_or_oversized,
    "RunReport.result": weighted((3, json_values.map(json.dumps)),
                                 (2, st.sampled_from(_BAD_JSON)), (1, strings_or_oversized)),
    "RunReport.traceback": strings_or_oversized,
    "SetWorkerStatusRequest.worker_name": worker_names,
    "SetWorkerStatusRequest.group_names": st.lists(groups, max_size=2),
    "QueueJobRequest.job_name": strings_or_oversized,
}


def _scalar(f: FD) -> st.SearchStrategy[Any]:
    if f.type in _INT_RANGES:
        return integers(*_INT_RANGES[f.type])
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return doubles
    if f.type == FD.TYPE_BOOL:
        return st.booleans()
    if f.type == FD.TYPE_STRING:
        return strings
    if f.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if f.type == FD.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return weighted((4, st.sampled_from(known)), (1, integers(-2**31, 2**31 - 1)))
    raise AssertionError(f"no strategy for field type {f.type} of {f.full_name}")


def _value(f: FD, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one field's value (a list for repeated fields, a dict for maps)."""
    own = OVERRIDES.get(f"{f.containing_type.name}.{f.name}")
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        if own is not None:
            return own
        key = _value(f.message_type.fields_by_name["key"], depth + 1)
        value = _value(f.message_type.fields_by_name["value"], depth + 1)
        return st.dictionaries(key, value, max_size=3)
    if f.is_repeated:
        if own is not None:
            return own
        return st.lists(_single(f, depth), max_size=4)
    return own if own is not None else _single(f, depth)


def _single(f: FD, depth: int) -> st.SearchStrategy[Any]:
    own = OVERRIDES.get(f"{f.containing_type.name}.{f.name}")
    if own is not None and not f.is_repeated:
        return own
    if f.message_type is not None:
        return message_of(f.message_type, depth + 1)
    return _scalar(f)


def _build(cls: type[Message], values: Mapping[str, Any]) -> Message:
    msg = cls()
    fields = cls.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        f = fields[name]
        target = getattr(msg, name) if (f.is_repeated or f.message_type is not None) else None
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.message_type is not None:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif f.is_repeated:
            target.extend(value)
        elif f.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


_MESSAGES: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def message_of(desc: _descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for messages of this descriptor: each field set or not, by its type."""
    own = OVERRIDES.get(desc.name)
    if own is not None:
        return own
    key = (desc.full_name, depth)
    if key not in _MESSAGES:
        from google.protobuf import message_factory

        cls = message_factory.GetMessageClass(desc)
        fields = {f.name: _value(f, depth) for f in desc.fields
                  if depth < 4 or f.message_type is None}
        _MESSAGES[key] = st.fixed_dictionaries({}, optional=fields).map(
            lambda values, cls=cls: _build(cls, values))
    return _MESSAGES[key]


def message(cls: type[Message]) -> st.SearchStrategy[Any]:
    """A strategy for requests of this class."""
    return message_of(cls.DESCRIPTOR)


# -- calls --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One request to send: service (client, worker, admin), method, message."""

    service: str
    method: str
    request: Message

    def __repr__(self) -> str:
        # runs of one character (deep JSON, huge strings) are shown as counts
        text = re.sub(r"(.)\1{39,}", lambda m: f"<{m.group(1)!r} x {len(m.group(0))}>",
                      repr(self.request))
        if len(text) > 2000:
            text = text[:1000] + f" ...[{len(text) - 2000} characters]... " + text[-1000:]
        return f"Call({self.service}.{self.method}, {text!s})"


SERVICES: Mapping[str, Any] = {
    "client": client_pb2.DESCRIPTOR.services_by_name["ClientService"],
    "worker": worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    "admin": admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
}


def request_class(service: str, method: str) -> type[Message]:
    """The generated request class of a method."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(
        SERVICES[service].methods_by_name[method].input_type)


def calls(service: str, methods: Sequence[str] | None = None,
          tweak: Callable[[str, Message], Message] | None = None) -> st.SearchStrategy[Call]:
    """A strategy for calls to the given methods of a service (all of them by default)."""
    names = list(methods or SERVICES[service].methods_by_name)
    options = [message(request_class(service, m)).map(
        lambda req, m=m: Call(service, m, tweak(m, req) if tweak else req)) for m in names]
    return st.one_of(options)


def every_call() -> st.SearchStrategy[Call]:
    """A call to any method of any service."""
    return st.one_of([calls(s) for s in SERVICES])


def sparse(cls: type[Message], base: Mapping[str, Any] | None = None,
           max_fields: int = 3) -> st.SearchStrategy[Any]:
    """Messages of `cls` built from `base` with at most `max_fields` fields fuzzed.

    Mostly-valid requests get past the first check, so deeper code sees the odd value.
    """
    desc = cls.DESCRIPTOR
    values = {f.name: _value(f, 0) for f in desc.fields}

    def build(chosen: dict[str, Any]) -> Message:
        return _build(cls, {**(base or {}), **chosen})
    return (st.lists(st.sampled_from(sorted(values)), max_size=max_fields, unique=True)
            .flatmap(lambda names: st.fixed_dictionaries({n: values[n] for n in names}))
            .map(build))


#: TaskSpecs that are valid but for up to two fuzzed fields
near_valid_specs = sparse(common_pb2.TaskSpec, {"function_name": "add", "args": "[1, 2]"}, 2)
#: TaskSpecs with any fields set
any_specs = message(common_pb2.TaskSpec)
specs = weighted((3, near_valid_specs), (2, any_specs))
OVERRIDES["QueueTaskRequest.task"] = specs
OVERRIDES["QueueTasksRequest.tasks"] = weighted(
    (20, st.lists(specs, max_size=4)),
    (1, st.just([common_pb2.TaskSpec(function_name="add")] * 10_001)))
OVERRIDES["QueueJobRequest.tasks"] = st.lists(specs, max_size=4)
#: edges between the request's first tasks (so some graphs are valid), or anything
_small_index = st.integers(0, 3).map(lambda i: client_pb2.JobRef(index=i))
OVERRIDES["QueueJobRequest.edges"] = weighted(
    (3, st.lists(st.builds(client_pb2.JobEdge, task=_small_index, waits_for=_small_index),
                 max_size=3)),
    (2, st.lists(message(client_pb2.JobEdge), max_size=3)))
