"""The in-memory lease mirror (coordinator/leases.py), driven with explicit monotonic times.

`grant` and `listing` take `now_mono`; `start`, `end(reported=True)`, the recent-report
grace of `stale` and `replace` read the module's clock, which the `mono` fixture replaces.
"""

from __future__ import annotations

import types

import pytest

from taskgrid.coordinator import leases as leases_mod
from taskgrid.coordinator.leases import (
    ORPHAN_AFTER_MISSES,
    RECENT_GRACE_BEATS,
    Held,
    Leases,
    Orphans,
)

BEAT = 1.0
T0 = 1000.0


class FakeMonotonic:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def mono(monkeypatch):
    fake = FakeMonotonic(T0)
    monkeypatch.setattr(leases_mod, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def book(mono):
    return Leases()


def test_the_rule_constants():
    assert ORPHAN_AFTER_MISSES == 2
    assert RECENT_GRACE_BEATS == 4.0


# -- grant, reads ---------------------------------------------------------------------------


def test_grant_and_reads(book):
    assert book.count_all() == 0 and book.count(1) == 0 and book.of_worker(1) == {}
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(1, 11, 3, started=False, now_mono=T0 + 1)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    assert book.count_all() == 3 and book.count(1) == 2 and book.count(2) == 1
    assert book.get(11) == Held(worker_id=1, attempt=3, started=False, granted=T0 + 1)
    assert book.get(99) is None
    mine = book.of_worker(1)
    assert sorted(mine) == [10, 11]
    mine.clear()  # a copy
    assert book.count(1) == 2


def test_grant_without_now_uses_the_module_clock(book, mono):
    mono.now = 5.0
    book.grant(1, 10, 1, started=False)
    assert book.get(10).granted == 5.0


def test_grant_again_moves_the_lease(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(2, 10, 2, started=False, now_mono=T0 + 5)
    assert book.count(1) == 0 and book.of_worker(1) == {}
    assert book.get(10) == Held(2, 2, False, T0 + 5)
    assert book.count_all() == 1


def test_start_marks_started_and_restarts_the_clock(book, mono):
    book.grant(1, 10, 1, started=False, now_mono=T0)
    mono.now = T0 + 30
    book.start(10)
    held = book.get(10)
    assert held.started is True and held.granted == T0 + 30
    book.start(99)  # unknown: nothing happens
    assert book.count_all() == 1


# -- end, end_many, stale --------------------------------------------------------------------


def test_end_and_end_many(book):
    for task_id in (10, 11, 12):
        book.grant(1, task_id, 1, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    book.end(10)
    book.end(10)  # twice: nothing more
    book.end(99)
    assert sorted(book.of_worker(1)) == [11, 12]
    book.end_many([11, 12, 20, 98])
    assert book.count_all() == 0 and book.count(1) == 0 and book.count(2) == 0
    assert book.of_worker(1) == {}


def test_stale_lists_refs_this_worker_does_not_hold(book):
    book.grant(1, 10, 2, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    refs = [(20, 1), (10, 2), (10, 1), (99, 1), (20, 1)]
    assert book.stale(1, refs, BEAT) == [(10, 1), (20, 1), (99, 1)]  # sorted, once each
    assert book.stale(1, [(10, 2)], BEAT) == []
    assert book.stale(2, refs, BEAT) == [(10, 1), (10, 2), (99, 1)]
    assert book.stale(1, [], BEAT) == []


def test_a_reported_end_is_tolerated_for_a_few_beats_in_heartbeats_only(book, mono):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(1, 11, 1, started=True, now_mono=T0)
    book.end(10, reported=True)  # the worker reported it
    book.end(11)  # the coordinator took it away
    ref, taken = (10, 1), (11, 1)
    assert book.stale(1, [ref, taken], BEAT) == [ref, taken]  # reports, output: stale
    assert book.stale(1, [ref, taken], BEAT, tolerate_recent=True) == [taken]
    assert book.stale(2, [ref], BEAT, tolerate_recent=True) == [ref]  # another worker's
    assert book.stale(1, [(10, 2)], BEAT, tolerate_recent=True) == [(10, 2)]  # another attempt
    mono.now = T0 + RECENT_GRACE_BEATS * BEAT - 0.01
    assert book.stale(1, [ref], BEAT, tolerate_recent=True) == []
    mono.now = T0 + RECENT_GRACE_BEATS * BEAT
    assert book.stale(1, [ref], BEAT, tolerate_recent=True) == [ref]
    mono.now = T0  # forgotten once past the grace: not tolerated again
    assert book.stale(1, [ref], BEAT, tolerate_recent=True) == [ref]


def test_the_recent_grace_scales_with_the_heartbeat(book, mono):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.end(10, reported=True)
    mono.now = T0 + 10
    assert book.stale(1, [(10, 1)], 5.0, tolerate_recent=True) == []  # 10 s < 4 x 5 s
    assert book.stale(1, [(10, 1)], 2.0, tolerate_recent=True) == [(10, 1)]  # 10 s >= 8 s


# -- stops ------------------------------------------------------------------------------------


def test_stop_requests_and_telling_them(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(1, 11, 4, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    assert book.stops(1) == [] and not book.untold_stops(1)
    assert not book.request_stop(10, 2)  # another attempt
    assert not book.request_stop(99, 1)
    assert book.stops(1) == []
    assert book.request_stop(11, 4) and book.request_stop(10, 1)
    assert book.stops(1) == [(10, 1), (11, 4)] and book.stops(2) == []
    assert book.untold_stops(1) and not book.untold_stops(2)
    book.mark_stops_told(1)
    assert not book.untold_stops(1)
    assert book.stops(1) == [(10, 1), (11, 4)]  # still stops: heartbeats send them again
    assert book.get(10).stop_told and book.get(11).stop_told
    book.grant(1, 12, 1, started=True, now_mono=T0)
    assert not book.get(12).stop_told  # told only what was pending
    assert book.request_stop(12, 1)
    assert book.untold_stops(1)  # a new one is untold
    book.end(12)
    assert not book.untold_stops(1)


def test_mark_stops_told_leaves_leases_without_a_stop_alone(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.mark_stops_told(1)
    assert book.get(10).stop_told is False
    assert book.request_stop(10, 1) and book.untold_stops(1)


# -- drop_worker --------------------------------------------------------------------------------


def test_drop_worker_forgets_its_leases_and_recent_reports(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(1, 11, 1, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    book.end(11, reported=True)
    book.drop_worker(1)
    assert book.count(1) == 0 and book.get(10) is None
    assert book.stale(1, [(11, 1)], BEAT, tolerate_recent=True) == [(11, 1)]
    assert book.count(2) == 1 and book.get(20) is not None
    book.drop_worker(3)  # unknown: nothing happens


# -- listing: the two-misses rule, the one-interval grace -------------------------------------


def test_listing_two_misses_in_a_row_orphan_a_lease(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)  # never listed
    book.grant(1, 11, 1, started=True, now_mono=T0)  # listed, then dropped
    book.grant(1, 12, 1, started=True, now_mono=T0)  # always listed
    later = T0 + 2 * BEAT
    assert book.listing(1, [(11, 1), (12, 1)], BEAT, now_mono=later) == Orphans([], [])
    assert book.get(11).listed and not book.get(10).listed
    assert book.get(10).missed == 1
    assert book.listing(1, [(12, 1)], BEAT, now_mono=later + 1) == Orphans([10], [])
    assert book.get(11).missed == 1  # one miss is no evidence
    assert book.listing(1, [(12, 1)], BEAT, now_mono=later + 2) == Orphans([10], [11])
    assert book.get(12).missed == 0
    # the listing reports, it does not end: the caller takes them back
    assert book.count(1) == 3


def test_listing_a_lease_again_resets_its_misses(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    now = T0 + 2 * BEAT
    assert book.listing(1, [], BEAT, now_mono=now) == Orphans([], [])
    assert book.listing(1, [(10, 1)], BEAT, now_mono=now + 1) == Orphans([], [])
    assert book.get(10).missed == 0
    assert book.listing(1, [], BEAT, now_mono=now + 2) == Orphans([], [])  # one miss again
    assert book.listing(1, [], BEAT, now_mono=now + 3) == Orphans([], [10])  # listed before


def test_listing_spares_a_lease_granted_within_one_interval(book):
    book.grant(1, 10, 1, started=False, now_mono=T0)
    for dt in (0.0, 0.5, BEAT):  # a beat built before the Lease reply arrived: no evidence
        assert book.listing(1, [], BEAT, now_mono=T0 + dt) == Orphans([], [])
    assert book.get(10).missed == 0
    assert book.listing(1, [], BEAT, now_mono=T0 + BEAT + 0.01) == Orphans([], [])
    assert book.listing(1, [], BEAT, now_mono=T0 + BEAT + 0.02) == Orphans([10], [])


def test_listing_grace_restarts_when_a_prefetched_lease_starts(book, mono):
    book.grant(1, 10, 1, started=False, now_mono=T0)
    assert book.listing(1, [], BEAT, now_mono=T0 + 2) == Orphans([], [])  # miss 1
    mono.now = T0 + 2.5
    book.start(10)
    assert book.listing(1, [], BEAT, now_mono=T0 + 3) == Orphans([], [])  # within the grace
    assert book.get(10).missed == 1
    assert book.listing(1, [], BEAT, now_mono=T0 + 4) == Orphans([10], [])


def test_listing_of_one_worker_leaves_the_others_alone(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    for i in range(3):
        assert book.listing(1, [(10, 1)], BEAT, now_mono=T0 + 5 + i) == Orphans([], [])
    assert book.get(20).missed == 0
    assert book.listing(3, [(10, 1)], BEAT, now_mono=T0 + 9) == Orphans([], [])  # none held


def test_listing_matches_by_task_id(book):
    # a listed task id counts as held whatever the attempt: stale() judges attempts
    book.grant(1, 10, 2, started=True, now_mono=T0)
    for i in range(3):
        assert book.listing(1, [(10, 1)], BEAT, now_mono=T0 + 5 + i) == Orphans([], [])


def test_listing_without_now_uses_the_module_clock(book, mono):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    mono.now = T0 + 5
    book.listing(1, [], BEAT)
    assert book.listing(1, [], BEAT) == Orphans([10], [])
    book.grant(1, 11, 1, started=True)  # granted now by the module clock: within the grace
    assert book.listing(1, [], BEAT) == Orphans([10], [])
    assert book.get(11).missed == 0


# -- replace: the reconcile pass -------------------------------------------------------------


def row(task_id, worker, attempt=1, started=True, stop=False):
    return {"id": task_id, "assigned_worker_name": worker, "attempt": attempt,
            "started": started, "stop_requested": stop}


def test_replace_rebuilds_from_the_rows(book, mono):
    book.grant(1, 10, 1, started=True, now_mono=T0)  # matches: kept with its bookkeeping
    book.grant(1, 11, 1, started=True, now_mono=T0)  # row gone: removed
    book.grant(1, 12, 1, started=True, now_mono=T0)  # row at a newer attempt: replaced
    book.grant(2, 13, 1, started=False, now_mono=T0)  # row says another worker: replaced
    book.listing(1, [(10, 1)], BEAT, now_mono=T0 + 5)
    book.listing(1, [], BEAT, now_mono=T0 + 6)
    book.request_stop(10, 1)
    book.mark_stops_told(1)
    mono.now = T0 + 50
    added, removed = book.replace(
        [row(10, "w1"), row(12, "w1", attempt=2), row(13, "w1", started=False),
         row(14, "w2", stop=True), row(15, "gone")], {"w1": 1, "w2": 2})
    assert (added, removed) == (3, 3)
    assert sorted(book.of_worker(1)) == [10, 12, 13] and sorted(book.of_worker(2)) == [14]
    assert book.get(15) is None  # a worker with no live session: left to the reaper
    kept = book.get(10)
    assert (kept.granted, kept.missed, kept.listed, kept.stop, kept.stop_told) == (
        T0, 1, True, True, True)
    assert book.get(12) == Held(1, 2, True, T0 + 50)
    assert book.get(13) == Held(1, 1, False, T0 + 50)
    assert book.get(14).stop is True and book.get(14).stop_told is False
    assert book.replace([row(10, "w1"), row(12, "w1", attempt=2), row(13, "w1", started=False),
                         row(14, "w2", stop=True)], {"w1": 1, "w2": 2}) == (0, 0)


def test_replace_merges_started_and_stop_from_the_rows(book):
    book.grant(1, 10, 1, started=False, now_mono=T0)
    assert book.replace([row(10, "w1", started=True, stop=True)], {"w1": 1}) == (0, 0)
    held = book.get(10)
    assert held.started and held.stop and held.granted == T0
    # the rows never unset what memory knows (a start or stop may be newer than the read)
    assert book.replace([row(10, "w1", started=False, stop=False)], {"w1": 1}) == (0, 0)
    assert held.started and held.stop


def test_replace_with_no_rows_or_no_live_worker_empties_the_mirror(book):
    book.grant(1, 10, 1, started=True, now_mono=T0)
    book.grant(2, 20, 1, started=True, now_mono=T0)
    assert book.replace([row(10, "w1"), row(20, "w2")], {}) == (0, 2)
    assert book.count_all() == 0 and book.count(1) == 0
    assert book.replace([], {"w1": 1}) == (0, 0)
