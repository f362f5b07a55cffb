"""The conformance suite's own fixtures: SQLite only, and a per-language summary."""

from __future__ import annotations

from collections import Counter

import pytest

# SQLite only: the suite checks workers, which see the same API whatever the coordinator
# stores in; the coordinator's PostgreSQL paths are the integration suite's business.
from tests.support.sqlite_only import db_url  # noqa: F401

_TALLY: Counter[tuple[str, str]] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each conformance scenario's outcome under its language."""
    if "tests/conformance/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        lang = next((p for p in ("python", "go", "typescript") if f"[{p}" in report.nodeid
                     or f"-{p}]" in report.nodeid), "mixed")
        _TALLY[(lang, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per worker language: how many conformance scenarios passed."""
    if not _TALLY:
        return
    terminalreporter.section("conformance by worker language")
    for lang in sorted({lang for lang, _ in _TALLY}):
        counts = {o: n for (l2, o), n in _TALLY.items() if l2 == lang}
        terminalreporter.write_line(
            f"{lang}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
