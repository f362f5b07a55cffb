"""What a dashboard's reads cost with many tasks: ListTasks pages and GetStats.

    .venv/bin/python bench/listing_scale.py [--tasks 1000000] [--db sqlite|URL]

Fills a fresh database with N tasks through the store (mostly COMPLETED, a few QUEUED and
FAILED, in 20 groups and 50 functions), then times, on the store's own transactions, the
queries behind the dashboard's pages: the first and a deep page of the task list (newest
first and oldest first), the list filtered by status, group, function, name, uuid and a
creation time range, the overview's GetStats (counts, the last hour, the oldest due task),
and a job's graph. Each figure is the median of 5 runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskgrid.coordinator import stats  # noqa: E402
from taskgrid.coordinator.store import Store  # noqa: E402
from taskgrid.coordinator.validation import validate_task  # noqa: E402

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def rows(n: int, start: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        row, errors = validate_task({"function_name": f"f{i % 50}", "group_name": f"g{i % 20}",
                                     "task_name": f"t{i}"}, {}, NOW)
        assert row is not None, errors
        status = "QUEUED" if i % 1000 == 0 else "FAILED" if i % 97 == 0 else "COMPLETED"
        row.update(status=status, uuid=str(uuidlib.uuid4()),
                   created_at=NOW - dt.timedelta(seconds=(10**7 - i) * 0.25))
        if status != "QUEUED":
            row["finished_at"] = row["created_at"] + dt.timedelta(seconds=1)
        out.append(row)
    return out


def timed(store: Store, body: Any) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        store.transact(body)
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--db", default="sqlite")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="taskgrid-listing-")
    url = f"sqlite:///{folder}/bench.sqlite" if args.db == "sqlite" else args.db
    store = Store(url)
    store.migrate()
    t0 = time.perf_counter()
    for start in range(0, args.tasks, 10_000):
        batch = rows(min(10_000, args.tasks - start), start)
        store.transact(lambda tx, b=batch: tx.insert_tasks(b))
    fill = time.perf_counter() - t0
    some = store.transact(lambda tx: tx.list_tasks([], {}, None, 1, oldest_first=True))[0]
    mid = args.tasks // 2
    cut = NOW - dt.timedelta(seconds=(10**7 - mid) * 0.25)
    checks = {
        "first page, newest first (50)": lambda tx: tx.list_tasks([], {}, None, 51),
        "deep page (token at the middle id)": lambda tx: tx.list_tasks([], {}, mid, 51),
        "first page, oldest first": lambda tx: tx.list_tasks([], {}, None, 51,
                                                            oldest_first=True),
        "status QUEUED (1 in 1000)": lambda tx: tx.list_tasks(["QUEUED"], {}, None, 51),
        "status FAILED (1 in 97)": lambda tx: tx.list_tasks(["FAILED"], {}, None, 51),
        "group g3 (1 in 20)": lambda tx: tx.list_tasks([], {"group_name": "g3"}, None, 51),
        "function f7 (1 in 50)": lambda tx: tx.list_tasks([], {"function_name": "f7"}, None,
                                                          51),
        "task name (exactly 1)": lambda tx: tx.list_tasks([], {"task_name": "t1234"}, None,
                                                          51),
        "uuid (exactly 1)": lambda tx: tx.list_tasks([], {"uuid": some["uuid"]}, None, 51),
        "created before the middle": lambda tx: tx.list_tasks([], {}, None, 51,
                                                              (None, cut)),
        "GetStats: counts by status and group": lambda tx: tx.count_by_status_and_group(),
        "GetStats: ends per minute, last hour": lambda tx: tx.ended_per_minute(
            NOW - dt.timedelta(hours=1)),
        "GetStats: oldest due task": lambda tx: tx.oldest_due_task(NOW),
    }
    print(f"{args.tasks:,} tasks on {url.split(':')[0]}; filled in {fill:.0f} s; "
          f"stats cache {stats.CACHE_S:g} s")
    print("| query | ms (median of 5) |\n|---|---|")
    for name, body in checks.items():
        print(f"| {name} | {timed(store, body):,.1f} |")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
