"""taskgrid beside Celery (Redis broker) and Huey (SqliteHuey) on the same workload.

Usage: .venv/bin/python bench/compare.py [--tasks N] [--rounds R] [--only SYSTEM ...]
                                         [--phase PHASE ...] [--samples S] [--gap-s G]
                                         [--producers P] [--producer-procs K] [--batch B]
                                         [--tg-concurrency C] [--huey-fsync default|off]
       .venv/bin/python bench/compare.py --report /tmp/taskgrid-compare-*/results.json

Workload: N trivial tasks, 2 worker processes, one producer, all on this machine (loopback).
Systems: taskgrid on SQLite and on PostgreSQL (coordinator + 2 workers x C slots), Celery 5
with a Redis broker and no result backend (a Redis one in the round-trip phase only) in its two
pools (prefork: one worker with 2 children; solo: two worker processes), Huey with SqliteHuey
and a consumer of 2 worker processes (`-k process -w 2`), and the gRPC floor
(bench/peers/floor_server.py: QueueTask answered by the same grpcio with no work behind it).
Phases (each on fresh processes, so the coordinator's shutdown counters belong to one phase):
burn-down with batch enqueue, burn-down with one enqueue call per task, queue-to-start latency
of single tasks with idle gaps, 50 concurrent producers, (taskgrid and the floor only) the same
producers with no worker, for the cost of a QueueTask call alone, and the round trip of one
task (queue it, then block on the system's own result call) with the same idle gaps as the
latency phase. Rounds are interleaved (round r runs every system once, the order rotated by r)
and every figure printed is the median over rounds. bench/README.md says what each figure
means; bench/peers/ holds the task modules, the client driver and the process handling.

First run: makes the peers' venv (bench/peers/.venv, from bench/peers/requirements.txt),
installs Debian's redis-server with apt-get when it is missing (as root), and finds the
PostgreSQL server binaries (scripts/ensure_postgres.sh). It starts its own Redis on a free
loopback port (no persistence) and its own PostgreSQL cluster, and stops both at the end.
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.peers import systems  # noqa: E402
from bench.peers.snapshot import Snapshot  # noqa: E402

DRIVER = HERE / "peers" / "driver.py"
REQUIREMENTS = HERE / "peers" / "requirements.txt"
STAMP = systems.PEERS_VENV / ".compare-requirements.sha256"

PHASES: dict[str, list[str]] = {
    "taskgrid": ["burn_batch", "burn_single", "latency", "producers", "enqueue_only",
                 "roundtrip"],
    "taskgrid-pg": ["burn_batch"],
    "celery-prefork": ["burn_batch", "burn_single", "latency", "producers", "roundtrip"],
    "celery-solo": ["burn_batch", "burn_single", "latency", "producers", "roundtrip"],
    "huey": ["burn_batch", "burn_single", "latency", "producers", "roundtrip"],
    "grpc-floor": ["enqueue_only"],
}
ALL_PHASES = ("burn_batch", "burn_single", "latency", "producers", "enqueue_only", "roundtrip")
#: round trips the driver makes before GO (bench/peers/driver.py ROUNDTRIP_WARMUP)
ROUNDTRIP_WARMUP = 5
PEERS = ("celery-prefork", "celery-solo", "huey")
CELERY = ("celery-prefork", "celery-solo")
#: RPCs only the bench makes (its wait for the workers to register), left out of the counts.
BENCH_CALLS = {"ListWorkers"}

DURABILITY = {
    "taskgrid": "SQLite WAL, synchronous=NORMAL: a commit survives a process crash, not a "
                "power loss",
    "taskgrid-durable": "SQLite WAL, synchronous=FULL (coordinator --durable): a commit "
                        "survives a power loss",
    "taskgrid-pg": "PostgreSQL, synchronous_commit=on, fsync=off: a commit survives any "
                   "process crash, not a power loss",
    "celery": "Redis with no persistence (--save '' --appendonly no): a Redis crash loses "
              "every queued task; Celery acks a task when a worker receives it",
    "huey": "SqliteHuey defaults: WAL, synchronous=FULL (fsync on every commit, power-loss "
            "safe); a task leaves the queue when a worker takes it",
    "huey-fsync-off": "SqliteHuey with fsync=False: WAL, synchronous=OFF (survives a process "
                      "crash, not a power loss); a task leaves the queue when a worker takes it",
}


# --- setup -----------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_peers_venv() -> None:
    """bench/peers/.venv with the pinned peers, (re)made when requirements.txt changes."""
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if systems.PEERS_PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    log(f"making the peers' venv in {systems.PEERS_VENV} (celery, redis, huey)")
    if not systems.PEERS_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(systems.PEERS_VENV)], check=True)
    subprocess.run([str(systems.PEERS_PYTHON), "-m", "pip", "install", "-q", "-r",
                    str(REQUIREMENTS)], check=True)
    STAMP.write_text(want + "\n")


def ensure_redis_server() -> None:
    if shutil.which("redis-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("redis-server is missing: install Debian's redis-server package")
    log("installing redis-server (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "redis-server"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)


def ensure_postgres() -> bool:
    from tests.support.postgres import find_bindir

    if find_bindir() is None:
        subprocess.run(["bash", str(REPO / "scripts" / "ensure_postgres.sh")], check=False)
    return find_bindir() is not None


# --- one phase -------------------------------------------------------------------------------


def tasks_queued(phase: str, cfg: dict[str, Any]) -> int:
    """Tasks the coordinator saw queued in its life (warm-up included), for the counters."""
    warm = 20
    return {"burn_batch": warm + cfg["n"], "burn_single": warm + cfg["n"],
            "latency": warm + cfg["samples"],
            "roundtrip": warm + ROUNDTRIP_WARMUP + cfg["samples"],
            "producers": warm + cfg["producers"] + cfg["n"],
            "enqueue_only": cfg["producers"] + cfg["n"]}[phase]


class Driver:
    """bench/peers/driver.py for one phase, spoken to line by line with bounded waits."""

    def __init__(self, run: systems.Running, cfg: dict[str, Any]) -> None:
        self.log = open(run.folder / "driver.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [run.driver_python, str(DRIVER), json.dumps(cfg)], cwd=run.folder, env=run.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"driver: no {prefix} within {timeout_s:.0f} s") from None
            if line is None:
                raise RuntimeError("driver exited early (see driver.log)")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def cpu_s(self) -> float:
        """The driver's CPU and its producer processes' (the client side)."""
        return systems.tree_cpu_s([self.proc.pid])

    def close(self) -> None:
        if self.proc.poll() is None:
            systems.kill_group(self.proc, signal.SIGKILL)
        self.log.close()


def run_phase(system: str, phase: str, folder: Path, args: argparse.Namespace,
              services: dict[str, Any]) -> dict[str, Any]:
    cfg = {"phase": phase, "n": args.tasks, "batch": args.batch, "samples": args.samples,
           "gap_s": args.gap_s, "producers": args.producers,
           "producer_procs": args.producer_procs, "timeout_s": args.phase_timeout_s}
    run = systems.start(system, phase, folder, redis=services.get("redis"),
                        postgres=services.get("postgres"), code=services.get("code"),
                        tg_concurrency=args.tg_concurrency, tg_durable=args.tg_durable,
                        huey_fsync=args.huey_fsync)
    result: dict[str, Any] = {}
    try:
        driver = Driver(run, {**run.config, **cfg})
        try:
            driver.expect("READY", args.phase_timeout_s)
            c0, s0, d0 = run.coordinator_cpu_s(), run.server_cpu_s(), driver.cpu_s()
            m0, t0 = systems.machine_busy_s(), time.monotonic()
            driver.send("GO")
            result = json.loads(driver.expect("RESULT", 3 * args.phase_timeout_s))
            c1, s1, d1 = run.coordinator_cpu_s(), run.server_cpu_s(), driver.cpu_s()
            m1, t1 = systems.machine_busy_s(), time.monotonic()
            result.update(coord_cpu_s=c1 - c0, server_cpu_s=s1 - s0, driver_cpu_s=d1 - d0,
                          foreign_cores=max(0.0, (m1 - m0) - (s1 - s0) - (d1 - d0)) / (t1 - t0))
        finally:
            driver.close()
    finally:
        result["counters"] = run.stop()
        for db in folder.glob("*.sqlite*"):
            db.unlink()
    result["tasks_queued"] = tasks_queued(phase, cfg)
    return result


# --- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def figures(phase: str, r: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """The numbers one phase's result gives (missing when it failed)."""
    if "error" in r:
        return {}
    n = args.tasks
    out: dict[str, float] = {}
    if phase.startswith("burn"):
        out.update(rate=r["rate"], coord_us=r["coord_cpu_s"] / n * 1e6,
                   server_us=r["server_cpu_s"] / n * 1e6)
    elif phase == "latency":
        s = r["samples_ms"]
        if s:
            out.update(p50=percentile(s, 50), p95=percentile(s, 95), p99=percentile(s, 99),
                       max=max(s), lost=r["lost"])
    elif phase == "roundtrip":
        s, k = r["samples_ms"], max(1, len(r["samples_ms"]))
        out.update(lost=r["lost"], wrong=r["wrong"], coord_us=r["coord_cpu_s"] / k * 1e6,
                   server_us=r["server_cpu_s"] / k * 1e6, client_us=r["driver_cpu_s"] / k * 1e6)
        if s:  # round trips/s: one client's back-to-back rate at these times (gaps left out)
            out.update(p50=percentile(s, 50), p99=percentile(s, 99), max=max(s),
                       rt_per_s=len(s) / (sum(s) / 1000.0))
    else:
        d = r["durations_ms"]
        out.update(calls_per_s=r["calls_per_s"], call_p50=percentile(d, 50),
                   call_p99=percentile(d, 99), errors=r["errors"])
        if phase == "producers":
            out.update(e2e_rate=r["calls"] / r["drain_seconds"],
                       coord_us=r["coord_cpu_s"] / n * 1e6, server_us=r["server_cpu_s"] / n * 1e6)
        else:
            out.update(coord_us_per_call=r["coord_cpu_s"] / r["calls"] * 1e6)
    if phase not in ("latency", "roundtrip"):
        out["client_us"] = r["driver_cpu_s"] / n * 1e6
    out["foreign_cores"] = r["foreign_cores"]
    c = r.get("counters") or {}
    if "transactions" in c:
        q = r["tasks_queued"]
        calls = {k: v for k, v in c["calls"].items() if k not in BENCH_CALLS}
        out["txn_per_task"] = c["transactions"] / q
        out["rpc_per_task"] = sum(calls.values()) / q
        for method, count in calls.items():
            out[f"rpc_{method}"] = count / q
    return out


