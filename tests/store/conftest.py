"""Fixtures of the store conformance suite: a migrated Store per backend, and task helpers.

Every test here runs on both backends through `db_url` (tests/conftest.py): [sqlite] on a
fresh file, [postgres] on a fresh database of the session's throwaway cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from taskgrid.coordinator.store import Store
from tests.store.helpers import Tasks


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated Store on this test's fresh database."""
    s = Store(db_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def open_store(db_url: str, store: Store) -> Iterator[Callable[[], Store]]:
    """Factory: another Store (its own engine and connections) on the same database."""
    made: list[Store] = []

    def make() -> Store:
        s = Store(db_url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def tasks(store: Store) -> Tasks:
    """Task helpers on `store`."""
    return Tasks(store)
