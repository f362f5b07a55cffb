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


# -- faults found by the fuzz suite (tests/fuzz) --------------------------------------------------

import math  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _retry_task(**values):
    return {"retry_delay": 10.0, "retry_backoff": 1.0, "retry_delay_max": 0.0,
            "retry_jitter": 0.0, "times_failed": 0, **values}


def test_retry_backoff_power_never_overflows():
    # retry_failed=-1, retry_backoff=1000: 1000.0 ** 103 raised OverflowError on the ~103rd
    # consecutive failure (inside the Report transaction: INTERNAL).
    for failures in (0, 1, 2, 3, 102, 103, 1000, 10**6, 2**62):
        task = _retry_task(retry_backoff=1000.0, times_failed=failures)
        when = timing.retry_time(task, T0, lambda: 1.0)
        assert T0 <= when <= T0 + dt.timedelta(seconds=timing.MAX_DELAY_S)
    assert timing.retry_delay_s(10.0, 1000.0, 0.0, 103) == timing.MAX_DELAY_S
    assert timing.retry_delay_s(10.0, 2.0, 25.0, 1) == 20.0
    assert timing.retry_delay_s(10.0, 2.0, 25.0, 2) == 25.0


@settings(max_examples=300, deadline=None)
@given(delay=st.floats(0, timing.MAX_DELAY_S), backoff=st.floats(1, 1000),
       delay_max=st.floats(0, timing.MAX_DELAY_S), jitter=st.floats(0, 1),
       failures=st.integers(0, 2**63 - 1), r=st.floats(0, 1))
def test_retry_time_is_total_over_every_accepted_option(delay, backoff, delay_max, jitter,
                                                        failures, r):
    task = _retry_task(retry_delay=delay, retry_backoff=backoff, retry_delay_max=delay_max,
                       retry_jitter=jitter, times_failed=failures)
    seconds = timing.retry_delay_s(delay, backoff, delay_max, failures)
    assert 0 <= seconds <= min(delay_max or math.inf, timing.MAX_DELAY_S)
    assert timing.retry_time(task, T0, lambda: r) >= T0


def test_next_cron_time_near_year_9999_raises_no_cron_match():
    end = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    for line in ("* * * * *", "0 0 29 2 *", "@hourly"):
        try:
            timing.next_cron_time(line, end)
        except timing.NoCronMatchError as exc:
            assert "year 9999" in str(exc)
        else:
            raise AssertionError(f"{line} matched after {end}")


def test_next_run_time_past_year_9999_is_end_of_time_not_an_overflow():
    end = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    cron = {"period": 60, "prevent_drift": False, "cronline": "0 0 29 2 *", "start_time": T0}
    assert timing.next_run_time(cron, dt.datetime(9999, 3, 1, tzinfo=dt.UTC)) == \
        timing.END_OF_TIME
    period = {"period": 3600, "prevent_drift": False, "cronline": None, "start_time": T0}
    assert timing.next_run_time(period, end) == timing.END_OF_TIME
    grid = {"period": 3600, "prevent_drift": True, "cronline": None, "start_time": T0}
    assert timing.next_run_time(grid, end) == timing.END_OF_TIME
    assert timing.retry_time(_retry_task(retry_delay=3600.0), end, lambda: 0.5) == \
        timing.END_OF_TIME
