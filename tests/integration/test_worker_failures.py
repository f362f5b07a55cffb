"""Failures: workers killed mid-task, coordinators going away, stops and kills of running tasks."""

from __future__ import annotations

import signal

from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}


def finished(client, ref, timeout=20.0):
    wait_until(lambda: client.task_status(ref).status in TERMINAL, timeout=timeout,
               desc=f"task {ref} to finish")
    return client.task_status(ref, output=True)


def running_on(client, ref, timeout=15.0):
    wait_until(lambda: client.task_status(ref).status == "RUNNING", timeout=timeout,
               desc=f"task {ref} running")
    return client.task_status(ref).assigned_worker_name


def test_sigkilled_worker_task_completes_elsewhere_and_lost_run_is_closed(
        client, coordinator, start_worker):
    a = start_worker("a")
    r = client.queue_task("sleep_for", pargs=[2])
    assert running_on(client, r.id) == "a"
    b = start_worker("b")
    a.kill(signal.SIGKILL)
    st = finished(client, r.id, timeout=30)
    assert st.task.status == "COMPLETED" and st.run.worker_name == "b"
    # lost_count counts consecutive losses: the completion on b reset it.
    assert st.task.lost_count == 0 and st.task.times_run == 1 and st.task.times_failed == 0
    first, second = client.runs(r.id)
    assert first.status == "FAILED" and "worker a" in first.traceback and first.stop_time
    assert second.status == "COMPLETED" and second.worker_name == "b"
    workers = client.get_workers(include_dead=True)
    assert not workers["a"].alive and workers["b"].alive
    assert b.proc.poll() is None


def test_stop_running_task_ends_stopped_without_consuming_a_retry(client, coordinator,
                                                                   start_worker):
    start_worker("w1", extra_args=["--kill-grace", "0.5"])
    r = client.queue_task("ignore_sigterm", pargs=[60], retry_failed=3)
    running_on(client, r.id)
    assert client.stop_task(r.id) is True
    st = finished(client, r.id)
    assert st.task.status == "STOPPED" and st.run.status == "STOPPED"
    assert st.task.times_failed == 0 and not st.task.enabled
    # the slot's child was killed and replaced: the worker still runs tasks
    assert finished(client, client.queue_task("add", pargs=[2, 2]).id).result == 4


def test_kill_command_stops_running_tasks_and_exits(client, coordinator, start_worker):
    w = start_worker("w1")
    r = client.queue_task("sleep_for", pargs=[60])
    running_on(client, r.id)
    assert client.kill(worker_name="w1") == ["w1"]
    st = finished(client, r.id)
    assert st.task.status == "STOPPED" and st.run.status == "STOPPED"
    assert w.wait(15) == 0


def test_disabled_worker_leases_nothing_until_resumed(client, coordinator, start_worker):
    start_worker("w1")
    assert client.disable(worker_name="w1") == ["w1"]
    wait_until(lambda: client.get_workers()["w1"].status == "DISABLED", timeout=5)
    r = client.queue_task("add", pargs=[1, 1])
    wait_until(lambda: "no ACTIVE worker" in (client.explain(r.id) or ""), timeout=5)
    assert client.task_status(r.id).status == "QUEUED"
    assert client.resume(worker_name="w1") == ["w1"]
    assert finished(client, r.id).result == 2


def test_max_empty_runs_exits_an_idle_worker(client, coordinator, start_worker):
    w = start_worker("idle", extra_args=["--max-empty-runs", "2"], heartbeat=0.2)
    assert w.wait(15) == 0


def test_worker_keeps_running_while_coordinator_is_away(client, coordinator, start_worker,
                                                        state_dir):
    start_worker("w1")
    r = client.queue_task("sleep_then_mark", pargs=[1.5, "away"])
    running_on(client, r.id)
    coordinator.stop()
    wait_until(lambda: (state_dir / "away").exists(), timeout=10, desc="task done while away")
    coordinator.restart()  # same port, same database: the buffered report is delivered
    st = finished(client, r.id, timeout=30)
    assert st.task.status == "COMPLETED" and st.result == 1.5
    assert len(client.runs(r.id)) == 1


def test_coordinator_restart_loses_no_queued_task(client, coordinator, start_worker):
    ids = [client.queue_task("add", pargs=[i, 1]).id for i in range(5)]
    coordinator.restart()
    start_worker("late")
    for i, tid in enumerate(ids):
        assert finished(client, tid).result == i + 1


def test_coordinator_exits_cleanly_on_sigterm(coordinator):
    assert coordinator.stop() == 0
    assert "coordinator stopped" in coordinator.log_text()


def test_sigterm_drains_then_second_sigterm_kills(client, coordinator, start_worker):
    w = start_worker("w1", extra_args=["--concurrency", "2"])
    short = client.queue_task("print_lines", pargs=[3, 0.5], sync_output=1)
    # really running in the worker (its output arrives), not only leased: a lease that reaches
    # a draining worker before it starts is handed back instead (tested in test_protocol)
    wait_until(lambda: "line 0" in getattr(client.task_status(short.id, output=True).run,
                                           "run_output", ""), timeout=15, desc="output")
    w.terminate()  # SIGTERM: finish what runs, lease nothing more
    wait_until(lambda: client.get_workers()["w1"].status == "TERMINATE", timeout=10)
    late = client.queue_task("add", pargs=[1, 1])
    assert finished(client, short.id).task.status == "COMPLETED"
    assert w.wait(15) == 0
    assert client.task_status(late.id).status == "QUEUED"
    w2 = start_worker("w2")
    long = client.queue_task("print_lines", pargs=[200, 0.3], sync_output=1)
    wait_until(lambda: "line 0" in getattr(client.task_status(long.id, output=True).run,
                                           "run_output", ""), timeout=15, desc="output")
    w2.terminate()
    wait_until(lambda: client.get_workers()["w2"].status == "TERMINATE", timeout=10)
    w2.terminate()  # the second SIGTERM stops the running task now
    assert finished(client, long.id).task.status == "STOPPED"
    assert w2.wait(15) == 0
