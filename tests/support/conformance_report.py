"""The conformance suite's per-language summary, one line per worker language at the end.

Hooks of tests/conftest.py (imported there): with xdist the controller, which prints the
summary, loads only the top conftest, never tests/conformance's.
"""

from __future__ import annotations

from collections import Counter

import pytest

LANGS = ("python", "go", "typescript")
_TALLY: Counter[tuple[str, str]] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each conformance scenario's outcome under its language ("mixed" for a fleet)."""
    if "tests/conformance/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        params = report.nodeid.rpartition("[")[2].rstrip("]").split("-")
        lang = next((p for p in params if p in LANGS), "mixed")
        _TALLY[(lang, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per worker language: how many conformance scenarios passed."""
    if not _TALLY:
        return
    terminalreporter.section("conformance by worker language")
    for lang in sorted({lang for lang, _ in _TALLY}):
        counts = {outcome: n for (each, outcome), n in _TALLY.items() if each == lang}
        terminalreporter.write_line(
            f"{lang}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
