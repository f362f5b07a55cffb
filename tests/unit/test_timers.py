"""Timers: a moment noted while the database is being read for the moments is kept.

A read runs on a snapshot that may predate a task queued meanwhile; assigning the
read's answer alone lost that task's stop_time (it then never expired). The store
here is a stand-in that holds the read open until the test has noted a moment: the
rule under test is the merge in memory, not SQL (tests/store covers the queries).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from typing import Any

from taskgrid.coordinator.timers import Timers

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class HeldStore:
    """`run(body)` answers `answer` once `release` is set, like a slow transaction."""

    def __init__(self, answer: tuple[Any, ...]) -> None:
        self.answer = answer
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, body: Any) -> tuple[Any, ...]:
        self.started.set()
        await self.release.wait()
        return self.answer


def timers(store: HeldStore) -> Timers:
    rt = types.SimpleNamespace(store=store, wake_reaper=asyncio.Event(),
                               clock=types.SimpleNamespace(now=lambda: T0),
                               config=types.SimpleNamespace(worker_retention_s=60.0,
                                                            task_retention_s=0.0))
    return Timers(rt)  # type: ignore[arg-type]


async def noted_during(store: HeldStore, t: Timers, job: Any, rows: list[dict[str, Any]]) -> None:
    task = asyncio.ensure_future(job)
    await store.started.wait()
    t.note(rows)
    store.release.set()
    await task


def test_a_stop_time_noted_during_load_survives_an_empty_read() -> None:
    async def main() -> None:
        store = HeldStore((None, None, None, None))
        t = timers(store)
        await noted_during(store, t, t.load(), [{"stop_time": T0}])
        assert t.next_expiry == T0
        assert not t._reads  # the read's record is gone with it
    asyncio.run(main())


def test_the_earlier_of_the_read_and_the_note_wins() -> None:
    async def main() -> None:
        later = T0 + dt.timedelta(hours=1)
        store = HeldStore((later, T0, None, None))
        t = timers(store)
        await noted_during(store, t, t.load(),
                           [{"stop_time": T0, "broadcast": True, "next_run_time": later}])
        assert (t.next_expiry, t.next_broadcast) == (T0, T0)
    asyncio.run(main())


def test_a_note_after_the_read_ended_is_not_kept_by_it() -> None:
    async def main() -> None:
        store = HeldStore((None, None, None, None))
        store.release.set()
        t = timers(store)
        t.next_expiry = T0  # stale: the task it stood for has gone
        await t.load()
        assert t.next_expiry is None
    asyncio.run(main())
