"""In-process signals: wake long-polling leases, feed task watchers.

The coordinator is the only writer, so a change it commits can be announced
in memory at once: a Lease call waits on `WorkSignal` instead of polling the
database, and `TaskFeed` pushes status changes and output to WatchTask
streams. Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from typing import Any


class WorkSignal:
    """Fires when new work may be claimable: a task queued or requeued, a worker changed.

    `epoch` counts the signals; a waiter that saw no claimable work at epoch N
    need not ask the database again until the epoch moves or its next due time
    comes (which keeps an idle system off the database).
    """

    def __init__(self) -> None:
        self.epoch = 0
        self._event = asyncio.Event()
        self.earliest_due: dt.datetime | None = None

    def fire(self, due: dt.datetime | None = None) -> None:
        """Announce a change; `due` is the next_run_time of new work, when known."""
        self.epoch += 1
        if due is not None and (self.earliest_due is None or due < self.earliest_due):
            self.earliest_due = due
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next fire; False on timeout."""
        if timeout_s <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class TaskFeed:
    """Per-task subscriber queues for WatchTask streams."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[Any]]] = defaultdict(set)

    def subscribe(self, task_id: int) -> asyncio.Queue[Any]:
        """A queue that receives the task's events until unsubscribed."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribers[task_id].add(queue)
        return queue

    def unsubscribe(self, task_id: int, queue: asyncio.Queue[Any]) -> None:
        """Stop feeding this queue."""
        subs = self._subscribers.get(task_id)
        if subs is not None:
            subs.discard(queue)
            if not subs:
                del self._subscribers[task_id]

    def is_watched(self, task_id: int) -> bool:
        """True when someone watches this task (so events are worth building)."""
        return task_id in self._subscribers

    def publish(self, task_id: int, event: Any) -> None:
        """Hand an event to every watcher of the task."""
        for queue in self._subscribers.get(task_id, ()):
            queue.put_nowait(event)
