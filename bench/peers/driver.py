"""The client side of one bench/compare.py phase, run in the measured system's own interpreter.

    python bench/peers/driver.py CONFIG_JSON             (the phase's driver)
    python bench/peers/driver.py --produce CONFIG_JSON   (one producer process, internal)

The same code measures every system, through a small adapter per system (`Taskgrid`, `Celery`,
`Huey`: enqueue one, enqueue a batch, enqueue a latency probe, count completions, queue one
task and wait for its result). Protocol
with compare.py: the driver warms the system up, prints `READY`, waits for `GO` on stdin (so
compare.py can read the servers' CPU counters at that instant), runs the phase and prints one
line `RESULT {json}`. Every wait is bounded by the config's `timeout_s`.

Phases:
- `burn_batch` / `burn_single`: queue `n` noop tasks (in batches of `batch`, or one call per
  task) and wait until all have completed; seconds from the first enqueue call to the moment
  the completion count reached n (polled every 20 ms).
- `latency`: `samples` single `lat` tasks, each `gap_s` after the previous one started (the
  workers idle in between); latency = the task body's time.time() (sent back by UDP on
  loopback) minus time.time() taken just before the enqueue call.
- `producers`: `producers` threads spread over `producer_procs` processes, each with its own
  client, queue n tasks one call each, all starting at the same instant; calls/s over the
  whole burst and each call's duration; then wait for the tasks to complete.
- `enqueue_only`: the same burst with no worker running (taskgrid only: the coordinator's
  cost of a QueueTask call alone).
- `roundtrip`: `samples` times, `gap_s` of idle first (as in `latency`), queue one `add(i, 1)`
  and block on the system's own way of getting a result (taskgrid `Scheduler.result`, Celery
  `AsyncResult.get` on its Redis result backend, Huey `Result.get(blocking=True)`); each round
  trip is perf_counter from just before the enqueue call to the result in hand, and the value
  is checked (i + 1). A timed-out or failed wait is `lost`, a wrong value `wrong`; neither is a
  sample.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLL_S = 0.02
WARMUP_TASKS = 20
SAMPLE_TIMEOUT_S = 5.0
ROUNDTRIP_WARMUP = 5  # round trips before GO: the result path's connections are made


class Timeout(Exception):
    """A bounded wait ran out."""


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)  # a measuring loop: the systems give no completion signal


# --- adapters --------------------------------------------------------------------------------


class Taskgrid:
    def __init__(self, cfg: dict[str, Any], counting: bool = True) -> None:
        from taskgrid.client import Scheduler

        self.s = Scheduler(cfg["address"])
        self.engine: Any = None
        if counting:
            import sqlalchemy as sa

            self.engine = sa.create_engine(cfg["db_url"])
            self._count = sa.text(
                "SELECT count(*) FROM scheduler_task WHERE status = 'COMPLETED'")

    def workers(self) -> int:
        return len(self.s.get_workers())

    def one(self, i: int) -> None:
        r = self.s.queue_task("noop", pargs=[i])
        if r.errors:
            raise RuntimeError(f"queue_task: {r.errors}")

    def batch(self, ids: list[int]) -> None:
        results = self.s.queue_tasks([{"function": "noop", "pargs": [i]} for i in ids])
        if any(r.errors for r in results):
            raise RuntimeError(f"queue_tasks: {results[0].errors}")

    def probe(self, i: int, port: int) -> None:
        r = self.s.queue_task("lat", pargs=[i, port])
        if r.errors:
            raise RuntimeError(f"queue_task: {r.errors}")

    def roundtrip(self, i: int, timeout_s: float) -> Any:
        r = self.s.queue_task("add", pargs=[i, 1])
        if r.errors:
            raise RuntimeError(f"queue_task: {r.errors}")
        return self.s.result(r.id, timeout=timeout_s)  # WaitTask: answered when the task ends

    def done(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self._count).scalar_one())

    def close(self) -> None:
        self.s.close()
        if self.engine is not None:
            self.engine.dispose()


class _RedisCounted:
    def done(self) -> int:
        return int(self.redis.get("compare:done") or 0)  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


class Celery(_RedisCounted):
    def __init__(self, cfg: dict[str, Any], counting: bool = True) -> None:
        import redis
        from celery import group

        from bench.peers import celery_tasks

        self.tasks = celery_tasks
        self.group = group
        self.redis = redis.Redis.from_url(cfg["redis_url"])

    def workers(self) -> int:
        return len(self.tasks.app.control.ping(timeout=0.5))

    def one(self, i: int) -> None:
        self.tasks.noop.delay(i)

    def batch(self, ids: list[int]) -> None:
        # Celery has no bulk enqueue: a group sends one message per task over one producer.
        self.group(self.tasks.noop.s(i) for i in ids).apply_async()

    def probe(self, i: int, port: int) -> None:
        self.tasks.lat.delay(i, port)

    def roundtrip(self, i: int, timeout_s: float) -> Any:
        # the Redis result backend (COMPARE_CELERY_RESULTS, roundtrip phase only): delay()
        # subscribes to the task's result channel, get() waits for its message
        return self.tasks.add.delay(i, 1).get(timeout=timeout_s)


class Huey(_RedisCounted):
    def __init__(self, cfg: dict[str, Any], counting: bool = True) -> None:
        import redis

        from bench.peers import huey_tasks

        self.tasks = huey_tasks
        self.redis = redis.Redis.from_url(cfg["redis_url"])

    def workers(self) -> int:
        return 1 << 30  # the consumer starts its worker processes itself

    def one(self, i: int) -> None:
        self.tasks.noop(i)

    def batch(self, ids: list[int]) -> None:
        # Huey's batch call; it enqueues one by one (one SQLite transaction each).
        self.tasks.noop.map(ids)

    def probe(self, i: int, port: int) -> None:
        self.tasks.lat(i, port)

    def roundtrip(self, i: int, timeout_s: float) -> Any:
        # SqliteHuey's wait_result polls the result table (50 ms first, then x1.15 each time)
        return self.tasks.add(i, 1).get(blocking=True, timeout=timeout_s)

    def durability(self) -> str:
        """The pragmas of a connection made as the consumer's are (same module, same file)."""
        conn = self.tasks.huey.storage.conn
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"journal_mode={journal} synchronous={names.get(sync, sync)}"


