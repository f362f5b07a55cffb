"""Fixtures of the fuzz suite: one real coordinator per database per module.

The shared `coordinator` fixture is function-scoped; hypothesis sends hundreds of requests
per test, so this one starts a coordinator once per module and database (a SQLite file, or
a fresh database in the session's PostgreSQL cluster) and keeps it for every test of the
module. Its summary line (requests sent, codes seen) is printed at the end, even under
capture; from an xdist worker, whose output pytest does not show, it is a FuzzSummary
warning in the warnings summary.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import pytest

from tests.fuzz.harness import FuzzApi, FuzzSummary, elapsed, fuzz_seed, uncaptured
from tests.support.processes import TestProcesses

#: one seed for the whole run, printed in every summary and failure
SEED = fuzz_seed()


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
])
def api(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzApi]:
    """A FuzzApi on a coordinator of its own, on a fresh database of the parameter's kind."""
    import time

    started = time.monotonic()
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"fuzz-{kind}")
    drop = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'fuzz.sqlite'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        name = cluster.create_database()
        url = cluster.url(name)

        def drop() -> None:
            cluster.drop_database(name)
    processes = TestProcesses(tmp)
    fuzz = None
    try:
        fuzz = FuzzApi(kind, url, processes, SEED)
        yield fuzz
    finally:
        processes.stop_all()
        if fuzz is not None:
            fuzz.close()
            line = f"{fuzz.summary()}, {elapsed(started)}"
            if os.environ.get("TASKGRID_FUZZ_VERBOSE"):
                line += "\n" + fuzz.by_method_table()
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            if worker:  # an xdist worker's output is not shown: its warnings are
                warnings.warn(FuzzSummary(f"{line} (xdist {worker})"), stacklevel=1)
            else:
                with uncaptured(request.config):
                    print(f"\n{line}", flush=True)
        if drop is not None:
            with contextlib.suppress(Exception):
                drop()
