"""Huey's side of bench/compare.py's workload: SqliteHuey on the bench's file.

`COMPARE_HUEY_DB` is the SQLite file; `COMPARE_HUEY_FSYNC` = "default" keeps Huey's own
setting (it sets no `synchronous` pragma, so SQLite's default FULL applies: the WAL is
fsynced on every commit) and "off" passes `fsync=False` (synchronous=OFF). A task that returns
None stores no result, so `noop` counts itself in the bench's Redis (one INCR), as the Celery
one does. `add` returns a value, which Huey stores in the same SQLite file (its result
store, on by default) for the round-trip phase's `result.get(blocking=True)`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis
from huey import SqliteHuey

REDIS_URL = os.environ.get("COMPARE_REDIS_URL", "redis://127.0.0.1:6379/0")
DONE_KEY = "compare:done"
_FSYNC = os.environ.get("COMPARE_HUEY_FSYNC", "default")

_options: dict[str, Any] = {} if _FSYNC == "default" else {"fsync": False}
huey = SqliteHuey("compare", filename=os.environ.get("COMPARE_HUEY_DB", "compare-huey.db"),
                  **_options)

_redis: redis.Redis | None = None
_udp: socket.socket | None = None


def _counter() -> redis.Redis:
    global _redis
    if _redis is None:  # made in the worker process
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


@huey.task()
def noop(i: int) -> None:
    _counter().incr(DONE_KEY)


@huey.task()
def lat(i: int, port: int) -> None:
    started = time.time()
    global _udp
    if _udp is None:
        _udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _udp.sendto(f"{i} {started!r}".encode(), ("127.0.0.1", port))


@huey.task()
def add(i: int, j: int) -> int:
    return i + j
