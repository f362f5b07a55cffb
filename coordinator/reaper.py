"""Background upkeep: declare silent workers dead, close runs far past their timeout.

Like River's maintenance services: one `run_once()` step and a thin loop
around it. Both checks read only memory, so an idle coordinator does no
database work here; the database is touched only when something is found.
"""

from __future__ import annotations

import asyncio
import logging
import time

from taskgrid.coordinator import leasing
from taskgrid.coordinator.lifecycle import RunStatus
from taskgrid.coordinator.runtime import Runtime

logger = logging.getLogger(__name__)

#: ticks per heartbeat interval of the fastest worker
TICKS_PER_BEAT = 4
MIN_TICK_S = 0.05


class Reaper:
    """Finds dead workers and overdue runs."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run_once(self) -> None:
        """One pass: timers due now, dead workers, runs far past their timeout."""
        await self.rt.timers.run_once()
        registry = self.rt.registry
        for w in registry.dead():
            silent = time.monotonic() - w.last_seen
            logger.warning("worker lost worker=%s silent_s=%.1f", w.name, silent)
            await leasing.lose(self.rt, w, f"lost: no heartbeat for {silent:.1f} s")
        now_mono = time.monotonic()
        for w in [w for w in registry.by_id.values() if w.alive]:
            overdue = [leasing.Outcome(t, h.attempt, RunStatus.TIMEOUT, None,
                                       f"TimeoutError: no report from worker {w.name} within "
                                       f"{h.limit_s:.0f} s (timeout plus grace)")
                       for t, h in w.leases.items()
                       if h.started and now_mono - h.granted > h.limit_s]
            if overdue:
                # The worker learns of it when its next heartbeat lists the lease: stale.
                logger.warning("runs closed TIMEOUT by the coordinator worker=%s tasks=%s",
                               w.name, ",".join(str(o.task_id) for o in overdue))
                await leasing.finish(self.rt, w, overdue, reported=False)

    def interval_s(self) -> float:
        """How long to sleep between passes: a fraction of the fastest heartbeat."""
        beats = [w.heartbeat_s for w in self.rt.registry.by_id.values() if w.alive]
        fastest = min(beats, default=self.rt.config.heartbeat_s)
        tick = fastest / TICKS_PER_BEAT
        timer = self.rt.timers.seconds_to_next()
        if timer is not None:
            tick = min(tick, timer + 0.001)
        return max(MIN_TICK_S, tick)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Run passes until `stopping` is set; errors are logged, never fatal."""
        while not stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("reaper pass failed")
            self.rt.wake_reaper.clear()
            stop = asyncio.ensure_future(stopping.wait())
            wake = asyncio.ensure_future(self.rt.wake_reaper.wait())
            await asyncio.wait([stop, wake], timeout=self.interval_s(),
                               return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            wake.cancel()
