"""The chaos suite: thousands of tasks while workers, the coordinator and PostgreSQL die.

Small scale by default (part of `make test`); `make chaos` sets TASKGRID_CHAOS_SCALE=full
(10,000 tasks). See docs/reliability.md for what is injected and asserted, and
tests/chaos/harness.py for how executions are explained.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import ChaosRun, current_scale, current_seed

SCALE = current_scale()


@pytest.mark.timeout(SCALE.test_timeout_s)
def test_chaos(request, db_url, tmp_path, start_coordinator, start_worker, record_property):
    pg_cluster = request.getfixturevalue("pg_cluster") if db_url.startswith("postgresql") else None
    # PostgreSQL takes several coordinators: two share the load and are SIGKILLed in turn.
    run = ChaosRun(scale=SCALE, seed=current_seed(), db_url=db_url, tmp_path=tmp_path,
                   start_coordinator=start_coordinator, start_worker=start_worker,
                   pg_cluster=pg_cluster, coordinators=2 if pg_cluster is not None else 1)
    verdict = run.execute()
    record_property("chaos_summary", verdict.summary_line())
    record_property("chaos_figures", verdict.figures)
    # the latest figures per database and scale, for docs/reliability.md:
    # .pytest_cache/v/taskgrid-chaos/<db>-<scale>
    request.config.cache.set(f"taskgrid-chaos/{run.db}-{SCALE.name}",
                             {"summary": verdict.summary_line(), "figures": verdict.figures,
                              "failed": sorted(k for k, v in verdict.violations.items() if v)})
    report = verdict.report() + "\n=== faults ===\n" + run.fault_log()
    (tmp_path / "chaos-report.txt").write_text(report)
    if verdict.failed:
        pytest.fail(report, pytrace=False)
