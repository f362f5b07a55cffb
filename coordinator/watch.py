"""WatchTask: a task's status snapshots and output, from the start, until it ends.

Live chunks come from TaskFeed. When the task moves, the latest run record is
read again so the output a report carried at the very end is not missed:
whatever the watcher has not seen yet is sent as one more chunk (or, if the
text was cleared, as a chunk with clear set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from taskgrid.coordinator import tasks
from taskgrid.coordinator.lifecycle import TERMINAL_TASK_STATUSES
from taskgrid.coordinator.runtime import Runtime

Event = dict[str, Any]


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
    try:
        view = await tasks.get(rt, (task_id, None), all_runs=False)
        while True:
            for run in view.runs:
                chunk = seen.catch_up(run)
                if chunk:
                    yield chunk
            yield view.task
            if view.task["status"] in TERMINAL_TASK_STATUSES:
                return
            event = await queue.get()
            while "seq" in event:
                if seen.take(event):
                    yield event
                event = await queue.get()
            view = await tasks.get(rt, (task_id, None), all_runs=False)
    finally:
        rt.feed.unsubscribe(task_id, queue)
