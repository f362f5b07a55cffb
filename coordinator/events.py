"""In-process signals: wake long-polling leases, feed task watchers.

The coordinator is the only writer, so a change it commits can be announced
in memory at once: a Lease call waits on `WorkSignal` instead of polling the
database, and `TaskFeed` pushes status changes and output to WatchTask
streams. Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: what a task needs of a worker to be claimed by it: (group, function, target worker or "")
Kind = tuple[str, str, str]


class _Parked:
    __slots__ = ("can_run", "capacity", "future", "runs")

    def __init__(self, can_run: Callable[[Kind], bool], capacity: int,
                 future: asyncio.Future[bool], runs: tuple[tuple[str, str], ...]) -> None:
        self.can_run = can_run
        self.capacity = capacity
        self.future = future
        self.runs = runs


class WorkSignal:
    """Fires when new work may be claimable: a task queued or requeued, a worker changed.

    `epoch` counts the signals; a waiter that saw no claimable work at epoch N
    need not ask the database again until the epoch moves or its next due time
    comes (which keeps an idle system off the database).

    Parked Lease calls wait here, oldest first. A signal about new tasks that
    are due now (`fire(kinds, count)`) wakes only as many parked calls as the
    tasks need, and only calls whose worker can run one of them; any other
    signal wakes every parked call. A call left parked still sees the epoch
    moved at its next safety poll, so a wake-up that went to a call that then
    vanished costs seconds, never a task.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self._parked: dict[int, _Parked] = {}
        #: free slots of the parked calls by (group, function): how much new work this
        #: coordinator starts at once (read from store threads: single dict reads, a hint)
        self.spare: dict[tuple[str, str], int] = {}

    def fire(self, kinds: Iterable[Kind] | None = None, count: int = 0) -> None:
        """Announce a change; with `kinds`, `count` new due tasks of those kinds."""
        self.epoch += 1
        if kinds is None:
            woken = list(self._parked)
        else:
            wanted = set(kinds)
            woken, left = [], count
            for key, parked in self._parked.items():
                if left <= 0:
                    break
                if any(parked.can_run(kind) for kind in wanted):
                    woken.append(key)
                    left -= parked.capacity
        for key in woken:
            future = self._forget(key).future
            if not future.done():
                future.set_result(True)

    def park(self, can_run: Callable[[Kind], bool], capacity: int,
             runs: tuple[tuple[str, str], ...] = ()) -> asyncio.Future[bool]:
        """A future that a signal for work this caller can run resolves (True).

        `runs`: the (group, function) pairs the caller can run, counted in `spare`.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._parked[id(future)] = _Parked(can_run, capacity, future, runs)
        for run in runs:
            self.spare[run] = self.spare.get(run, 0) + capacity
        return future

    def unpark(self, future: asyncio.Future[bool]) -> None:
        """Stop waiting (timed out, woken otherwise, or the call ended)."""
        if id(future) in self._parked:
            self._forget(id(future))

    def _forget(self, key: int) -> _Parked:
        parked = self._parked.pop(key)
        for run in parked.runs:
            left = self.spare.get(run, 0) - parked.capacity
            if left > 0:
                self.spare[run] = left
            else:
                self.spare.pop(run, None)
        return parked

    @property
    def parked(self) -> int:
        """Lease calls waiting now."""
        return len(self._parked)


def announce(signal: WorkSignal, rows: Iterable[Mapping[str, Any]], now: Any) -> None:
    """Fire for tasks just queued: targeted when all are plain tasks due now, else for all."""
    rows = list(rows)
    if not rows:
        return
    if all(r["next_run_time"] <= now and not r["broadcast"] for r in rows):
        signal.fire({(r["group_name"], r["function_name"], r["target_worker_name"])
                     for r in rows}, len(rows))
    else:
        signal.fire()


class TaskFeed:
    """Per-task subscriber queues for WatchTask streams and WaitTask calls."""

    def __init__(self) -> None:
        #: task id -> subscriber queue -> does it want output chunks (a waiter does not)
        self._subscribers: dict[int, dict[asyncio.Queue[Any], bool]] = defaultdict(dict)

    def subscribe(self, task_id: int, output: bool = True) -> asyncio.Queue[Any]:
        """A queue that receives the task's events until unsubscribed."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribers[task_id][queue] = output
        return queue

    def unsubscribe(self, task_id: int, queue: asyncio.Queue[Any]) -> None:
        """Stop feeding this queue."""
        subs = self._subscribers.get(task_id)
        if subs is not None:
            subs.pop(queue, None)
            if not subs:
                del self._subscribers[task_id]

    def watched(self) -> list[int]:
        """The ids of the tasks someone watches or waits for."""
        return list(self._subscribers)

    def waited(self) -> list[int]:
        """The ids of the tasks some subscriber wants no output of (WaitTask calls)."""
        return [t for t, subs in self._subscribers.items() if not all(subs.values())]

    @property
    def subscriptions(self) -> int:
        """Open watches and waits, all tasks together (metrics, tests)."""
        return sum(len(subs) for subs in self._subscribers.values())

    def is_watched(self, task_id: int) -> bool:
        """True when someone watches this task (so events are worth building)."""
        return task_id in self._subscribers

    def publish(self, task_id: int, event: Any) -> None:
        """Hand an event to every subscriber of the task (output only to those who want it)."""
        chunk = isinstance(event, dict) and "seq" in event
        for queue, output in self._subscribers.get(task_id, {}).items():
            if output or not chunk:
                queue.put_nowait(event)
