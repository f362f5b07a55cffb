"""WaitTask: answer when a task ends, at no database cost while it waits.

A waiter subscribes to the task's feed (events.TaskFeed, without output) and
reads the task once (twice when named by uuid), then sleeps until an event says the task moved to a
terminal status, or that it must look again (a notification from another
coordinator, a listener reconnect, a deletion). Status events for a
non-terminal move (a repeat queued again, a retry) cost nothing.

With several coordinators on PostgreSQL, a task may end through another one:
its notification (notify.py) wakes the waiter. As a safety net for a lost
notification, one read every WAIT_POLL_S checks the status of every task this
coordinator's waiters wait for, all at once: the cost does not grow with the
number of waiters. SQLite (one coordinator, which writes every change it sees)
needs no poll.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskgrid.coordinator import tasks
from taskgrid.coordinator.lifecycle import TERMINAL_TASK_STATUSES
from taskgrid.coordinator.runtime import Runtime, repeat
from taskgrid.coordinator.store import Tx

#: the longest one WaitTask call waits (clients wait longer by calling again)
MAX_WAIT_S = 3600.0
#: how long a call with no timeout and no deadline waits
DEFAULT_WAIT_S = 60.0
#: PostgreSQL with other coordinators: how often the waited tasks are read, all together
WAIT_POLL_S = 5.0


async def wait(rt: Runtime, ref: tasks.Ref, timeout_s: float) -> tuple[bool, tasks.TaskView]:
    """(ended, the task with its latest run) once it ends or `timeout_s` has passed.

    By id, the waiter subscribes first and reads once; by uuid it reads once to learn
    the id, and again after subscribing, so an end in between is never missed.
    """
    task_id = ref[0]
    if task_id is None:
        view = await tasks.get(rt, ref, all_runs=False)
        if view.task["status"] in TERMINAL_TASK_STATUSES or timeout_s <= 0:
            return view.task["status"] in TERMINAL_TASK_STATUSES, view
        task_id = view.task["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    queue = rt.feed.subscribe(task_id, output=False)
    try:
        view = await tasks.get(rt, (task_id, None), all_runs=False)
        while view.task["status"] not in TERMINAL_TASK_STATUSES:
            event = await _next(queue, deadline - loop.time())
            if event is None:
                return False, view
            if "status" in event and event["status"] not in TERMINAL_TASK_STATUSES:
                continue  # a move that does not end it: nothing to read
            view = await tasks.get(rt, (task_id, None), all_runs=False)
        return True, view
    finally:
        rt.feed.unsubscribe(task_id, queue)


async def _next(queue: asyncio.Queue[Any], left_s: float) -> dict[str, Any] | None:
    if left_s <= 0:
        return None
    try:
        event: dict[str, Any] = await asyncio.wait_for(queue.get(), left_s)
    except TimeoutError:
        return None
    return event


async def safety_loop(rt: Runtime, stopping: asyncio.Event) -> None:
    """PostgreSQL: every WAIT_POLL_S, one read of the waited tasks' statuses (see module doc)."""
    async def step() -> None:
        ids = rt.feed.waited()
        if not ids or not rt.store.peers:
            return  # alone, this coordinator wrote (and announced) every change itself

        def read(tx: Tx) -> dict[int, str]:
            return tx.task_statuses(ids)
        statuses = await rt.store.run(read)
        for task_id in ids:
            status = statuses.get(task_id)
            if status is None or status in TERMINAL_TASK_STATUSES:
                rt.feed.publish(task_id, {"recheck": True})
    await repeat(step, WAIT_POLL_S, stopping, "wait safety poll")
