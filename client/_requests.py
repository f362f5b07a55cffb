"""Requests the client builds: ``queue_task`` keywords -> ``TaskSpec``, and friends.

Owns the mapping of web2py's ``queue_task(function, pargs, pvars, **kwargs)``
onto a ``taskgrid.v1.TaskSpec`` (`task_spec_from_call`), the ``command=``
values of command tasks (`command_from_value`, `command_from_argv`), task
references (`task_ref_to_proto`) and `JobGraph`'s ``QueueJobRequest``
(`queue_job_request`). Answers and records are read back by ``_convert``; this
module never reads a response and never makes a call.

queue_task never raises on bad field values: a value that fits its typed
TaskSpec field goes there, and anything else (unknown or read-only names,
wrong types, values JSON cannot encode) is a field error the client words
itself (`_convert.spec_field_error`, the coordinator's wording of protocol 1.0
to 1.2, when the client sent such values in ``TaskSpec.raw_fields``); a spec
with such errors is never sent. The values of typed fields (ranges, names,
JSON text) are judged by the coordinator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeAlias

from taskgrid.v1 import client_pb2, common_pb2

from ._convert import as_utc, command_to_proto, spec_field_error
from .records import CommandSpec

#: TaskSpec fields a queue_task keyword may fill directly, by the Python type they hold.
#: function_name, args and vars are filled from queue_task's own arguments.
SPEC_STRING_FIELDS = frozenset({"task_name", "group_name", "uuid", "cronline"})
SPEC_BOOL_FIELDS = frozenset(
    {"enabled", "prevent_drift", "immediate", "broadcast", "discard_results"}
)
SPEC_INT_FIELDS = frozenset(
    {"repeats", "retry_failed", "period", "timeout", "sync_output", "priority"}
)
SPEC_FLOAT_FIELDS = frozenset({"retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter"})
SPEC_TIME_FIELDS = frozenset({"start_time", "next_run_time", "stop_time"})
_SPEC_TYPED_FIELDS = (
    SPEC_STRING_FIELDS | SPEC_BOOL_FIELDS | SPEC_INT_FIELDS | SPEC_FLOAT_FIELDS | SPEC_TIME_FIELDS
)
#: The function name of command tasks (the coordinator's, workers' and clients' convention).
COMMAND_FUNCTION = "@command"
#: Keys a ``command=`` mapping may have: the fields of ``taskgrid.v1.Command``.
COMMAND_KEYS = frozenset({"executable", "args", "env", "cwd"})
#: Fields web2py fills from a default when the given value is falsy (``uuid=""``).
_FALSY_MEANS_DEFAULT = frozenset({"uuid", "task_name"})

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: One end of a job edge, named as the ``JobRef`` oneof names it: ``("index", i)`` for the
#: i-th task of the same request, ``("task_id", id)`` for a task that exists already.
JobNode: TypeAlias = tuple[Literal["index", "task_id"], int]

# --- commands ------------------------------------------------------------------------------


def _is_str_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def command_from_value(value: Any) -> CommandSpec | None:
    """A ``command=`` value -> `CommandSpec`, or None when it is not shaped like one.

    Accepted: a `CommandSpec`, or a mapping with a string ``executable`` and
    optionally ``args`` (list or tuple of strings), ``env`` (mapping of
    strings to strings) and ``cwd`` (string); None stands for a missing
    optional key. Anything else is a ``command`` field error.
    """
    if isinstance(value, CommandSpec):
        value = {"executable": value.executable, "args": value.args, "env": value.env,
                 "cwd": value.cwd}  # fmt: skip
    if not isinstance(value, Mapping) or not set(value) <= COMMAND_KEYS:
        return None
    executable, args = value.get("executable"), value.get("args") or ()
    env, cwd = value.get("env") or {}, value.get("cwd")
    if not isinstance(executable, str) or not _is_str_sequence(args):
        return None
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return None
    if cwd is not None and not isinstance(cwd, str):
        return None
    return CommandSpec(executable, tuple(args), dict(env), cwd or None)


def command_from_argv(argv: Any, env: Any = None, cwd: Any = None) -> Any:
    """``queue_command``'s arguments as a ``command=`` value (argv[0] is the executable).

    A well-formed call gives a `CommandSpec`; otherwise the mapping given is
    returned as is, so `task_spec_from_call` reports a ``command`` field error
    (an empty argv gives an empty executable, which the coordinator rejects by
    name).
    """
    if isinstance(argv, list | tuple):
        given = {"executable": argv[0] if argv else "", "args": list(argv[1:]), "env": env,
                 "cwd": cwd}  # fmt: skip
    else:  # a string is one word too many or too few: never split it on spaces
        given = {"argv": argv, "env": env, "cwd": cwd}
    return command_from_value(given) or given


# --- requests ------------------------------------------------------------------------------


def task_ref_to_proto(ref: object) -> Any:
    """A task id (int) or uuid (str) -> ``taskgrid.v1.TaskRef``.

    Raises:
        TypeError: ``ref`` is neither (web2py raised SyntaxError here).
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        return client_pb2.TaskRef(id=ref)
    if isinstance(ref, str):
        return client_pb2.TaskRef(uuid=ref)
    raise TypeError(f"a task is named by its id (int) or uuid (str), not {type(ref).__name__}")


