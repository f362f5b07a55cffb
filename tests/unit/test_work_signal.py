"""WorkSignal: new due tasks wake as many parked Lease calls as they need, of the right kind."""

from __future__ import annotations

import asyncio
import datetime as dt

from taskgrid.coordinator.events import WorkSignal, announce

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def runs(groups: set[str], functions: set[str], name: str):
    return lambda kind: kind[0] in groups and kind[1] in functions and kind[2] in ("", name)


def test_targeted_fire_wakes_only_enough_matching_callers_oldest_first() -> None:
    async def main() -> None:
        signal = WorkSignal()
        other = signal.park(runs({"main"}, {"g"}, "w0"), 8)  # cannot run f
        first = signal.park(runs({"main"}, {"f"}, "w1"), 2)
        second = signal.park(runs({"main"}, {"f"}, "w2"), 2)
        third = signal.park(runs({"main"}, {"f"}, "w3"), 2)
        epoch = signal.epoch
        signal.fire({("main", "f", "")}, 3)  # 3 tasks: two callers of 2 slots suffice
        assert signal.epoch == epoch + 1
        assert first.done() and second.done()
        assert not third.done() and not other.done()
        assert signal.parked == 2
        signal.fire({("main", "f", "w9")}, 1)  # a broadcast child for w9: nobody here
        assert not third.done()
        signal.fire()  # any other change wakes everyone
        assert third.done() and other.done() and signal.parked == 0

    asyncio.run(main())


def test_unpark_and_announce() -> None:
    async def main() -> None:
        signal = WorkSignal()
        gone = signal.park(runs({"main"}, {"f"}, "w1"), 1)
        signal.unpark(gone)  # its call timed out: a signal must not count it
        waiting = signal.park(runs({"main"}, {"f"}, "w2"), 1)
        row = {"group_name": "main", "function_name": "f", "target_worker_name": "",
               "next_run_time": NOW, "broadcast": False}
        announce(signal, [row], NOW)
        assert waiting.done() and not gone.done()
        later = signal.park(runs({"main"}, {"g"}, "w3"), 1)
        announce(signal, [{**row, "next_run_time": NOW + dt.timedelta(seconds=5)}], NOW)
        assert later.done()  # future work: every caller looks (and learns its due time)
        announce(signal, [], NOW)  # nothing queued: no signal
        assert signal.epoch == 2

    asyncio.run(main())
