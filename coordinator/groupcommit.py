"""The store's executor: threads that run queued transaction bodies, many per commit.

Every call that needs the database queues a body (`fn(tx)`) and awaits a
future. A store thread takes everything queued (up to MAX_BATCH bodies), runs
them in one transaction and commits once, then resolves all their futures in
one hop back to the event loop. Under load this turns N queue, claim and
report calls into one commit, one fsync in durable mode, and two thread hops;
an idle call still costs one transaction, as before.

Isolation is kept: if any body raises, the shared transaction rolls back and
each body runs again alone, in its own transaction, so a body's outcome never
depends on its neighbours. Bodies only touch the database (memory is told
after the commit, by their callers), so running one twice is safe.

A body whose caller was cancelled before it ran is skipped, as a
thread-pool executor would skip it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: bodies run in one transaction at most: bounds a rollback's rerun and a commit's size
MAX_BATCH = 64

Body = Callable[[Any], Any]
#: (ok, result or exception) per body
Outcome = tuple[bool, Any]


class GroupCommit:
    """Threads that run queued bodies through `run_batch`, several per transaction.

    Args:
        run_batch: runs bodies in one transaction (rerunning each alone on a
            failure) and returns one outcome per body; called on a store thread.
        threads: store threads (1 for SQLite, the pool size for PostgreSQL).
    """

    def __init__(self, run_batch: Callable[[Sequence[Body]], list[Outcome]], threads: int,
                 name: str = "taskgrid-store") -> None:
        self._run_batch = run_batch
        self._pending: collections.deque[tuple[Body, asyncio.Future[Any],
                                               asyncio.AbstractEventLoop]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        #: bodies and batches run so far (read by the shutdown line and bench/)
        self.bodies = 0
        self.batches = 0
        self._threads = [threading.Thread(target=self._loop, name=f"{name}_{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, body: Body) -> asyncio.Future[Any]:
        """Queue `body`; the future resolves with its result once its transaction ended."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._pending.append((body, future, loop))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch: list[tuple[Body, asyncio.Future[Any], asyncio.AbstractEventLoop]] = []
                while self._pending and len(batch) < MAX_BATCH:
                    item = self._pending.popleft()
                    if not item[1].cancelled():
                        batch.append(item)
            if not batch:
                continue
            outcomes = self._run_batch([body for body, _, _ in batch])
            self.bodies += len(batch)
            self.batches += 1
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]]
            by_loop = {}
            for (_, future, loop), outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, results in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, results)
                except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                    pass


def _resolve(results: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    for future, (ok, value) in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
