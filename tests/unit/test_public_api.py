"""Pins the public surface of taskgrid.client: exported names, Scheduler methods, record
shapes, and that no public signature or field mentions a protobuf or gRPC type."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from typing import Any

import pytest

import taskgrid.client as client

EXPECTED_ALL = {
    # the client
    "Scheduler", "AsyncScheduler", "TaskRef", "JobGraph", "JobTask", "TlsConfig",
    # records and statuses
    "TaskRecord", "RunRecord", "WorkerRecord", "OutputChunk", "QueueResult", "TaskStatusResult",
    "TaskEvent", "TaskStatus", "RunStatus", "WorkerStatus", "CommandSpec", "ChangedResult",
    "UpdateResult", "StatsResult", "StatusCount", "MinuteCount",
    "JobView", "TaskPage",
    # errors
    "TaskgridError", "NotFoundError", "InvalidArgumentError", "AlreadyExistsError",
    "FailedPreconditionError", "AbortedError", "PermissionDeniedError", "UnauthenticatedError",
    "ResourceExhaustedError", "UnavailableError", "DeadlineExceededError", "CancelledError",
    "UnimplementedError", "InternalError", "ProtocolError", "WaitTimeoutError",
    "TaskEndedError", "TaskFailedError", "TaskTimedOutError", "TaskStoppedError",
    "TaskExpiredError",
}

EXPECTED_SCHEDULER_METHODS = {
    "queue_task", "queue_command", "queue_tasks", "task_status", "stop_task", "resume",
    "disable", "terminate", "kill", "get_workers", "runs", "explain", "waiting_for",
    "list_tasks", "watch", "close", "wait", "result", "requeue", "enable_tasks",
    "disable_tasks", "update_task", "delete_tasks", "stats", "get_job",
    "list_tasks_page",
}

EXPECTED_JOBGRAPH_MEMBERS = {
    "queue_task", "queue_command", "add_deps", "validate", "tasks", "validated",
}
EXPECTED_JOBTASK_MEMBERS = {"job", "index", "function_name", "id", "uuid"}

RECORDS = [
    client.TaskRecord, client.RunRecord, client.WorkerRecord, client.OutputChunk,
    client.QueueResult, client.TaskStatusResult, client.CommandSpec, client.ChangedResult,
    client.UpdateResult, client.StatsResult, client.StatusCount, client.MinuteCount,
    client.JobView, client.TaskPage,
]

FORBIDDEN = ("_pb2", "grpc", "protobuf")


def test_all_is_exactly_the_expected_set() -> None:
    assert set(client.__all__) == EXPECTED_ALL
    assert len(client.__all__) == len(set(client.__all__))
    for name in client.__all__:
        assert hasattr(client, name), name


def test_scheduler_public_methods_are_pinned() -> None:
    public = {n for n, _ in inspect.getmembers(client.Scheduler) if not n.startswith("_")}
    assert public == EXPECTED_SCHEDULER_METHODS


def test_jobgraph_and_jobtask_public_members_are_pinned() -> None:
    public = {n for n, _ in inspect.getmembers(client.JobGraph) if not n.startswith("_")}
    assert public == EXPECTED_JOBGRAPH_MEMBERS
    public = {n for n, _ in inspect.getmembers(client.JobTask) if not n.startswith("_")}
    assert public == EXPECTED_JOBTASK_MEMBERS
    with client.Scheduler("127.0.0.1:1") as s:
        job = client.JobGraph(s)
        assert job.job_name == "job_0" and job.errors == {} and job.scheduler is s
        assert client.JobGraph(s, "nightly").job_name == "nightly"


def test_jobgraph_signatures_follow_the_contract() -> None:
    params = inspect.signature(client.JobGraph).parameters
    assert list(params) == ["scheduler", "job_name"] and params["job_name"].default == "job_0"
    queue = inspect.signature(client.JobGraph.queue_task).parameters
    same = inspect.signature(client.Scheduler.queue_task).parameters
    assert [(p.name, p.kind, p.default) for p in queue.values()] == [
        (p.name, p.kind, p.default) for p in same.values()
    ]
    deps = inspect.signature(client.JobGraph.add_deps).parameters
    assert list(deps) == ["self", "task_parent", "task_child"]
    assert list(inspect.signature(client.JobGraph.validate).parameters) == ["self"]


def test_task_status_result_keeps_its_positional_shape() -> None:
    result = client.TaskStatusResult(None, None, None)  # type: ignore[arg-type]
    assert result.waiting_for == ()


def test_scheduler_constructor_signature() -> None:
    params = inspect.signature(client.Scheduler).parameters
    assert list(params) == ["target", "token", "tls", "timeout_s", "insecure", "tracing"]
    assert params["target"].default == "127.0.0.1:50051"
    assert params["token"].default is None and params["tls"].default is None
    assert isinstance(params["timeout_s"].default, float)
    assert params["insecure"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["insecure"].default is False
    assert params["tracing"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["tracing"].default is False


def test_tls_config_is_a_frozen_dataclass_of_paths() -> None:
    fields = [f.name for f in dataclasses.fields(client.TlsConfig)]
    assert fields == ["ca", "cert", "key", "server_name"]
    assert client.TlsConfig.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert client.TlsConfig() == client.TlsConfig(None, None, None, None)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("queue_task", ["self", "function", "pargs", "pvars", "kwargs"]),
        ("queue_command", ["self", "argv", "env", "cwd", "kwargs"]),
        ("task_status", ["self", "ref", "output"]),
        ("stop_task", ["self", "ref"]),
        ("resume", ["self", "group_names", "worker_name"]),
        ("disable", ["self", "group_names", "worker_name"]),
        ("terminate", ["self", "group_names", "worker_name"]),
        ("kill", ["self", "group_names", "worker_name"]),
        ("runs", ["self", "ref"]),
        ("queue_tasks", ["self", "tasks"]),
        ("list_tasks", ["self", "status", "group_name", "function_name", "task_name", "limit",
                        "uuid", "created_after", "created_before", "oldest_first"]),
        ("watch", ["self", "ref"]),
        ("explain", ["self", "ref"]),
        ("waiting_for", ["self", "ref"]),
    ],
)
def test_method_parameters_follow_the_contract(method: str, params: list[str]) -> None:
    signature = inspect.signature(getattr(client.Scheduler, method))
    assert list(signature.parameters) == params
    if method == "queue_task":
        assert signature.parameters["function"].default is inspect.Parameter.empty
        assert signature.parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD


def _annotation_texts() -> list[tuple[str, str]]:
    """(where, annotation text) for every public signature and record field."""
    found: list[tuple[str, str]] = []
    for name in client.__all__:
        obj = getattr(client, name)
        if inspect.isclass(obj):
            members = [(f"{name}.{m}", f) for m, f in vars(obj).items()
                       if callable(f) and (not m.startswith("_") or m == "__init__")]
            for where, function in members:
                for p, annotation in inspect.get_annotations(function).items():
                    found.append((f"{where}({p})", str(annotation)))
            if dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    found.append((f"{name}.{f.name}", str(f.type)))
        else:
            found.append((name, repr(obj)))
    return found


def test_no_public_annotation_mentions_protobuf_or_grpc() -> None:
    texts = _annotation_texts()
    assert len(texts) > 50  # the walk really saw the surface
    offenders = [(w, t) for w, t in texts if any(bad in t for bad in FORBIDDEN)]
    assert offenders == []


def _walk_types(tp: Any) -> list[Any]:
    out = [tp]
    for arg in typing.get_args(tp):
        out += _walk_types(arg)
    return out


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_record_fields_resolve_to_plain_python_types(record: type) -> None:
    hints = typing.get_type_hints(record)
    for field, tp in hints.items():
        for part in _walk_types(tp):
            module = getattr(part, "__module__", "") or ""
            assert "_pb2" not in module and not module.startswith(("grpc", "google")), field


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_records_are_frozen_slotted_dataclasses(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    assert record.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(record)


@pytest.mark.parametrize(
    ("enum_cls", "values"),
    [
        (client.TaskStatus, ["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT",
                             "STOPPED", "EXPIRED"]),
        (client.RunStatus, ["RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "STOPPED"]),
        (client.WorkerStatus, ["ACTIVE", "DISABLED", "TERMINATE", "KILL"]),
    ],
)
def test_status_enums_are_str_enums_with_web2py_values(enum_cls: Any, values: list[str]) -> None:
    assert issubclass(enum_cls, str) and issubclass(enum_cls, enum.Enum)
    assert [m.value for m in enum_cls] == values
    for m in enum_cls:
        assert m == m.value and enum_cls(m.value) is m


def test_terminal_task_statuses() -> None:
    terminal = {s for s in client.TaskStatus if s.is_terminal}
    assert {s.value for s in terminal} == {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


def test_errors_form_one_tree_free_of_grpc() -> None:
    errors = [getattr(client, n) for n in client.__all__ if n.endswith("Error")]
    assert len(errors) == 21
    for cls in errors:
        assert issubclass(cls, client.TaskgridError)
        assert all("grpc" not in (b.__module__ or "") for b in cls.__mro__), cls
    assert issubclass(client.TaskgridError, Exception)


def test_bad_calls_fail_before_any_rpc() -> None:
    with client.Scheduler("127.0.0.1:1") as s:
        with pytest.raises(TypeError):
            s.queue_task()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            s.task_status(["x"])  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            s.stop_task(2.5)  # type: ignore[arg-type]
