"""The conformance suite's fixture: SQLite only (its summary: tests/support/conformance_report)."""

from __future__ import annotations

# SQLite only: the suite checks workers, which see the same API whatever the coordinator
# stores in; the coordinator's PostgreSQL paths are the integration suite's business.
from tests.support.sqlite_only import db_url  # noqa: F401
