"""The coordinator's shared parts, handed to every operation and servicer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from taskgrid.coordinator.auth import Tokens
from taskgrid.coordinator.clock import Clock
from taskgrid.coordinator.config import CoordinatorConfig
from taskgrid.coordinator.events import TaskFeed, WorkSignal
from taskgrid.coordinator.groupcommit import Crowd
from taskgrid.coordinator.leases import Leases
from taskgrid.coordinator.store import Store

if TYPE_CHECKING:
    from taskgrid.coordinator.cluster import Cluster
    from taskgrid.coordinator.metrics import Metrics
    from taskgrid.coordinator.reaper import Reaper
    from taskgrid.coordinator.timers import Timers
    from taskgrid.coordinator.workers import Registry

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Runtime:
    """Config, clock, store and the in-memory state built on them."""

    config: CoordinatorConfig
    clock: Clock
    store: Store
    signal: WorkSignal
    feed: TaskFeed
    registry: Registry = dataclasses.field(init=False)
    timers: Timers = dataclasses.field(init=False)
    reaper: Reaper = dataclasses.field(init=False)
    #: this node among the coordinators of the database: leadership, serving (cluster.py)
    cluster: Cluster = dataclasses.field(init=False)
    #: some dependency edge may be unmet (loaded at start; set by jobs.py before it writes
    #: edges): while False, claims skip the prerequisite check and reports skip the release
    deps_possible: bool = True
    #: QueueTask(s) callers: while they come in a crowd, their inserts share commits
    producers: Crowd = dataclasses.field(default_factory=Crowd)
    #: the in-memory lease mirror (its only writer is leases.Leases' API)
    leases: Leases = dataclasses.field(default_factory=Leases)
    #: wakes the reaper early (a timer moved closer, the clock was moved, a worker went silent)
    wake_reaper: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: the bearer tokens and their roles (empty: no authentication)
    tokens: Tokens = dataclasses.field(default_factory=Tokens)
    #: the Prometheus metrics, when --metrics-listen is given
    metrics: Metrics | None = None
    #: clean-ups that must outlive the call that started them (a cancelled Lease's hand-back)
    background: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run `coro` to its end even though its caller is gone; errors are logged."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("%s failed: %r", what, t.exception())
        task.add_done_callback(done)

    async def drain_background(self) -> None:
        """Wait for pending clean-ups (at shutdown)."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)


async def repeat(step: Callable[[], Awaitable[None]], every_s: float, stopping: asyncio.Event,
                 what: str) -> None:
    """Run `step` every `every_s` seconds until `stopping` is set.

    A failing step is logged and tried again at the next turn, never fatal: the
    background loops (node beat, health, metrics) must outlive any one failure.
    """
    while not stopping.is_set():
        try:
            await step()
        except Exception:
            logger.exception("%s failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)