def medians(results: dict[str, dict[str, list[dict[str, float]]]]
            ) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for system, phases in results.items():
        for phase, rounds in phases.items():
            keys = {k for f in rounds for k in f}
            out.setdefault(system, {})[phase] = {
                k: statistics.median([f[k] for f in rounds if k in f]) for k in keys}
    return out


# --- report ----------------------------------------------------------------------------------

ROWS = [  # (phase, figure, label, higher is better, decimals)
    ("burn_batch", "rate", "burn-down, batch enqueue (tasks/s)", True, 0),
    ("burn_single", "rate", "burn-down, one enqueue call per task (tasks/s)", True, 0),
    ("latency", "p50", "queue-to-start p50 (ms)", False, 2),
    ("latency", "p95", "queue-to-start p95 (ms)", False, 2),
    ("latency", "p99", "queue-to-start p99 (ms)", False, 2),
    ("producers", "calls_per_s", "50 producers: enqueue calls/s", True, 0),
    ("producers", "call_p50", "50 producers: enqueue call p50 (ms)", False, 2),
    ("producers", "call_p99", "50 producers: enqueue call p99 (ms)", False, 2),
    ("producers", "e2e_rate", "50 producers: tasks/s, first call to last completion", True, 0),
    ("roundtrip", "p50", "round trip, queue one + wait for its result, p50 (ms)", False, 2),
    ("roundtrip", "p99", "round trip, queue one + wait for its result, p99 (ms)", False, 2),
    ("roundtrip", "rt_per_s", "round trips/s (1 / mean round trip)", True, 0),
    ("roundtrip", "server_us", "CPU of all server processes per round trip, gaps included (us)",
     False, 0),
    ("burn_batch", "server_us", "CPU of all server processes per task, batch burn-down (us)",
     False, 0),
    ("burn_batch", "client_us", "producer CPU per task, batch burn-down (us)", False, 0),
    ("burn_single", "client_us", "producer CPU per enqueue call, one call per task (us)",
     False, 0),
]


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table, with a blank line either side (so it renders as one)."""
    lines = ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines + [""])


def get(m: dict[str, Any], system: str, phase: str, key: str) -> float | None:
    return m.get(system, {}).get(phase, {}).get(key)


def best_celery(m: dict[str, Any], phase: str, key: str, higher: bool
                ) -> tuple[float | None, str]:
    found = [(v, s) for s in CELERY if (v := get(m, s, phase, key)) is not None]
    if not found:
        return None, ""
    v, s = (max if higher else min)(found)
    return v, s.split("-")[1]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def report(m: dict[str, Any], args: argparse.Namespace, raw: dict[str, Any],
           per_round: dict[str, Any], info: dict[str, str]) -> str:
    out: list[str] = []
    present = [s for s in systems.SYSTEMS if s in m]
    out.append(f"taskgrid compare, {info['date']}, {args.rounds} round(s), N={args.tasks}, "
               f"wall {info['wall']}")
    out.append(f"taskgrid measured: {info.get('code', 'not run')}; bench at {info['commit']}")
    out.append(f"workload: {args.tasks} trivial tasks per burn-down (batches of {args.batch}), "
               f"{args.samples} latency (and round-trip) samples with "
               f"{args.gap_s * 1000:.0f} ms idle gaps, "
               f"{args.producers} producers in {args.producer_procs} processes; "
               f"taskgrid workers 2 x {args.tg_concurrency} slots; figures are medians of "
               f"rounds")
    out.append("durability:")
    for name in ("taskgrid", "taskgrid-pg", "celery", "huey"):
        if not any(s == name or s.startswith(f"{name}-") and name == "celery" for s in present):
            continue
        key = name
        if name == "huey" and args.huey_fsync == "off":
            key = "huey-fsync-off"
        if name == "taskgrid" and getattr(args, "tg_durable", False):
            key = "taskgrid-durable"
        extra = info.get(f"durability-{name}", "")
        out.append(f"  {name}: {DURABILITY[key]}{' [' + extra + ']' if extra else ''}")
    out.append("")
    out.append("Medians")
    rows = []
    shown = [s for s in present if s != "grpc-floor"]  # the floor has a table of its own
    for phase, key, label, _, digits in ROWS:
        rows.append([label] + [fmt(get(m, s, phase, key), digits) for s in shown])
    out.append(table(["figure"] + shown, rows))
    loads = []
    for s in present:
        values = [f["foreign_cores"] for ph in per_round[s].values() for f in ph
                  if "foreign_cores" in f]
        if values:
            loads.append(f"{s} {statistics.median(values):.2f} (max {max(values):.2f})")
    out.append("other load: CPU busy outside the measured processes during the measured "
               "windows, in cores of " + f"{os.cpu_count()}, median (max) over phases: "
               + ", ".join(loads))
    out.append("")
    out.append("taskgrid costs per task (coordinator CPU; transactions and RPCs from its "
               "shutdown counters, warm-up included)")
    rows = []
    for system in ("taskgrid", "taskgrid-pg"):
        for phase in PHASES[system]:
            f = m.get(system, {}).get(phase)
            if not f:
                continue
            cpu = f.get("coord_us_per_call", f.get("coord_us"))
            unit = "per call" if phase == "enqueue_only" else "per task"
            rpcs = " ".join(f"{k[4:]}={v:.3f}" for k, v in sorted(f.items())
                            if k.startswith("rpc_") and k != "rpc_per_task" and v >= 0.0005)
            rows.append([system, phase, f"{fmt(cpu)} us {unit}" if cpu is not None else "n/a",
                         f"{f.get('txn_per_task', float('nan')):.3f}",
                         f"{f.get('rpc_per_task', float('nan')):.3f}", rpcs])
    out.append(table(["system", "phase", "coordinator CPU", "transactions", "RPCs", "by method"],
                     rows))
    floor = m.get("grpc-floor", {}).get("enqueue_only")
    if floor:
        out.append("The gRPC floor: the same 50-producer burst of QueueTask calls against "
                   "bench/peers/floor_server.py (grpcio and protobuf with no work behind the "
                   "call) and against the coordinator with no worker")
        tg = m.get("taskgrid", {}).get("enqueue_only", {})
        rows = []
        for key, label, digits in (("calls_per_s", "calls/s", 0), ("call_p50", "call p50 (ms)", 2),
                                   ("call_p99", "call p99 (ms)", 2),
                                   ("coord_us_per_call", "server CPU per call (us)", 0),
                                   ("client_us", "producer CPU per call (us)", 0)):
            a, b = tg.get(key), floor.get(key)
            rows.append([label, fmt(a, digits), fmt(b, digits), fmt(ratio(a, b), 2)])
        out.append(table(["figure", "taskgrid", "grpc-floor", "taskgrid / floor"], rows))
    out.append("Ratios, taskgrid / peer (Celery: its better pool for that figure; latency and "
               "CPU: lower is better)")
    rows = []
    for phase, key, label, higher, _ in ROWS:
        tg = get(m, "taskgrid", phase, key)
        c, pool = best_celery(m, phase, key, higher)
        h = get(m, "huey", phase, key)
        rows.append([label, fmt(ratio(tg, c), 2) + (f" ({pool})" if pool else ""),
                     fmt(ratio(tg, h), 2)])
        if phase == "burn_batch" and key == "rate":
            pg = get(m, "taskgrid-pg", phase, key)
            rows.append(["burn-down, batch enqueue, PostgreSQL (tasks/s)",
                         fmt(ratio(pg, c), 2) + (f" ({pool})" if pool else ""),
                         fmt(ratio(pg, h), 2)])
    out.append(table(["figure", "vs Celery", "vs Huey"], rows))
    out.append("Targets")
    out.append(table(["target", "goal", "measured", "result"], targets(m)))
    errors = [f"  {s} {p} round {i + 1}: {r['error']}" for s, ph in raw.items()
              for p, rs in ph.items() for i, r in enumerate(rs) if "error" in r]
    lost = [f"  {s} {p}: {int(f['lost'])} lost samples (median)" for s in present
            for p in ("latency", "roundtrip") if (f := m.get(s, {}).get(p)) and f.get("lost")]
    lost += [f"  {s} roundtrip: {int(f['wrong'])} wrong results (median)" for s in present
             if (f := m.get(s, {}).get("roundtrip")) and f.get("wrong")]
    errs = [f"  {s} {p}: {int(f['errors'])} failed enqueue calls (median)" for s in present
            for p in ("producers", "enqueue_only") if (f := m.get(s, {}).get(p)) and
            f.get("errors")]
    if errors or lost or errs:
        out.append("")
        out.append("problems:")
        out.extend(errors + lost + errs)
    return "\n".join(out)


def targets(m: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "NOT MEASURED" if ok is None else ("MET" if ok else "MISSED")

    def vs_celery(phase: str, key: str, higher: bool, system: str = "taskgrid"
                  ) -> tuple[float | None, str]:
        c, pool = best_celery(m, phase, key, higher)
        r = ratio(get(m, system, phase, key), c)
        return r, ("n/a" if r is None else f"{r:.2f}x Celery ({pool})")

    rc, tc = vs_celery("burn_batch", "rate", True)
    rh = ratio(get(m, "taskgrid", "burn_batch", "rate"), get(m, "huey", "burn_batch", "rate"))
    ok = None if rc is None or rh is None else rc >= 4 and rh >= 2
    rows.append(["burn-down, batch enqueue, SQLite", ">= 4x Celery and >= 2x Huey",
                 f"{tc}, {'n/a' if rh is None else f'{rh:.2f}x'} Huey", verdict(ok)])
    r, t = vs_celery("burn_single", "rate", True)
    rows.append(["burn-down, one QueueTask per task", ">= 2x Celery", t,
                 verdict(None if r is None else r >= 2)])
    r, t = vs_celery("latency", "p50", False)
    rows.append(["queue-to-start p50", "<= 0.6x Celery's", t,
                 verdict(None if r is None else r <= 0.6)])
    r, t = vs_celery("latency", "p99", False)
    rows.append(["queue-to-start p99", "<= Celery's", t, verdict(None if r is None else r <= 1)])
    rate = get(m, "taskgrid", "producers", "calls_per_s")
    p99 = get(m, "taskgrid", "producers", "call_p99")
    ok = None if rate is None or p99 is None else rate >= 3000 and p99 <= 20
    rows.append(["50 concurrent producers", ">= 3,000 QueueTask calls/s, p99 <= 20 ms",
                 f"{fmt(rate)} calls/s, p99 {fmt(p99, 2)} ms", verdict(ok)])
    r, t = vs_celery("burn_batch", "rate", True, system="taskgrid-pg")
    rows.append(["PostgreSQL burn-down", ">= 2x Celery", t, verdict(None if r is None else r >= 2)])
    cpu = get(m, "taskgrid", "burn_batch", "coord_us")
    rows.append(["coordinator CPU per task, burn-down", "<= 150 us",
                 f"{fmt(cpu)} us", verdict(None if cpu is None else cpu <= 150)])
    cpu = get(m, "taskgrid", "enqueue_only", "coord_us_per_call")
    rows.append(["coordinator CPU per QueueTask call", "<= 0.3 ms",
                 "n/a" if cpu is None else f"{cpu / 1000:.3f} ms",
                 verdict(None if cpu is None else cpu <= 300)])
    return rows


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=10_000, help="N, tasks per burn-down and "
                   "enqueue calls per producers phase (default 10,000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", action="append", choices=systems.SYSTEMS, metavar="SYSTEM",
                   help=f"run only this system (repeatable): {', '.join(systems.SYSTEMS)}")
    p.add_argument("--phase", action="append", choices=ALL_PHASES,
                   help="run only this phase (repeatable)")
    p.add_argument("--samples", type=int, default=200,
                   help="latency samples, and round trips, per round")
    p.add_argument("--gap-s", type=float, default=0.05,
                   help="idle gap before each latency sample and each round trip")
    p.add_argument("--producers", type=int, default=50)
    p.add_argument("--producer-procs", type=int, default=5,
                   help="processes the producers are spread over (threads within)")
    p.add_argument("--batch", type=int, default=1000, help="tasks per batch enqueue call")
    p.add_argument("--tg-concurrency", type=int, default=8, help="slots per taskgrid worker")
    p.add_argument("--huey-fsync", choices=("default", "off"), default="default",
                   help="off: SqliteHuey(fsync=False), synchronous=OFF")
    p.add_argument("--tg-durable", action="store_true",
                   help="taskgrid on SQLite with the coordinator's --durable "
                        "(synchronous=FULL)")
    p.add_argument("--rev", help="measure this committed revision of taskgrid (git archive) "
                   "instead of the work tree as it is when the run starts")
    p.add_argument("--phase-timeout-s", type=float, default=0.0,
                   help="bound of each wait in a phase (default 120 s + N / 50 per s)")
    p.add_argument("--report", metavar="RESULTS_JSON",
                   help="print the report of a saved run again (no measuring)")
    args = p.parse_args()
    if args.phase_timeout_s <= 0:
        args.phase_timeout_s = 120.0 + args.tasks / 50
    return args


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    return out.stdout.strip() + (" (work tree has uncommitted changes)" if dirty else "")


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so every finally block stops what it started


def main() -> int:
    args = parse_args()
    if args.report:
        return reprint(args.report)
    chosen = [s for s in systems.SYSTEMS if not args.only or s in args.only]
    plan = {s: [p for p in PHASES[s] if not args.phase or p in args.phase] for s in chosen}
    plan = {s: ps for s, ps in plan.items() if ps}
    signal.signal(signal.SIGTERM, interrupted)
    info = {"commit": commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    folder = Path(tempfile.mkdtemp(prefix="taskgrid-compare-"))
    services: dict[str, Any] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {p: [] for p in ps}
                                                        for s, ps in plan.items()}
    started = time.monotonic()
    try:
        if any(s.startswith(("taskgrid", "grpc-floor")) for s in plan):
            services["code"] = Snapshot(folder / "code", args.rev)
            info["code"] = services["code"].describe()
        if any(s in PEERS for s in plan):
            ensure_peers_venv()
            ensure_redis_server()
            services["redis"] = systems.Redis(folder)
        if "taskgrid-pg" in plan:
            if ensure_postgres():
                services["postgres"] = systems.Postgres()
                pg = services["postgres"]
                info["durability-taskgrid-pg"] = f"{pg.version}; shown: {pg.settings}"
            else:
                log("no PostgreSQL server binaries: skipping taskgrid-pg")
                plan.pop("taskgrid-pg")
                raw.pop("taskgrid-pg")
        order = list(plan)
        for rnd in range(args.rounds):
            for system in order[rnd % len(order):] + order[:rnd % len(order)]:
                for phase in plan[system]:
                    t0 = time.monotonic()
                    where = folder / f"r{rnd + 1}-{system}-{phase}"
                    try:
                        r = run_phase(system, phase, where, args, services)
                    except Exception as exc:  # one failed phase is reported, the run goes on
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                    raw[system][phase].append(r)
                    if "durability" in r:
                        info[f"durability-{system}"] = r["durability"]
                    f = figures(phase, r, args)
                    brief = r.get("error") or " ".join(
                        f"{k}={v:.4g}" for k, v in f.items()
                        if k in ("rate", "p50", "p99", "calls_per_s", "call_p99", "coord_us",
                                 "coord_us_per_call", "e2e_rate", "foreign_cores", "rt_per_s",
                                 "lost", "wrong"))
                    log(f"round {rnd + 1}/{args.rounds} {system:14} {phase:12} "
                        f"{time.monotonic() - t0:5.1f} s  {brief}")
    finally:
        for name in ("redis", "postgres"):
            if name in services:
                services[name].stop()
    info["wall"] = f"{(time.monotonic() - started) / 60:.1f} min"
    saved = folder / "results.json"
    saved.write_text(json.dumps({"args": vars(args), "info": info, "raw": raw}, indent=1))
    print(render(args, raw, info))
    print(f"(logs and raw results in {folder}; `--report {saved}` prints this again)")
    return 0


def render(args: argparse.Namespace, raw: dict[str, Any], info: dict[str, str]) -> str:
    per_round = {s: {p: [figures(p, r, args) for r in rs] for p, rs in ph.items()}
                 for s, ph in raw.items()}
    return report(medians(per_round), args, raw, per_round, info)


def reprint(path: str) -> int:
    """The report of a saved run (results.json), from its raw per-round results."""
    saved = json.loads(Path(path).read_text())
    print(render(argparse.Namespace(**saved["args"]), saved["raw"], saved["info"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: every process the bench started has been stopped")
        sys.exit(130)
