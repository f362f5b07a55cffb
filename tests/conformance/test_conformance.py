"""One scenario set every worker language must pass, run against each worker program.

`lang` is "python" (taskgrid worker --tasks tests/conformance/handlers.py), "go"
(worker/go's taskgrid-worker-conformance binary, built on demand) or "typescript"
(worker/ts's taskgrid-worker-ts with worker/ts/conformance's handlers, built by `make ts`).
All register handlers of the same names; python_only, go_only and ts_only exist in one
language each. docs/protocol.md lists which scenario checks which of its rules.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conformance.launch import LANGS, worker_args
from tests.support.certs import make_certs
from tests.support.processes import Access, WorkerProcess, pid_gone
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


@pytest.fixture(params=LANGS)
def lang(request):
    return request.param


@pytest.fixture
def launch(lang, coordinator, start_worker, state_dir):
    """launch(name, *extra) starts a worker of this test's language."""
    def start(name="w1", *extra, heartbeat=0.5, **opts):
        return start_worker(name, heartbeat=heartbeat, **worker_args(lang, list(extra)), **opts)
    return start


def finished(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to finish")
    return client.task_status(ref, output=True)


def running(client, ref, timeout=15.0):
    wait_until(lambda: client.task_status(ref).status == "RUNNING", timeout=timeout,
               desc=f"task {ref} running")
    return client.task_status(ref)


def test_results_are_json(client, launch):
    launch()
    assert finished(client, client.queue_task("add", pargs=[2, 3]).id).result == 5
    st = finished(client, client.queue_task("echo", pargs=[1, "a"], pvars={"k": [1]}).id)
    assert st.result == [[1, "a"], {"k": [1]}]
    r = client.queue_task("whoami")
    st = finished(client, r.id)
    assert st.result == [r.id, r.uuid, st.run.id]


def test_errors_fail_with_traceback(client, launch):
    launch()
    st = finished(client, client.queue_task("fail", pvars={"msg": "kaboom"}).id)
    assert st.task.status == "FAILED" and st.run.status == "FAILED"
    assert "kaboom" in st.run.traceback


def test_output_and_clear(client, launch):
    launch()
    st = finished(client, client.queue_task("print_lines", pargs=[3]).id)
    assert st.run.run_output == "line 0\nline 1\nline 2\n"
    assert finished(client, client.queue_task("progress").id).run.run_output.strip() == "100%"
    assert finished(client, client.queue_task("clear_many").id).run.run_output == "d\n"
    st = finished(client, client.queue_task("write_stderr", pargs=["to stderr\n"]).id)
    assert "to stderr" in st.run.run_output


def test_sync_output_shows_partial_output_while_running(client, launch):
    launch()
    r = client.queue_task("print_lines", pargs=[8, 0.4], sync_output=1)
    wait_until(lambda: (s := client.task_status(r.id, output=True)).task.status == "RUNNING"
               and s.run is not None and "line 1" in s.run.run_output, timeout=15,
               desc="partial output")
    assert finished(client, r.id).run.run_output.count("line") == 8


def test_timeout(client, launch):
    launch()
    st = finished(client, client.queue_task("sleep_for", pargs=[30], timeout=1).id)
    assert st.task.status == "TIMEOUT" and st.run.status == "TIMEOUT"
    assert (st.run.stop_time - st.run.start_time).total_seconds() < 5


def test_stop_a_running_task(client, launch):
    launch()
    r = client.queue_task("sleep_for", pargs=[30])
    running(client, r.id)
    assert client.stop_task(r.id)
    st = finished(client, r.id)
    assert st.task.status == "STOPPED" and st.run.status == "STOPPED"
    assert finished(client, client.queue_task("add", pargs=[1, 1]).id).result == 2


def test_kill_stops_tasks_and_exits(client, launch):
    w = launch()
    r = client.queue_task("sleep_for", pargs=[30])
    running(client, r.id)
    client.kill(worker_name="w1")
    assert finished(client, r.id).task.status == "STOPPED"
    assert w.wait(15) == 0


def test_terminate_finishes_then_exits(client, launch):
    w = launch()
    r = client.queue_task("sleep_for", pargs=[1.5])
    running(client, r.id)
    client.terminate(worker_name="w1")
    assert finished(client, r.id).task.status == "COMPLETED"
    assert w.wait(15) == 0


def test_sigterm_drains_then_exits(client, launch):
    """SIGTERM: the running task finishes and is reported, nothing more is leased, exit 0."""
    w = launch("w1")
    r = client.queue_task("print_lines", pargs=[4, 0.4], sync_output=1)
    # really running in the worker (its output arrives), not only leased
    wait_until(lambda: "line 0" in getattr(client.task_status(r.id, output=True).run,
                                           "run_output", ""), timeout=15, desc="output")
    w.terminate()
    wait_until(lambda: client.get_workers()["w1"].status == "TERMINATE", timeout=10,
               desc="the worker draining")
    late = client.queue_task("add", pargs=[1, 1])
    assert finished(client, r.id).task.status == "COMPLETED"
    assert w.wait(15) == 0
    assert client.task_status(late.id).status == "QUEUED"


def test_a_run_goes_on_while_the_coordinator_is_away_and_is_reported_after(
        client, coordinator, launch, tmp_path):
    """The coordinator stops mid-run: the worker keeps the run, retries with backoff, and
    delivers its report to the restarted coordinator (same address, same database)."""
    launch("w1")
    path = tmp_path / "away.marks"
    r = client.queue_task("stubborn", pargs=[str(path), 1.5])
    running(client, r.id)
    coordinator.stop()
    wait_until(lambda: path.exists() and (m := _marks(path)) and m[0][2] - m[0][1] >= 1.45,
               timeout=15, desc="the run done while the coordinator was away")
    coordinator.restart()
    st = finished(client, r.id, timeout=30)
    assert st.task.status == "COMPLETED" and st.result == 1.5
    assert len(client.runs(r.id)) == 1


def test_disable_and_resume(client, launch):
    launch()
    client.disable(worker_name="w1")
    wait_until(lambda: client.get_workers()["w1"].status == "DISABLED", timeout=5)
    r = client.queue_task("add", pargs=[1, 2])
    wait_until(lambda: "no ACTIVE worker" in (client.explain(r.id) or ""), timeout=5)
    client.resume(worker_name="w1")
    assert finished(client, r.id).result == 3


def test_dead_worker_recovery(client, launch):
    a = launch("a")
    r = client.queue_task("sleep_for", pargs=[2])
    running(client, r.id)
    launch("b")
    a.kill(signal.SIGKILL)
    st = finished(client, r.id, timeout=30)
    assert st.task.status == "COMPLETED" and st.run.worker_name == "b"
    first = client.runs(r.id)[0]
    assert first.status == "FAILED" and "worker a" in first.traceback


def test_stale_report_after_a_pause_is_dropped(client, launch):
    """A worker frozen past dead_after comes back with a report for a lease it lost."""
    a = launch("a")
    r = client.queue_task("sleep_for", pargs=[1.5])
    running(client, r.id)
    a.kill(signal.SIGSTOP)  # the whole session: worker and task both freeze
    wait_until(lambda: client.task_status(r.id).status == "QUEUED", timeout=15,
               desc="requeued after a")
    launch("b")
    st = finished(client, r.id)
    a.kill(signal.SIGCONT)
    wait_until(lambda: client.get_workers().get("a") is not None, timeout=20,
               desc="a registered again")
    runs = client.runs(r.id)
    assert st.task.status == "COMPLETED" and [x.status for x in runs] == ["FAILED", "COMPLETED"]
    assert runs[1].worker_name == "b" and client.task_status(r.id).times_run == 1


def test_mixed_fleet_routes_by_function_and_commands_go_to_any(client, coordinator,
                                                                 start_worker):
    """One group, a Python, a Go and a TypeScript worker: a function goes only to a worker
    offering it; command tasks and shared functions go to any of them."""
    only = {"python": "python_only", "go": "go_only", "typescript": "ts_only"}
    for lang in LANGS:
        start_worker(lang, heartbeat=0.5, **worker_args(lang, ["--allow-commands"]))
    own = {lang: [client.queue_task(fn).id for _ in range(3)] for lang, fn in only.items()}
    shared = [client.queue_task("sleep_for", pargs=[0.3]).id for _ in range(12)]
    commands = [client.queue_command(["/bin/sleep", "0.3"]).id for _ in range(12)]
    for lang, ids in own.items():
        assert {finished(client, t).run.worker_name for t in ids} == {lang}
    assert {finished(client, t).run.worker_name for t in shared} == set(LANGS)
    assert {finished(client, t).run.worker_name for t in commands} == set(LANGS)
    assert finished(client, own["typescript"][0]).result == "ts"


def _marks(path):
    """pid -> (first start, last mark) from a stubborn handler's file, in start order."""
    seen: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        pid, _kind, at = line.split()
        seen.setdefault(int(pid), []).append(float(at))
    return sorted(((pid, min(ts), max(ts)) for pid, ts in seen.items()), key=lambda m: m[1])


def test_a_handler_that_ignores_cancellation_is_killed_and_its_retry_never_overlaps_it(
        client, launch, tmp_path):
    """The handler ignores SIGTERM and its stop signal: the timeout's SIGKILL after the grace
    ends its process, and the retry starts in a new process only after that."""
    launch("w1", "--concurrency", "1", "--kill-grace", "0.5")
    path = tmp_path / "stubborn.marks"
    # period 1: the retry (due one period after the first start) is due the moment it ends
    r = client.queue_task("stubborn", pargs=[str(path), 30], timeout=1, retry_failed=1,
                          period=1)
    st = finished(client, r.id, timeout=40)
    assert st.task.status == "TIMEOUT"
    assert [x.status for x in client.runs(r.id)] == ["TIMEOUT", "TIMEOUT"]
    marks = _marks(path)
    assert len(marks) == 2, f"both attempts ran in one process: {marks}"
    (first, start1, last1), (second, start2, last2) = marks
    assert last1 < start2, "the retry started while the first attempt still ran"
    assert last1 - start1 < 10 and last2 - start2 < 10  # killed, not left to run its 30 s
    wait_until(lambda: pid_gone(first) and pid_gone(second), timeout=10, desc="both attempts gone")
    size = path.stat().st_size
    # still the only worker slot: the next task runs, and nothing wrote to the marks meanwhile
    assert finished(client, client.queue_task("add", pargs=[1, 1]).id).result == 2
    assert path.stat().st_size == size


def test_concurrency_is_never_exceeded_and_held_leases_are_kept(client, launch, tmp_path):
    """--concurrency 2: two runs at once, never three, each in its own process; runs longer
    than two heartbeats are never taken back (every heartbeat lists every held lease)."""
    launch("w1", "--concurrency", "2")
    paths = [tmp_path / f"run{i}.marks" for i in range(6)]
    ids = [client.queue_task("stubborn", pargs=[str(p), 1.2]).id for p in paths]
    for t in ids:
        st = finished(client, t)
        assert st.task.status == "COMPLETED" and st.task.lost_count == 0
        assert len(client.runs(t)) == 1
    spans = [_marks(p)[0] for p in paths]
    edges = sorted([(start, 1, pid) for pid, start, _ in spans]
                   + [(end, -1, pid) for pid, _, end in spans])
    now: list[int] = []
    most = 0
    for _at, delta, pid in edges:
        if delta > 0:
            assert pid not in now, "two runs at once in one process"
            now.append(pid)
        else:
            now.remove(pid)
        most = max(most, len(now))
    assert most == 2


def test_command_tasks(client, launch):
    launch("w1", "--allow-commands")
    ok = client.queue_command(["/bin/sh", "-c", "echo first; echo '!clear!'last"])
    st = finished(client, ok.id)
    assert st.task.status == "COMPLETED" and st.result == {"exit_code": 0}
    assert st.run.run_output.strip() == "last"
    bad = client.queue_command(["/bin/sh", "-c", "echo oops >&2; exit 3"])
    st = finished(client, bad.id)
    assert st.task.status == "FAILED" and "exit code 3" in st.run.traceback
    assert "oops" in st.run.traceback
    slow = client.queue_command(["/bin/sleep", "30"], timeout=1)
    assert finished(client, slow.id).task.status == "TIMEOUT"


def test_commands_need_the_flag(client, launch):
    launch("w1")
    r = client.queue_command(["/bin/true"])
    wait_until(lambda: "offers function '@command'" in (client.explain(r.id) or ""), timeout=5)
    assert client.task_status(r.id).status == "QUEUED"


def test_a_duplicate_worker_name_is_refused_while_the_first_worker_is_live(
        client, coordinator, lang, launch, processes):
    """A second process with the same --name never takes the name (or the tasks) over: it
    retries for about dead_after, then exits non-zero naming the name, or keeps retrying."""
    name = "twin-name"
    first = launch(name)
    r = client.queue_task("sleep_for", pargs=[4])
    running(client, r.id)
    # Its own log file: the fixture would share the first one's, named after the worker.
    second = WorkerProcess(name, coordinator.address, processes.tmp_path / "worker-twin-2.log",
                           processes.tmp_path, dict(processes.env), heartbeat=0.5,
                           **worker_args(lang, []))
    processes.workers.append(second)
    second.start(ready=False)
    st = finished(client, r.id)
    assert st.task.status == "COMPLETED" and st.task.lost_count == 0
    assert [run.status for run in client.runs(r.id)] == ["COMPLETED"]
    # The name stays the first worker's, and the second gives up (or keeps trying) meanwhile.
    deadline = time.monotonic() + 15
    while second.is_alive() and time.monotonic() < deadline:
        listed = client.get_workers()[name]
        assert listed.alive and listed.pid == first.pid
        time.sleep(0.2)  # pacing: the invariant is checked all along the window, not awaited
    assert first.is_alive() and client.get_workers()[name].pid == first.pid
    if not second.is_alive():
        assert second.proc is not None and second.proc.returncode not in (0, None)
        log = second.log_text().split("\n", 1)[-1]  # past the header line with the argv
        assert name in log, log
    assert finished(client, client.queue_task("add", pargs=[1, 2]).id).result == 3


def test_a_worker_restarted_under_its_name_after_a_crash_gets_the_name_back(client, launch):
    """The crashed process's session goes silent: the new one's Register is refused for a
    while (ALREADY_EXISTS), retried, and accepted once the old session is dead."""
    a = launch("phoenix")
    r = client.queue_task("sleep_for", pargs=[1])
    running(client, r.id)
    a.kill(signal.SIGKILL)
    b = launch("phoenix", ready=False)  # the dead one is still listed for a while
    wait_until(lambda: (w := client.get_workers().get("phoenix")) is not None
               and w.pid == b.pid, timeout=20, desc="the restarted worker registered")
    st = finished(client, r.id, timeout=30)  # the lost lease is queued again and rerun
    assert st.task.status == "COMPLETED" and b.is_alive()
    assert [run.status for run in client.runs(r.id)] == ["FAILED", "COMPLETED"]
    assert finished(client, client.queue_task("add", pargs=[2, 2]).id).result == 4


def test_tls_and_a_worker_token(lang, start_coordinator, start_worker, tmp_path):
    """Over TLS with tokens: a worker token works and never shows in the worker's log; a
    client token is refused (PERMISSION_DENIED) and that worker never gets a lease."""
    certs = make_certs(tmp_path / "certs")
    tokens = {"worker": "conformance-worker-token-0123456789",
              "client": "conformance-client-token-0123456789",
              "admin": "conformance-admin-token-0123456789"}
    path = tmp_path / "tokens"
    path.write_text("".join(f"{role} {token}\n" for role, token in tokens.items()))
    coord = start_coordinator(
        extra_args=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
                    "--tokens-file", str(path)],
        access=Access(ca=certs.ca, token=tokens["admin"]))
    ca = ["--tls-ca", str(certs.ca)]
    wrong = start_worker("wrong-role", ready=False, heartbeat=0.5,
                         **worker_args(lang, [*ca, "--token", tokens["client"]]))
    good = start_worker("good", heartbeat=0.5, env={"TASKGRID_TOKEN": tokens["worker"]},
                        **worker_args(lang, [*ca, "--allow-commands"]))
    from taskgrid.client import Scheduler, TlsConfig

    with Scheduler(coord.address, token=tokens["client"], tls=TlsConfig(ca=certs.ca)) as s:
        r = s.queue_task("add", pargs=[20, 22])
        wait_until(lambda: s.task_status(r.id).status in TERMINAL, timeout=20, desc="add")
        st = s.task_status(r.id, output=True)
        assert st.task.status == "COMPLETED" and st.result == 42
        assert st.run.worker_name == "good"
        # what a task runs sees its own run, never the worker's token
        c = s.queue_command(["/bin/sh", "-c", 'echo "[$TASKGRID_TOKEN] $TASKGRID_TASK_ID"'])
        wait_until(lambda: s.task_status(c.id).status in TERMINAL, timeout=20, desc="command")
        assert s.task_status(c.id, output=True).run.run_output == f"[] {c.id}\n"
    assert "wrong-role" not in {w.worker_name for w in coord.list_workers()}
    for worker in (good, wrong):
        log = worker.log_text().split("\n", 1)[-1]  # past the header line with the argv
        for token in tokens.values():
            assert token not in log, f"{worker.name} logged a token"
