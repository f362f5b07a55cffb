"""`make demo`: a coordinator on SQLite, two workers, sample tasks, their statuses and outputs.

The dashboard (`taskgrid dashboard`) runs beside them on a free port; its URL is printed
first thing. Everything runs in a temporary folder and is stopped at the end, even on Ctrl-C.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TASKS = ROOT / "examples" / "demo_tasks.py"


def taskgrid(*args: str) -> list[str]:
    """The command line of `taskgrid ARGS` with this interpreter."""
    return [sys.executable, "-m", "taskgrid", *args]


def banner(text: str) -> None:
    """Print a section title."""
    print(f"\n=== {text} ===", flush=True)


def start_coordinator(folder: pathlib.Path) -> tuple[subprocess.Popen[str], str]:
    """Start the coordinator on a SQLite file; wait for its listening line."""
    log = open(folder / "coordinator.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        taskgrid("coordinator", "--db", f"sqlite:///{folder / 'demo.sqlite'}",
                 "--listen", "127.0.0.1:0", "--heartbeat", "1"),
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the coordinator is ready (or dies)
    if "listening on" not in line:
        raise SystemExit(f"coordinator did not start; see {folder / 'coordinator.log'}")
    return proc, line.rsplit(" ", 1)[1].strip()


def start_dashboard(folder: pathlib.Path, address: str) -> tuple[subprocess.Popen[str], str]:
    """Start `taskgrid dashboard` on a free port against the demo coordinator; its URL."""
    log = open(folder / "dashboard.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        taskgrid("dashboard", "--coordinator", address, "--listen", "127.0.0.1:0"),
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "dashboard listening on http://HOST:PORT"
    if "listening on" not in line:
        raise SystemExit(f"dashboard did not start; see {folder / 'dashboard.log'}")
    return proc, line.rsplit(" ", 1)[1].strip()


def main() -> int:
    """Run the demo; returns 0 when every sample task ended as expected."""
    from taskgrid.client import Scheduler

    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskgrid-demo-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        banner("coordinator on SQLite")
        coord, address = start_coordinator(folder)
        procs.append(coord)
        print(f"listening on {address}; database {folder / 'demo.sqlite'}")
        env = {**os.environ, "TASKGRID_COORDINATOR": address}
        for name in ("demo-w1", "demo-w2"):
            log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(
                taskgrid("worker", "--tasks", str(TASKS), "--coordinator", address,
                         "--name", name, "--heartbeat", "1", "--concurrency", "2"),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env))
        s = Scheduler(address)
        deadline = time.monotonic() + 30
        while len(s.get_workers()) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not register; see " + str(folder))
            time.sleep(0.1)  # polling a demo's readiness, not a test
        dashboard, url = start_dashboard(folder, address)
        procs.append(dashboard)
        print(f"dashboard: {url} (open it while the demo runs)", flush=True)
        banner("workers")
        subprocess.run(taskgrid("workers", "--coordinator", address), check=False)

        banner("queueing sample tasks")
        queued = {
            "add(2, 3)": s.queue_task("add", pargs=[2, 3]),
            "greet('taskgrid')": s.queue_task("greet", pargs=["taskgrid"]),
            "progress (sync_output=1, !clear!)": s.queue_task("progress", sync_output=1),
            "fail (retry_failed=1)": s.queue_task("fail", retry_failed=1, period=0),
            "slow(10) with timeout=2": s.queue_task("slow", pargs=[10], timeout=2),
        }
        for label, r in queued.items():
            print(f"  #{r.id:<3} {label}  errors={r.errors or 'none'}")
        bad = s.queue_task("add", pargs={"not": "a list"}, timeout=0)
        print(f"  a bad request is refused, nothing queued: errors={bad.errors}")

        banner("live output of the progress task (taskgrid tail)")
        subprocess.run(taskgrid("tail", str(queued["progress (sync_output=1, !clear!)"].id),
                                "--coordinator", address), check=False)

        for r in queued.values():  # the coordinator answers each wait when its task ends
            s.wait(r.id, timeout=60)

        fail_id = str(queued["fail (retry_failed=1)"].id)
        banner(f"taskgrid wait {fail_id} (exit code 10: it ended FAILED)")
        done = subprocess.run(taskgrid("wait", fail_id, "--coordinator", address), check=False)
        print(f"exit code {done.returncode}")
        banner("requeue every FAILED task by filter, then wait for it again")
        subprocess.run(taskgrid("requeue", "--status", "FAILED", "--coordinator", address),
                       check=False)
        again = subprocess.run(taskgrid("wait", fail_id, "--timeout", "60", "--coordinator",
                                        address), check=False)
        print(f"exit code {again.returncode}")

        banner("all tasks (taskgrid tasks)")
        subprocess.run(taskgrid("tasks", "--coordinator", address), check=False)
        banner("outcomes: runs, results, outputs, tracebacks")
        for label, r in queued.items():
            runs = s.runs(r.id)
            print(f"#{r.id} {label}: {s.task_status(r.id).status}, {len(runs)} run(s)")
            for run in runs:
                last_tb = run.traceback.strip().splitlines()[-1:] or [""]
                print(f"    run {run.id} {run.status:<9} result={run.run_result} "
                      f"output={run.run_output!r} {last_tb[0]}")
        banner("one task in full (taskgrid status 4 --output)")
        subprocess.run(taskgrid("status", str(queued["fail (retry_failed=1)"].id), "--output",
                                "--coordinator", address), check=False)
        ok = [s.task_status(r.id).status for r in queued.values()] == [
            "COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "TIMEOUT"] and (
            done.returncode, again.returncode, len(s.runs(int(fail_id)))) == (10, 10, 4)
        banner("done" if ok else "some tasks did not end as expected")
        s.close()
        return 0 if ok else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        print(f"(logs in {folder})")


if __name__ == "__main__":
    sys.exit(main())
