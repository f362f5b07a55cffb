"""How long a worker command takes to reach its worker (issue 4, point 2).

Usage: python bench/commands.py [--heartbeat S] [--rounds N]

- idle worker: `kill` by name -> the worker process has exited (its parked Lease
  call is answered at once with the new status);
- busy worker (its only slot runs a long task, so no Lease call is parked):
  `kill` -> the running task is STOPPED (the command rides on the next
  heartbeat reply, so up to one heartbeat interval, plus the stop itself).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from taskgrid.client import Scheduler

HERE = pathlib.Path(__file__).resolve().parent
TASKS = HERE.parent / "tests" / "support" / "sample_tasks.py"


def taskgrid(*args: str) -> list[str]:
    """`taskgrid ARGS` with this interpreter."""
    return [sys.executable, "-m", "taskgrid", *args]


def worker(address: str, name: str, heartbeat: float, folder: pathlib.Path
           ) -> subprocess.Popen[bytes]:
    """Start one worker and wait until it is registered."""
    log = open(folder / f"{name}.log", "wb")  # noqa: SIM115
    env = {**os.environ, "TASKGRID_TEST_STATE_DIR": str(folder)}
    return subprocess.Popen(taskgrid("worker", "--tasks", str(TASKS), "--coordinator", address,
                                     "--name", name, "--heartbeat", str(heartbeat)),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def wait(predicate: object, timeout: float = 30.0) -> None:
    """Poll a condition (a measuring loop, not a test)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)


def main() -> int:
    """Measure and print both delays."""
    p = argparse.ArgumentParser()
    p.add_argument("--heartbeat", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskgrid-cmd-"))
    coord = subprocess.Popen(
        taskgrid("coordinator", "--db", f"sqlite:///{folder / 'c.sqlite'}", "--listen",
                 "127.0.0.1:0"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True)
    assert coord.stdout is not None
    address = coord.stdout.readline().decode().rsplit(" ", 1)[1].strip()
    s = Scheduler(address)
    idle, busy = [], []
    try:
        for i in range(args.rounds):
            name = f"idle{i}"
            w = worker(address, name, args.heartbeat, folder)
            wait(lambda name=name: name in s.get_workers())
            time.sleep(0.2)  # let its Lease call park
            t0 = time.perf_counter()
            s.kill(worker_name=name)
            w.wait(30)
            idle.append(time.perf_counter() - t0)
            name = f"busy{i}"
            w = worker(address, name, args.heartbeat, folder)
            wait(lambda name=name: name in s.get_workers())
            r = s.queue_task("sleep_for", pargs=[120], group_name="main")
            wait(lambda r=r: s.task_status(r.id).status == "RUNNING")
            time.sleep(args.heartbeat * (i + 0.5) / args.rounds)  # spread over the beat
            t0 = time.perf_counter()
            s.kill(worker_name=name)
            wait(lambda r=r: s.task_status(r.id).status == "STOPPED", timeout=60)
            busy.append(time.perf_counter() - t0)
            w.wait(30)
    finally:
        s.close()
        os.killpg(coord.pid, signal.SIGTERM)
        coord.wait(10)
    print(f"heartbeat={args.heartbeat}s rounds={args.rounds}")
    print(f"idle worker, kill -> process exited: median {statistics.median(idle) * 1000:.0f} ms,"
          f" max {max(idle) * 1000:.0f} ms")
    print(f"busy worker, kill -> running task STOPPED: median {statistics.median(busy):.2f} s,"
          f" max {max(busy):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
