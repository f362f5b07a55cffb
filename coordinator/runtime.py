"""The coordinator's shared parts, handed to every operation and servicer."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from taskgrid.coordinator.clock import Clock
from taskgrid.coordinator.config import CoordinatorConfig
from taskgrid.coordinator.events import TaskFeed, WorkSignal
from taskgrid.coordinator.store import Store

if TYPE_CHECKING:
    from taskgrid.coordinator.timers import Timers
    from taskgrid.coordinator.workers import Registry


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
    #: wakes the reaper early (a timer moved closer, the clock was moved)
    wake_reaper: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
