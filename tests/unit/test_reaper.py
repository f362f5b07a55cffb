"""reaper.find: what one reconcile pass must repair, from the rows, the live sessions and `now`.

`now` is a parameter: the backstop's timeout arithmetic is tested here without a clock.
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskgrid.coordinator import reaper
from taskgrid.coordinator.reaper import Findings

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
GRACE = 5.0


def leased(task_id, worker, *, status="RUNNING", attempt=1, started_s_ago=0.0, timeout=60,
           stop=False):
    """A row as Tx.leased_tasks returns it."""
    last = None if status == "ASSIGNED" else NOW - dt.timedelta(seconds=started_s_ago)
    return {"id": task_id, "attempt": attempt, "assigned_worker_name": worker, "status": status,
            "stop_requested": stop, "last_run_time": last, "timeout": timeout,
            "started": status == "RUNNING"}


def alive(worker_id, name):
    """A row as Tx.workers(alive_only=True) returns it (the columns find reads)."""
    return {"id": worker_id, "worker_name": name, "alive": True}


LIVE = {"w1": 1, "w2": 2}
ALIVE_ROWS = [alive(1, "w1"), alive(2, "w2")]


def find(rows, alive_rows=ALIVE_ROWS, live=LIVE, now=NOW, grace_s=GRACE, orphans=0):
    return reaper.find(rows, alive_rows, live, now, grace_s, orphans)


def test_nothing_is_flagged_when_all_is_well():
    rows = [leased(1, "w1", started_s_ago=10), leased(2, "w2", status="ASSIGNED"),
            leased(3, "w2", started_s_ago=60 + GRACE)]  # exactly at the limit: not yet
    assert find(rows) == Findings({}, [], [], 0)
    assert find([], [], {}) == Findings({}, [], [], 0)


def test_orphan_children_count_is_passed_through():
    assert find([], orphans=3).orphan_children == 3


# -- the timeout backstop ------------------------------------------------------------------------


def test_running_rows_past_timeout_plus_grace_are_overdue():
    late = leased(1, "w1", started_s_ago=60 + GRACE + 0.001)
    on_time = leased(2, "w1", started_s_ago=60 + GRACE - 0.001)
    long_timeout = leased(3, "w2", started_s_ago=100, timeout=3600)
    short = leased(4, "w2", started_s_ago=2 + GRACE + 1, timeout=2)
    found = find([late, on_time, long_timeout, short])
    assert [r["id"] for r in found.overdue] == [1, 4]
    assert found.overdue[0] is late  # the lease row itself (runs.time_out reads its columns)
    assert found.lost_leases == {} and found.dead_rows == []


def test_the_backstop_follows_the_injected_now():
    row = leased(1, "w1", started_s_ago=0, timeout=10)
    for seconds, overdue in ((0, False), (10, False), (10 + GRACE, False),
                             (10 + GRACE + 1, True), (10**6, True)):
        now = NOW + dt.timedelta(seconds=seconds)
        assert bool(find([row], now=now).overdue) is overdue, seconds
    assert find([row], now=NOW - dt.timedelta(hours=1)).overdue == []  # clock went back


def test_grace_is_added_to_the_timeout():
    row = leased(1, "w1", started_s_ago=70, timeout=60)
    assert find([row], grace_s=5).overdue == [row]
    assert find([row], grace_s=15).overdue == []
    assert find([row], grace_s=0).overdue == [row]


def test_assigned_rows_and_rows_without_a_start_are_never_overdue():
    assigned = leased(1, "w1", status="ASSIGNED")
    assigned["last_run_time"] = NOW - dt.timedelta(days=1)  # an old run's time: not this one
    unstarted = leased(2, "w1", started_s_ago=0)
    unstarted["last_run_time"] = None
    assert find([assigned, unstarted]).overdue == []


def test_a_stop_request_does_not_change_the_backstop():
    row = leased(1, "w1", started_s_ago=1000, stop=True)
    assert find([row]).overdue == [row]


# -- leases of no live session -------------------------------------------------------------------


def test_leases_of_names_with_no_live_session_are_lost():
    rows = [leased(1, "gone", attempt=3, started_s_ago=10),
            leased(2, "w1", started_s_ago=10),
            leased(3, "gone", status="ASSIGNED", attempt=1),
            leased(4, "other", started_s_ago=10**5)]  # overdue too: lost wins, not timed out
    found = find(rows)
    assert found.lost_leases == {"gone": [(1, 3), (3, 1)], "other": [(4, 1)]}
    assert found.overdue == []
    assert found.dead_rows == []


def test_with_no_live_session_every_lease_is_lost():
    rows = [leased(1, "w1"), leased(2, "w2", status="ASSIGNED")]
    found = find(rows, alive_rows=[], live={})
    assert found.lost_leases == {"w1": [(1, 1)], "w2": [(2, 1)]}


# -- alive rows with no live session --------------------------------------------------------------


def test_alive_rows_with_no_live_session_are_dead():
    rows = [alive(1, "w1"), alive(2, "w2"), alive(3, "after-restart")]
    assert find([], alive_rows=rows).dead_rows == [(3, "after-restart")]


def test_an_alive_row_whose_name_has_a_session_under_another_id_is_dead():
    # w1 registered again: its live session is row 7, the old row 1 is still marked alive
    rows = [alive(1, "w1"), alive(7, "w1"), alive(2, "w2")]
    found = find([leased(5, "w1")], alive_rows=rows, live={"w1": 7, "w2": 2})
    assert found.dead_rows == [(1, "w1")]
    assert found.lost_leases == {}  # the name is live: its leases are the new session's


@pytest.mark.parametrize("live", [{}, {"w2": 2}])
def test_dead_rows_and_their_leases_are_both_reported(live):
    found = find([leased(1, "w1")], alive_rows=[alive(1, "w1")], live=live)
    assert found.dead_rows == [(1, "w1")]
    assert found.lost_leases == {"w1": [(1, 1)]}  # reconcile gives them back with the row


def row(worker_id, name, *, silent_s, node="other", heartbeat=1.0):
    """A live worker row as the node beat reads it."""
    return {"id": worker_id, "worker_name": name, "alive": True, "node_name": node,
            "heartbeat": heartbeat, "last_heartbeat": NOW - dt.timedelta(seconds=silent_s)}


def dead_after(heartbeat):
    return 3 * heartbeat


def test_rows_nobody_refreshed_for_dead_after_plus_a_beat_are_silent():
    rows = [row(1, "fresh", silent_s=1.0), row(2, "late", silent_s=3.5),
            row(3, "gone", silent_s=4.5), row(4, "slow", silent_s=4.5, heartbeat=2.0)]
    found = reaper.silent_rows(rows, {}, NOW, healthy_s=100.0, dead_after=dead_after,
                               node="me")
    assert [r["worker_name"] for r in found] == ["gone"]  # 3 s + a 1 s beat; slow has 7 s


def test_this_nodes_own_sessions_are_judged_from_memory_not_rows():
    rows = [row(1, "mine", silent_s=60.0, node="me"), row(2, "moved", silent_s=60.0,
                                                         node="other")]
    found = reaper.silent_rows(rows, {1: object(), 2: object()}, NOW, healthy_s=100.0,
                               dead_after=dead_after, node="me")
    assert [r["worker_name"] for r in found] == ["moved"]


def test_silence_counts_only_for_as_long_as_this_node_has_seen_the_rows_refreshed():
    rows = [row(1, "w", silent_s=60.0)]
    assert reaper.silent_rows(rows, {}, NOW, healthy_s=2.0, dead_after=dead_after,
                              node="me") == []
    assert reaper.silent_rows(rows, {}, NOW, healthy_s=4.5, dead_after=dead_after,
                              node="me") == rows


def test_runs_of_unheard_workers_are_left_to_the_dead_worker_check():
    rows = [leased(1, "w1", started_s_ago=100), leased(2, "w2", started_s_ago=100)]
    found = reaper.find(rows, [], {"w1": 1, "w2": 2}, NOW, GRACE, unheard=frozenset({"w2"}))
    assert [r["id"] for r in found.overdue] == [1]