ADAPTERS: dict[str, type[Any]] = {"taskgrid": Taskgrid, "celery": Celery, "huey": Huey}


# --- protocol --------------------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def await_go() -> None:
    say("READY")
    line = sys.stdin.readline()
    if line.strip() != "GO":
        raise SystemExit(f"driver: expected GO, got {line!r}")


def warm_up(client: Any, cfg: dict[str, Any]) -> int:
    """Both workers up, then a few tasks through; returns the completion count after them."""
    wait_for(lambda: client.workers() >= cfg["workers"], cfg["timeout_s"], "the workers")
    base = client.done()
    for i in range(WARMUP_TASKS):
        client.one(-1 - i)
    wait_for(lambda: client.done() >= base + WARMUP_TASKS, cfg["timeout_s"], "the warm-up")
    return client.done()


# --- phases ----------------------------------------------------------------------------------


def burn(client: Any, cfg: dict[str, Any], batched: bool) -> dict[str, Any]:
    base = warm_up(client, cfg)
    n, size = cfg["n"], cfg["batch"]
    await_go()
    t0 = time.perf_counter()
    if batched:
        for start in range(0, n, size):
            client.batch(list(range(start, min(n, start + size))))
    else:
        for i in range(n):
            client.one(i)
    queued = time.perf_counter() - t0
    wait_for(lambda: client.done() >= base + n, cfg["timeout_s"], f"{n} completions")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": n / seconds, "enqueue_seconds": queued}


