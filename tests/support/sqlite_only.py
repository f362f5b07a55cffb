"""A `db_url` fixture for tests whose subject never reaches the database layer.

A test module that checks the CLI, TLS, tokens, the wire encoding or what a worker does
imports it (`from tests.support.sqlite_only import db_url`) to run on SQLite alone: both
databases answer such tests through the same API, and the PostgreSQL half only doubled the
suite's time. The store and the coordinator's own tests keep both databases.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(name="db_url")
def db_url(tmp_path: Path) -> str:
    """SQLite only (tests/conftest.py's db_url also gives PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'taskgrid.sqlite'}"
