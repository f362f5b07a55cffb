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

With no threads (`threads=0`, SQLite unless durable) the bodies run on the event
loop itself: the first body queued in a loop iteration schedules one drain, which
runs everything queued by then in one transaction (a body may also linger up to
LINGER_S for company: QueueTask inserts do while producers call concurrently, and
so do the claims they wake; see `Crowd`). That saves the thread hop, and
the GIL round trips the sqlite3 module makes at every statement while the loop
thread is busy, which together cost more than a small body on SQLite. It is only
used where commits are short: no fsync per commit, no network round trip.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: bodies run in one transaction at most: bounds a rollback's rerun and a commit's size
MAX_BATCH = 64
#: how long a body may linger for company, when its caller asks (inline mode; see submit):
#: QueueTask inserts while producers call concurrently, and the claims they wake
LINGER_S = 0.001

Body = Callable[[Any], Any]
#: (ok, result or exception) per body
Outcome = tuple[bool, Any]
#: a queued body, its caller's future and that caller's loop
Item = tuple[Body, asyncio.Future[Any], asyncio.AbstractEventLoop]


class GroupCommit:
    """Threads that run queued bodies through `run_batch`, several per transaction.

    Args:
        run_batch: runs bodies in one transaction (rerunning each alone on a
            failure) and returns one outcome per body; called on a store thread.
        threads: store threads (the pool size for PostgreSQL, 1 for durable SQLite),
            or 0 to run the bodies on the event loop (see the module docstring).
    """

    def __init__(self, run_batch: Callable[[Sequence[Body]], list[Outcome]], threads: int,
                 name: str = "taskgrid-store") -> None:
        self._run_batch = run_batch
        self._pending: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        #: bodies and batches run so far (read by the shutdown line and bench/)
        self.bodies = 0
        self.batches = 0
        self._inline = threads == 0
        self._draining = False
        #: inline mode: a drain is scheduled for this loop iteration / after a linger
        self._soon = False
        self._timer: asyncio.TimerHandle | None = None
        self._threads = [threading.Thread(target=self._loop, name=f"{name}_{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, body: Body, linger_s: float = 0.0) -> asyncio.Future[Any]:
        """Queue `body`; the future resolves with its result once its transaction ended.

        `linger_s` (inline mode): the body may wait this long for others to share its
        commit, unless a body that does not linger comes first. Store threads ignore it:
        they batch whatever queued while they were busy.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._inline:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._pending.append((body, future, loop))
            if linger_s <= 0:
                if not self._soon:
                    self._soon = True
                    loop.call_soon(self._drain)
            elif not self._soon and self._timer is None:
                self._timer = loop.call_later(linger_s, self._drain)
            return future
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._pending.append((body, future, loop))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Run what is queued, then stop the threads (inline: wait for the loop's drain)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._inline and (self._pending or self._draining):
                loop = self._pending[0][2] if self._pending else None
                if loop is not None and not loop.is_running() or _on_loop_thread():
                    break  # nobody else will drain: do it here, below
                self._cond.wait(0.05)  # the loop drains it; close() runs off the loop
        if self._inline and self._pending:
            self._drain()
        for t in self._threads:
            t.join()

    def _drain(self) -> None:
        """Inline mode: run everything queued, on the event loop, a batch per commit."""
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._cond:
            self._draining = True
        try:
            while self._pending:
                batch = self._take()
                if batch:
                    _resolve([(future, outcome) for (_, future, _), outcome
                              in self._execute(batch)])
        finally:
            with self._cond:
                self._draining = False
                self._cond.notify_all()

    def _execute(self, batch: list[Item]) -> list[tuple[Item, Outcome]]:
        """Run one batch through `run_batch`; each queued item with its outcome."""
        outcomes = self._run_batch([body for body, _, _ in batch])
        self.bodies += len(batch)
        self.batches += 1
        return list(zip(batch, outcomes, strict=True))

    def _take(self) -> list[Item]:
        """Up to MAX_BATCH queued bodies whose callers still wait."""
        batch: list[Item] = []
        while self._pending and len(batch) < MAX_BATCH:
            item = self._pending.popleft()
            if not item[1].cancelled():
                batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._take()
            if not batch:
                continue
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]]
            by_loop = {}
            for (_, future, loop), outcome in self._execute(batch):
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, results in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, results)
                except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                    pass


def _on_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _resolve(results: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    for future, (ok, value) in results:
        if future.cancelled():
            continue
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except RuntimeError:  # its loop closed meanwhile: nobody waits any more
            pass


class Crowd:
    """Whether callers of one kind (QueueTask producers) come in a crowd right now.

    While they do, their bodies linger up to LINGER_S to share a commit (inline
    mode; store threads batch on their own). A caller is in a crowd when another's
    body waits for its commit, or the previous one came less than `gap_s` before
    (shorter than one caller's round trip), or less than `peer_gap_s` before from
    another connection. A lone caller, whose next call comes after its answer on
    its one connection, never waits.
    """

    def __init__(self, gap_s: float = 0.0005, peer_gap_s: float = 0.002,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gap_s = gap_s
        self.peer_gap_s = peer_gap_s
        self._clock = clock
        self._last = (-1e9, "")  # clock time and connection of the previous arrival
        self._waiting = 0  # bodies of this kind waiting for their commit

    def arrive(self, source: str) -> float:
        """A caller from connection `source` is about to submit: how long it may linger."""
        now = self._clock()
        gap = now - self._last[0]
        crowded = (self._waiting > 0 or gap < self.gap_s
                   or gap < self.peer_gap_s and source != self._last[1])
        self._last = (now, source)
        return LINGER_S if crowded else 0.0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a body's submit and await: counts it as waiting for its commit."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    def joining(self) -> float:
        """The linger for a body of another kind that may share the crowd's commit."""
        return LINGER_S if self._waiting else 0.0
