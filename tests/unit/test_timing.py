"""next_run_time rules (semantics.md §7.2)."""

from __future__ import annotations

import datetime as dt

from taskgrid.coordinator import timing

T0 = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)


def test_period_without_drift_counts_from_run_start():
    t = {"period": 60, "prevent_drift": False, "cronline": None, "start_time": T0}
    start = T0 + dt.timedelta(seconds=7.5)
    assert timing.next_run_time(t, start) == start + dt.timedelta(seconds=60)


def test_prevent_drift_uses_grid_anchored_at_start_time():
    # web2py observation: start_time - 60 s, period 3; runs at +66 s and +90 s -> 69 s and 93 s
    anchor = T0 - dt.timedelta(seconds=60)
    t = {"period": 3, "prevent_drift": True, "cronline": None, "start_time": anchor}
    assert timing.next_run_time(t, anchor + dt.timedelta(seconds=66)) == \
        anchor + dt.timedelta(seconds=69)
    assert timing.next_run_time(t, anchor + dt.timedelta(seconds=90)) == \
        anchor + dt.timedelta(seconds=93)


def test_cron_next_match_is_strictly_after_at_minute_resolution():
    t = {"period": 60, "prevent_drift": False, "cronline": "*/5 * * * *", "start_time": T0}
    assert timing.next_run_time(t, T0 + dt.timedelta(minutes=1, seconds=30)) == \
        T0 + dt.timedelta(minutes=5)
    assert timing.next_run_time(t, T0 + dt.timedelta(minutes=5)) == T0 + dt.timedelta(minutes=10)


def test_cron_error_gives_the_parser_message():
    assert timing.cron_error("*/5 * * * *") is None
    assert timing.cron_error("* *")
    assert timing.cron_error("99 * * * *")
