"""Print each chaos run's summary line at the end of the session (also under xdist: the
line travels in the test report's user_properties)."""

from __future__ import annotations

import pytest

_SUMMARIES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "chaos_summary":
            _SUMMARIES.append(f"{value} outcome={report.outcome}")


def pytest_terminal_summary(terminalreporter) -> None:
    if _SUMMARIES:
        terminalreporter.section("chaos summary")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)
