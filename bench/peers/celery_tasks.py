"""Celery's side of bench/compare.py's workload: Redis broker, no result backend.

`COMPARE_REDIS_URL` names the bench's throwaway Redis. Celery keeps no record of a finished
task without a result backend, so `noop` counts itself in Redis (one INCR): that counter is
how the bench sees the burn-down end.

`COMPARE_CELERY_RESULTS=1` (set by bench/peers/systems.py for the round-trip phase only)
gives the app a Redis result backend on the same Redis, for `add`, the one task that keeps
its result (`ignore_result=False`; every other task still ignores its result), so the client
can wait on `AsyncResult.get`. Every other phase runs with no result backend, as before.
"""

from __future__ import annotations

import os
import socket
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("COMPARE_REDIS_URL", "redis://127.0.0.1:6379/0")
DONE_KEY = "compare:done"

RESULTS = os.environ.get("COMPARE_CELERY_RESULTS") == "1"

app = Celery("compare", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=REDIS_URL if RESULTS else None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)

_redis: redis.Redis | None = None
_udp: socket.socket | None = None


def _counter() -> redis.Redis:
    global _redis
    if _redis is None:  # made in the pool child, after the fork
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


@app.task(name="noop")
def noop(i: int) -> None:
    _counter().incr(DONE_KEY)


@app.task(name="lat")
def lat(i: int, port: int) -> None:
    started = time.time()
    global _udp
    if _udp is None:
        _udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _udp.sendto(f"{i} {started!r}".encode(), ("127.0.0.1", port))


@app.task(name="add", ignore_result=False)
def add(i: int, j: int) -> int:
    return i + j
