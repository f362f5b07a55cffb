"""A coordinator running inside the test process, on a ManualClock.

Cron lines, long periods, retry delays and stop times are tested by moving the
clock instead of waiting. Workers are still real processes, started with
`start_worker(coordinator=<this>.address)`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

from taskgrid.coordinator.app import Coordinator, create_server
from taskgrid.coordinator.clock import ManualClock
from taskgrid.coordinator.config import CoordinatorConfig

#: a Monday, 00:00:30 UTC: minutes and days are easy to reason about
DEFAULT_START = dt.datetime(2030, 1, 7, 0, 0, 30, tzinfo=dt.UTC)


class InProcessCoordinator:
    """create_server on its own event loop thread; `.clock` moves its time."""

    def __init__(self, db_url: str, start: dt.datetime = DEFAULT_START,
                 heartbeat_s: float = 0.5, **settings: Any) -> None:
        self.clock = ManualClock(start)
        self.config = CoordinatorConfig(db_url=db_url, listen="127.0.0.1:0",
                                        heartbeat_s=heartbeat_s, **settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="inprocess-coordinator")
        self._thread.start()
        self.coordinator: Coordinator = self._call(create_server(self.config, self.clock))
        self.address = f"127.0.0.1:{self.coordinator.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def advance(self, seconds: float) -> None:
        """Move the coordinator's clock forward."""
        self.clock.advance(seconds)

    def now(self) -> dt.datetime:
        """The coordinator's current time."""
        return self.clock.now()

    def stop(self) -> None:
        """Stop serving and the loop thread."""
        self._call(self.coordinator.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
