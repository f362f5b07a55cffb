"""Property and fuzz tests over the real gRPC API, on SQLite and PostgreSQL.

Every RPC of ClientService, WorkerService and AdminService gets random and boundary values
in every field (tests/fuzz/strategies.py: NUL bytes, huge strings, NaN and infinities,
negative numbers, invalid and deeply nested JSON, unknown ids, stale attempts, oversized
messages), alone, in random sequences, and along a real lease walked out of order. Every
answer must be a documented status code with a message naming the problem
(tests/fuzz/harness.py judges each one). After each test the coordinator is alive, an
ordinary task runs to COMPLETED on a real worker, and the database invariants hold.

Counts: TASKGRID_FUZZ_EXAMPLES=N runs every test with N examples (the defaults keep the
suite near 30 s per database in `make test`); TASKGRID_FUZZ_SEED=S replays a run (the seed is in the
summary line and in every failure); TASKGRID_FUZZ_VERBOSE=1 adds the codes per method.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from taskgrid.client import QueueResult, Scheduler
from taskgrid.v1 import admin_pb2, client_pb2, common_pb2, worker_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.harness import EXAMPLES_ENV, FuzzApi, examples

#: generous: a long run (TASKGRID_FUZZ_EXAMPLES) must not hit the default 120 s per test
pytestmark = pytest.mark.timeout(120 + 2 * examples(0))


def fuzz(api: FuzzApi, strategy: st.SearchStrategy[Any], default_examples: int,
         send: Callable[[Any], None] | None = None) -> None:
    """Run one hypothesis test of `strategy` against the coordinator, then check its health."""
    @settings(max_examples=examples(default_examples), deadline=None, database=None,
              derandomize=False, print_blob=True, suppress_health_check=list(HealthCheck))
    @seed(api.seed)
    @given(strategy)
    def run(item: Any) -> None:
        (send or api.send)(item)

    run()
    api.check_health()


def send_all(api: FuzzApi) -> Callable[[list[fz.Call]], None]:
    def send(items: list[fz.Call]) -> None:
        for call in items:
            api.send(call)
    return send


# -- one RPC at a time --------------------------------------------------------------------------


def test_queue_task(api):
    fuzz(api, fz.calls("client", ["QueueTask"]), 200)


def test_queue_tasks_and_jobs(api):
    fuzz(api, fz.calls("client", ["QueueTasks", "QueueJob"]), 120)


def test_read_list_stop_watch(api):
    fuzz(api, fz.calls("client", ["GetTask", "ListTasks", "StopTask", "WatchTask"]), 120)


def test_worker_service(api):
    fuzz(api, fz.calls("worker"), 250)


def test_admin_service(api):
    fuzz(api, fz.calls("admin"), 60)


# -- sequences ----------------------------------------------------------------------------------


def test_random_call_sequences(api):
    """Any calls in any order: Report before Lease, StartRuns of nothing, stops mid-run."""
    fuzz(api, st.lists(fz.every_call(), min_size=2, max_size=6), 60, send_all(api))


_walks = itertools.count(1)
_RUN_STATUSES = [v.number for v in common_pb2.RunStatus.DESCRIPTOR.values] + [99]
_WORKER_STATUSES = [v.number for v in common_pb2.WorkerStatus.DESCRIPTOR.values] + [-7]
STEPS = ("lease", "lease", "start", "heartbeat", "output", "report", "report", "release",
         "stop", "register", "status", "get")


def walk(api: FuzzApi, data: st.DataObject) -> None:
    """Queue tasks for one fresh worker, then walk its leases in a random order.

    Each step names a lease the worker really holds, an older or newer attempt of it, or a
    task it never leased, with the worker's session or a stale one.
    """
    group = f"walk-{next(_walks)}"
    draw = data.draw
    specs = [common_pb2.TaskSpec(
        function_name="add", args="[1, 2]", group_name=group, period=0,
        retry_failed=draw(st.sampled_from([0, 1, -1])), repeats=draw(st.sampled_from([1, 2])),
        discard_results=draw(st.booleans())) for _ in range(draw(st.integers(1, 3)))]
    code, reply = api.send(fz.Call("client", "QueueTasks",
                                   client_pb2.QueueTasksRequest(tasks=specs)))
    task_ids = [r.id for r in reply.results] if code.name == "OK" else []
    name = f"walker-{group}"

    def register() -> worker_pb2.WorkerSession | None:
        code, reply = api.send(fz.Call("worker", "Register", worker_pb2.RegisterRequest(
            worker_name=name, group_names=[group], functions=["add"], language="fuzz",
            capacity=draw(st.integers(1, 3)), heartbeat=draw(st.sampled_from([0.0, 0.5, 5.0])))))
        return reply.session if code.name == "OK" else None

    session = register()
    old_sessions: list[worker_pb2.WorkerSession] = []
    held: list[tuple[int, int]] = []

    def some_session() -> worker_pb2.WorkerSession:
        if old_sessions and draw(st.integers(0, 4)) == 0:
            return draw(st.sampled_from(old_sessions))
        return session or worker_pb2.WorkerSession()

    def some_ref() -> common_pb2.LeaseRef:
        if held:
            task_id, attempt = draw(st.sampled_from(held))
        else:  # nothing leased yet: a guess (Report before Lease)
            task_id, attempt = draw(st.sampled_from(task_ids or [1])), 1
        shift = draw(st.sampled_from([0, 0, 0, -1, 1]))
        return common_pb2.LeaseRef(task_id=task_id, attempt=attempt + shift)

    for _ in range(draw(st.integers(1, 10))):
        step = draw(st.sampled_from(STEPS))
        if step == "lease":
            call = fz.Call("worker", "Lease", worker_pb2.LeaseRequest(
                session=some_session(), max_tasks=draw(st.integers(0, 3)), wait_s=0.0,
                prefetch=draw(st.booleans())))
        elif step == "start":
            call = fz.Call("worker", "StartRuns", worker_pb2.StartRunsRequest(
                session=some_session(), leases=[some_ref() for _ in range(draw(
                    st.integers(0, 2)))]))
        elif step == "heartbeat":
            call = fz.Call("worker", "Heartbeat", worker_pb2.HeartbeatRequest(
                session=some_session(), running=[some_ref() for _ in range(draw(
                    st.integers(0, 2)))], rss_bytes=draw(fz.integers(-2**63, 2**63 - 1)),
                draining=draw(st.integers(0, 9)) == 0, leaving=draw(st.integers(0, 14)) == 0))
        elif step == "output":
            ref = some_ref()
            call = fz.Call("worker", "SendOutput", worker_pb2.SendOutputRequest(
                session=some_session(), chunks=[common_pb2.OutputChunk(
                    task_id=ref.task_id, attempt=ref.attempt,
                    seq=draw(st.sampled_from([1, 2, 2, 0, -1, 2**63 - 1])),
                    data=draw(fz.strings), clear=draw(st.booleans()))]))
        elif step == "report":
            refs = [some_ref() for _ in range(draw(st.integers(1, 2)))]
            reports = []
            for ref in refs:
                rep = worker_pb2.RunReport(ref=ref, status=draw(st.sampled_from(_RUN_STATUSES)),
                                           traceback=draw(fz.strings))
                if draw(st.booleans()):
                    rep.result = draw(fz.OVERRIDES["RunReport.result"])
                rep.output.extend([common_pb2.OutputChunk(seq=draw(st.sampled_from([1, 3, 0])),
                                                          data="out\n")])
                reports.append(rep)
            call = fz.Call("worker", "Report", worker_pb2.ReportRequest(
                session=some_session(), reports=reports))
        elif step == "release":
            call = fz.Call("worker", "Release", worker_pb2.ReleaseRequest(
                session=some_session(), leases=[some_ref()]))
        elif step == "stop":
            call = fz.Call("client", "StopTask", client_pb2.StopTaskRequest(
                ref=client_pb2.TaskRef(id=draw(st.sampled_from(task_ids or [1])))))
        elif step == "register":
            if session is not None:
                old_sessions.append(session)
            session = register()
            continue
        elif step == "status":
            call = fz.Call("admin", "SetWorkerStatus", admin_pb2.SetWorkerStatusRequest(
                status=draw(st.sampled_from(_WORKER_STATUSES)), worker_name=name))
        else:
            call = fz.Call("client", "GetTask", client_pb2.GetTaskRequest(
                ref=client_pb2.TaskRef(id=draw(st.sampled_from(task_ids or [1]))),
                all_runs=True))
        code, reply = api.send(call)
        if code.name == "OK" and step in ("lease", "start"):
            held.extend((lease.ref.task_id, lease.ref.attempt) for lease in reply.leases)


def test_lease_walks_out_of_order_with_stale_attempts(api):
    fuzz(api, st.data(), 80, lambda data: walk(api, data))


# -- the Python client --------------------------------------------------------------------------


class Made:
    """A value built only when sent (deeply nested, self-containing), shown by its recipe:
    hypothesis would recurse printing the value itself."""

    def __init__(self, recipe: str, make: Callable[[], Any]) -> None:
        self.recipe, self.make = recipe, make

    def __repr__(self) -> str:
        return self.recipe


def _deep(n: int) -> Made:
    def make() -> list[Any]:
        value: list[Any] = []
        for _ in range(n):
            value = [value]
        return value
    return Made(f"<list nested {n} deep>", make)


def _circular() -> Made:
    def make() -> list[Any]:
        value: list[Any] = [1]
        value.append(value)
        return value
    return Made("<list holding itself>", make)


def _made(value: Any) -> Any:
    return value.make() if isinstance(value, Made) else value


_offsets = st.timedeltas(-dt.timedelta(hours=23, minutes=59), dt.timedelta(hours=23, minutes=59))
py_scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats()
              | fz.safe_text | st.binary(max_size=8)
              | st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59),
                             timezones=st.none() | st.builds(dt.timezone, _offsets))
              | st.sampled_from([math.nan, math.inf, -math.inf, 10**400, object(),
                                 {1, 2}, frozenset(), len, 1j, Ellipsis]))
py_values = st.one_of(
    st.recursive(py_scalars, lambda c: st.lists(c, max_size=3) | st.tuples(c, c)
                 | st.dictionaries(st.one_of(fz.safe_text, st.integers(), st.none()), c,
                                   max_size=3), max_leaves=6),
    st.sampled_from([50, 99, 100, 101, 1000, 5000, 100_000]).map(_deep),
    st.builds(_circular),
)
_FIELD_NAMES = ["timeout", "repeats", "retry_failed", "period", "start_time", "stop_time",
                "next_run_time", "cronline", "uuid", "task_name", "group_name", "priority",
                "retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter", "command",
                "args", "vars", "status", "times_run", "bogus", "enabled", "sync_output"]
client_calls = st.fixed_dictionaries({
    "function": st.one_of(st.sampled_from([*fz.FUNCTIONS, "", "@command", "\x00"]), py_values,
                          st.just(len)),
    "pargs": py_values,
    "pvars": py_values,
    "kwargs": st.dictionaries(st.sampled_from(_FIELD_NAMES), py_values, max_size=4),
})


def test_python_client_queue_task_returns_errors_never_raises(api):
    scheduler = Scheduler(api.coordinator.address)

    def send(call: dict[str, Any]) -> None:
        kwargs = {k: _made(v) for k, v in call["kwargs"].items()}
        if kwargs.get("group_name") == fz.CHECK_GROUP:
            kwargs["group_name"] = "x"
        try:
            result = scheduler.queue_task(_made(call["function"]), _made(call["pargs"]),
                                          _made(call["pvars"]), **kwargs)
        except Exception as exc:
            api.codes["client-raised"] += 1
            raise AssertionError(f"queue_task raised {exc!r} for {call!r} "
                                 f"(seed {api.seed}, rerun with {EXAMPLES_ENV})") from exc
        api.codes["client-returned"] += 1
        assert isinstance(result, QueueResult)
        assert (result.id is None) == bool(result.errors), result
        if result.id is not None:
            fz.POOLS.add("task_ids", result.id)

    try:
        fuzz(api, client_calls, 120, send)
    finally:
        scheduler.close()


# -- faults found by fuzzing, fixed outside this suite's files ----------------------------------


def test_register_with_a_long_language_is_invalid_argument(api):
    request = worker_pb2.RegisterRequest(worker_name="fz-long-language", language="a" * 65)
    code, reply = api.send(fz.Call("worker", "Register", request), excuse_known=False)
    assert code.name in ("OK", "INVALID_ARGUMENT"), reply


def test_big_tasks_and_output_still_fit_in_answers(api):
    """Pages and run views stay under the message limit however big the tasks' text is."""
    group = f"big-{next(_walks)}"
    arg = "[" + json_string(fz.MAX_ARGS_BYTES - 100) + "]"
    for _ in range(5):  # 5 MiB of args: more than one 4 MiB answer holds
        code, reply = api.send(fz.Call("client", "QueueTask", client_pb2.QueueTaskRequest(
            task=common_pb2.TaskSpec(function_name="add", args=arg, group_name=group))))
        assert code.name == "OK" and reply.id, reply
    listed, token = [], ""
    for _ in range(5):
        code, page = api.send(fz.Call("client", "ListTasks", client_pb2.ListTasksRequest(
            group_name=group, page_token=token)))
        assert code.name == "OK"
        listed += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert len(listed) == len(set(listed)) == 5
    code, reg = api.send(fz.Call("worker", "Register", worker_pb2.RegisterRequest(
        worker_name=f"w-{group}", group_names=[group], functions=["add"], capacity=1)))
    code, leased = api.send(fz.Call("worker", "Lease", worker_pb2.LeaseRequest(
        session=reg.session, max_tasks=1)))
    [lease] = leased.leases
    for seq in (1, 2, 3):  # 3 x 1.5 MiB of live output: kept up to --max-output-bytes
        api.send(fz.Call("worker", "SendOutput", worker_pb2.SendOutputRequest(
            session=reg.session, chunks=[common_pb2.OutputChunk(
                task_id=lease.ref.task_id, attempt=lease.ref.attempt, seq=seq,
                data="z" * (3 * 1024 * 1024 // 2))])))
    for all_runs in (False, True):
        code, view = api.send(fz.Call("client", "GetTask", client_pb2.GetTaskRequest(
            ref=client_pb2.TaskRef(id=lease.ref.task_id), all_runs=all_runs)))
        assert code.name == "OK" and view.runs[-1].run_output.startswith("z")
    api.send(fz.Call("worker", "Report", worker_pb2.ReportRequest(
        session=reg.session, reports=[worker_pb2.RunReport(
            ref=lease.ref, status=common_pb2.RUN_STATUS_COMPLETED, result="3",
            output=[common_pb2.OutputChunk(seq=4, data="y" * (2 * 1024 * 1024))])])))
    code, view = api.send(fz.Call("client", "GetTask", client_pb2.GetTaskRequest(
        ref=client_pb2.TaskRef(id=lease.ref.task_id), all_runs=True)))
    assert code.name == "OK" and view.runs[-1].run_result == "3"
    api.check_health()


def json_string(n: int) -> str:
    return '"' + "y" * n + '"'


def _one_lease(api: FuzzApi, prefetch: bool = False) -> tuple[worker_pb2.WorkerSession, Any]:
    group = f"one-{next(_walks)}"
    api.send(fz.Call("client", "QueueTask", client_pb2.QueueTaskRequest(
        task=common_pb2.TaskSpec(function_name="add", args="[1, 2]", group_name=group))))
    code, reg = api.send(fz.Call("worker", "Register", worker_pb2.RegisterRequest(
        worker_name=f"w-{group}", group_names=[group], functions=["add"])))
    code, leased = api.send(fz.Call("worker", "Lease", worker_pb2.LeaseRequest(
        session=reg.session, max_tasks=1, prefetch=prefetch)))
    [lease] = leased.leases
    return reg.session, lease


def test_a_report_whose_result_is_not_json_ends_the_run_failed(api):
    for result in ("not json", "NaN", "[" * 5000):
        session, lease = _one_lease(api)
        report = worker_pb2.RunReport(ref=lease.ref, status=common_pb2.RUN_STATUS_COMPLETED,
                                      result=result)
        code, _ = api.send(fz.Call("worker", "Report", worker_pb2.ReportRequest(
            session=session, reports=[report])), excuse_known=False)
        assert code.name == "OK"
        code, view = api.send(fz.Call("client", "GetTask", client_pb2.GetTaskRequest(
            ref=client_pb2.TaskRef(id=lease.ref.task_id), all_runs=True)))
        assert view.task.status == common_pb2.TASK_STATUS_FAILED
        assert "ResultNotJSON" in view.runs[-1].traceback


def test_a_lease_listed_twice_is_invalid_argument(api):
    """StartRuns and Release with one lease twice once answered ABORTED (the batch's second
    compare-and-set missed); like Report, they answer INVALID_ARGUMENT."""
    for method in ("StartRuns", "Release"):
        session, lease = _one_lease(api, prefetch=True)
        request = fz.request_class("worker", method)(session=session, leases=[lease.ref] * 2)
        code, reply = api.send(fz.Call("worker", method, request), excuse_known=False)
        assert code.name == "INVALID_ARGUMENT", (method, reply)