def _fits(name: str, value: Any) -> Any:
    """The value to store in typed field ``name``, or None when it does not fit there."""
    if name in SPEC_STRING_FIELDS:
        return value if isinstance(value, str) else None
    if name in SPEC_BOOL_FIELDS:
        return value if isinstance(value, bool) else None
    if name in SPEC_INT_FIELDS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value if _INT64_MIN <= value <= _INT64_MAX else None
        return None
    if name in SPEC_FLOAT_FIELDS:
        # Ints are welcome; nan, inf and ints past a double's range are no usable delay.
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if name in SPEC_TIME_FIELDS:
        if not isinstance(value, datetime):
            return None
        try:
            return as_utc(value)
        except OverflowError:  # e.g. 0001-01-01 at UTC+5: before the first UTC instant
            return None
    return None


def _function_name(function: object) -> str | None:
    if isinstance(function, str):
        return function
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) else None


def _json_field(
    spec: Any, name: str, given: Any, python_value: Any, errors: dict[str, str]
) -> None:
    """Fill ``args``/``vars``: a truthy JSON string given by name wins, else dump the value."""
    if given:
        if isinstance(given, str):
            setattr(spec, name, given)
        else:
            errors[name] = spec_field_error(name)
        return
    if python_value is None:
        return
    try:
        setattr(spec, name, json.dumps(python_value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        errors[name] = f"cannot be encoded as JSON: {why}"


def task_spec_from_call(
    function: object, pargs: Any, pvars: Any, kwargs: Mapping[str, Any]
) -> tuple[Any, dict[str, str]]:
    """Build the ``TaskSpec`` for ``queue_task(function, pargs, pvars, **kwargs)``.

    Returns:
        The spec, and the field errors the client found itself: values it
        could not put in the spec (unknown or read-only names, values of the
        wrong type, values JSON cannot encode). With any, the spec must not be
        sent: the caller answers them as a refused queue call.
    """
    spec = common_pb2.TaskSpec()
    errors: dict[str, str] = {}
    name = _function_name(function)
    if name is None:
        errors["function_name"] = spec_field_error("function_name")
    else:
        spec.function_name = name
    rest = dict(kwargs)
    _json_field(spec, "args", rest.pop("args", None), pargs, errors)
    _json_field(spec, "vars", rest.pop("vars", None), pvars, errors)
    if "command" in rest:
        given = rest.pop("command")
        command = command_from_value(given)
        if command is not None:
            spec.command.CopyFrom(command_to_proto(command))
        elif given is not None:
            errors["command"] = spec_field_error("command")
    for key, value in rest.items():
        known = key in _SPEC_TYPED_FIELDS
        if known and (value is None or (key in _FALSY_MEANS_DEFAULT and not value)):
            continue  # the coordinator applies the default
        typed = _fits(key, value) if known else None
        if typed is None:
            errors[key] = spec_field_error(key)
        elif key in SPEC_TIME_FIELDS:
            getattr(spec, key).FromDatetime(typed)
        else:
            setattr(spec, key, typed)
    return spec, errors


def queue_job_request(
    job_name: str, specs: Sequence[Any], edges: Sequence[tuple[JobNode, JobNode]]
) -> Any:
    """A ``QueueJobRequest``: the tasks' specs in order and ``(task, waits_for)`` edges."""
    return client_pb2.QueueJobRequest(
        job_name=job_name,
        tasks=list(specs),
        edges=[client_pb2.JobEdge(task=_job_ref(a), waits_for=_job_ref(b)) for a, b in edges],
    )


def _job_ref(node: JobNode) -> Any:
    kind, number = node
    return client_pb2.JobRef(**{kind: number})