def latency(client: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    warm_up(client, cfg)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    samples: list[float] = []
    lost = 0
    await_go()
    phase_deadline = time.monotonic() + cfg["timeout_s"]
    for i in range(cfg["samples"]):
        if time.monotonic() > phase_deadline:
            lost += cfg["samples"] - i
            break
        time.sleep(cfg["gap_s"])  # the idle gap the phase is about
        t0 = time.time()
        client.probe(i, port)
        deadline = time.monotonic() + SAMPLE_TIMEOUT_S
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = sock.recv(256).decode().split()
            except TimeoutError:
                lost += 1
                break
            if int(data[0]) == i:
                samples.append((float(data[1]) - t0) * 1000.0)
                break
    sock.close()
    return {"samples_ms": samples, "lost": lost}


def roundtrip(client: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    warm_up(client, cfg)
    for k in range(ROUNDTRIP_WARMUP):
        i = -1000 - k
        if client.roundtrip(i, cfg["timeout_s"]) != i + 1:
            raise RuntimeError("roundtrip warm-up: wrong result")
    samples: list[float] = []
    lost = wrong = 0
    failures: dict[str, int] = {}
    await_go()
    phase_deadline = time.monotonic() + cfg["timeout_s"]
    for i in range(cfg["samples"]):
        if time.monotonic() > phase_deadline:
            lost += cfg["samples"] - i
            break
        time.sleep(cfg["gap_s"])  # the same idle gap as the latency phase
        t0 = time.perf_counter()
        try:
            value = client.roundtrip(i, SAMPLE_TIMEOUT_S)
        except Exception as exc:  # a timeout or a failed task: counted, the phase goes on
            lost += 1
            name = type(exc).__name__
            failures[name] = failures.get(name, 0) + 1
            continue
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        if value != i + 1:
            wrong += 1
            continue
        samples.append(elapsed_ms)
    return {"samples_ms": samples, "lost": lost, "wrong": wrong, "failures": failures,
            "warmup_roundtrips": ROUNDTRIP_WARMUP}


def producers(kind: str, client: Any, cfg: dict[str, Any], drain: bool) -> dict[str, Any]:
    base = warm_up(client, cfg) if drain else 0
    procs = []
    per_proc = split(cfg["producers"], cfg["producer_procs"])
    calls = split(cfg["n"], cfg["producers"])
    first = 0
    for threads in per_proc:
        sub = dict(cfg, kind=kind, calls=calls[first:first + threads], first_id=sum(calls[:first]))
        first += threads
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--produce", json.dumps(sub)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError("a producer process failed to start")
        if drain:  # each producer thread's warm-up call queued one task
            base += cfg["producers"]
            wait_for(lambda: client.done() >= base, cfg["timeout_s"], "the producers' warm-up")
        await_go()
        start_at = time.time() + 0.2
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start_at!r}\n")
            p.stdin.flush()
        parts = []
        for p in procs:
            out, _ = p.communicate(timeout=cfg["timeout_s"])
            parts.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = sum(part["errors"] for part in parts)
    durations = [d for part in parts for d in part["durations_ms"]]
    t_first = min(part["start"] for part in parts)
    t_last = max(part["end"] for part in parts)
    out = {"calls": len(durations), "errors": errors, "burst_seconds": t_last - t_first,
           "calls_per_s": len(durations) / (t_last - t_first), "durations_ms": durations}
    if drain:
        wait_for(lambda: client.done() >= base + len(durations), cfg["timeout_s"],
                 "the producers' tasks to complete")
        out["drain_seconds"] = time.time() - t_first
    return out


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def produce(cfg: dict[str, Any]) -> None:
    """One producer process: a thread per producer, each with its own client."""
    adapter = ADAPTERS[cfg["kind"]]
    clients = [adapter(cfg, counting=False) for _ in cfg["calls"]]
    for k, c in enumerate(clients):
        c.one(-1000 - cfg["first_id"] - k)  # connect now, not inside the measured burst
    say("READY")
    start_at = float(sys.stdin.readline())
    results: list[list[float]] = [[] for _ in clients]
    errors = [0]
    lock = threading.Lock()
    ends: list[float] = []

    def run(k: int, first_id: int) -> None:
        c, out = clients[k], results[k]
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(first_id, first_id + cfg["calls"][k]):
            t0 = time.perf_counter()
            try:
                c.one(i)
            except Exception:  # counted and reported: the burst goes on
                with lock:
                    errors[0] += 1
                continue
            out.append((time.perf_counter() - t0) * 1000.0)
        with lock:
            ends.append(time.time())

    threads = []
    first_id = cfg["first_id"]
    for k in range(len(clients)):
        threads.append(threading.Thread(target=run, args=(k, first_id)))
        first_id += cfg["calls"][k]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg["timeout_s"])
    for c in clients:
        c.close()
    say(json.dumps({"start": start_at, "end": max(ends) if ends else time.time(),
                    "errors": errors[0], "durations_ms": [x for r in results for x in r]}))


def main() -> None:
    sys.path.append(REPO)  # for bench.peers; last, so taskgrid comes from PYTHONPATH's copy
    if sys.argv[1] == "--produce":
        produce(json.loads(sys.argv[2]))
        return
    cfg = json.loads(sys.argv[1])
    kind, phase = cfg["kind"], cfg["phase"]
    client = ADAPTERS[kind](cfg, counting=phase != "enqueue_only")
    try:
        if phase in ("burn_batch", "burn_single"):
            result = burn(client, cfg, batched=phase == "burn_batch")
        elif phase == "latency":
            result = latency(client, cfg)
        elif phase == "roundtrip":
            result = roundtrip(client, cfg)
        elif phase == "producers":
            result = producers(kind, client, cfg, drain=True)
        elif phase == "enqueue_only":
            result = producers(kind, client, cfg, drain=False)
        else:
            raise SystemExit(f"driver: unknown phase {phase}")
        if hasattr(client, "durability"):
            result["durability"] = client.durability()
    except Timeout as exc:
        result = {"error": str(exc)}
    finally:
        client.close()
    say("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
