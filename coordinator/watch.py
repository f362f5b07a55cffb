"""WatchTask: a task's status snapshots and output, from the start, until it ends.

Live chunks come from TaskFeed. When the task moves, the latest run record is
read again so the output a report carried at the very end is not missed:
whatever the watcher has not seen yet is sent as one more chunk (or, if the
text was cleared, as a chunk with clear set).

With several coordinators, a task run through another one changes rows this
one did not write: its notification (notify.py) makes the watch read the
task again, and so does a poll every WATCH_POLL_S, so a lost notification
delays output by seconds at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from taskgrid.coordinator import tasks
from taskgrid.coordinator.lifecycle import TERMINAL_TASK_STATUSES
from taskgrid.coordinator.runtime import Runtime

Event = dict[str, Any]

#: PostgreSQL: a watch reads its task again this often, whatever it was told
WATCH_POLL_S = 2.0


class _Seen:
    """Output already sent to this watcher, per run."""

    def __init__(self) -> None:
        self.text: dict[int, str] = {}
        self.seq: dict[int, int] = {}

    def take(self, chunk: Event) -> bool:
        run_id = chunk["run_id"]
        if chunk["seq"] <= self.seq.get(run_id, 0):
            return False
        self.seq[run_id] = chunk["seq"]
        before = "" if chunk["clear"] else self.text.get(run_id, "")
        self.text[run_id] = before + chunk["data"]
        return True

    def catch_up(self, run: dict[str, Any]) -> Event | None:
        """A chunk bringing the watcher to the run's current output, if it lags."""
        full, sent = run["run_output"] or "", self.text.get(run["id"], "")
        if full == sent:
            return None
        clear = not full.startswith(sent)
        data = full if clear else full[len(sent):]
        seq = self.seq.get(run["id"], 0) + 1
        self.seq[run["id"]] = seq
        self.text[run["id"]] = full
        return {"task_id": run["task_id"], "attempt": run["attempt"], "seq": seq, "data": data,
                "clear": clear, "run_id": run["id"]}


async def watch(rt: Runtime, ref: tasks.Ref) -> AsyncIterator[Event]:
    """Yield task rows (with "status") and output chunks (with "seq") until the task ends."""
    first = await tasks.get(rt, ref, all_runs=False)
    task_id = first.task["id"]
    queue = rt.feed.subscribe(task_id)
    seen = _Seen()
    last: Event | None = None
    try:
        view = await tasks.get(rt, (task_id, None), all_runs=False)
        while True:
            for run in view.runs:
                chunk = seen.catch_up(run)
                if chunk:
                    yield chunk
            if view.task != last:  # a read-again that found nothing new sends nothing
                yield view.task
                last = view.task
            if view.task["status"] in TERMINAL_TASK_STATUSES:
                return
            event = await _next(rt, queue)
            while "seq" in event:
                if seen.take(event):
                    yield event
                event = await _next(rt, queue)
            view = await tasks.get(rt, (task_id, None), all_runs=False)
    finally:
        rt.feed.unsubscribe(task_id, queue)


async def _next(rt: Runtime, queue: asyncio.Queue[Any]) -> Event:
    """The next event, or (PostgreSQL) a read-again after WATCH_POLL_S without one."""
    if rt.store.is_sqlite:
        event: Event = await queue.get()  # this coordinator writes every change it sees
        return event
    try:
        event = await asyncio.wait_for(queue.get(), WATCH_POLL_S)
        return event
    except TimeoutError:
        return {"recheck": True}
