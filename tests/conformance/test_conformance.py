"""One scenario set every worker language must pass, run against each worker program.

`lang` is "python" (taskgrid worker --tasks tests/conformance/handlers.py) or "go"
(worker/go's taskgrid-worker-conformance binary, built on demand). Both register handlers
of the same names; python_only and go_only exist in one language each.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conformance.launch import LANGS, worker_args
from tests.support.processes import WorkerProcess
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


def test_mixed_fleet_routes_by_function_and_commands_go_to_either(client, coordinator,
                                                                    start_worker):
    """One group, a Python and a Go worker: a function goes only to a worker offering it;
    command tasks and shared functions go to either."""
    start_worker("py", heartbeat=0.5, **worker_args("python", ["--allow-commands"]))
    start_worker("go", heartbeat=0.5, **worker_args("go", ["--allow-commands"]))
    py = [client.queue_task("python_only").id for _ in range(4)]
    go = [client.queue_task("go_only").id for _ in range(4)]
    shared = [client.queue_task("sleep_for", pargs=[0.3]).id for _ in range(8)]
    commands = [client.queue_command(["/bin/sleep", "0.3"]).id for _ in range(8)]
    assert {finished(client, t).run.worker_name for t in py} == {"py"}
    assert {finished(client, t).run.worker_name for t in go} == {"go"}
    assert {finished(client, t).run.worker_name for t in shared} == {"py", "go"}
    assert {finished(client, t).run.worker_name for t in commands} == {"py", "go"}


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
