"""Fixtures shared by every test: databases and real coordinator and worker processes.

- `db_url` runs a test once per backend, ids `sqlite` (a fresh file under tmp_path) and
  `postgres` (a fresh database in the session's throwaway cluster, see tests/support/postgres.py;
  skipped with its reason where PostgreSQL is not installed).
- `coordinator` / `start_coordinator(**opts)` start `taskgrid coordinator` on `db_url`;
  `start_worker(name=None, **opts)` starts `taskgrid worker` with tests/support/sample_tasks.py;
  `client` is a `taskgrid.client.Scheduler` on the coordinator.
- Every child is ended at teardown (SIGTERM, then SIGKILL of its whole session), and a failing
  test's report carries the tail of every child's log.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Make `tests.support` importable however pytest was started (`pytest`, `python -m pytest`).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import postgres as pg  # noqa: E402
from tests.support.conformance_report import (  # noqa: E402, F401  (hooks)
    pytest_runtest_logreport,
    pytest_terminal_summary,
)
from tests.support.processes import (  # noqa: E402
    CoordinatorProcess,
    TestProcesses,
    WorkerProcess,
)

POSTGRES_MARKER = "postgres"
_PROCESSES = pytest.StashKey[TestProcesses]()
_PG_LOG = pytest.StashKey[Path]()
PG_MISSING_REASON = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under "
    f"{pg.DEFAULT_PG_ROOT}/*/bin, ${pg.BINDIR_ENV} or PATH: install the postgresql package"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{POSTGRES_MARKER}: needs the throwaway PostgreSQL cluster (skipped, with the reason, "
        "where PostgreSQL is not installed)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    bindir = pg.find_bindir()
    if bindir is None:
        return "postgresql: not installed; PostgreSQL tests will be skipped"
    return f"postgresql: {pg.server_version(bindir)} ({bindir})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, and add child log tails to a failure's report."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    if report.failed:
        processes = item.stash.get(_PROCESSES, None)
        if processes is not None:
            report.sections.extend(processes.log_sections())
        pg_log = item.stash.get(_PG_LOG, None)
        if pg_log is not None and pg_log.exists():
            tail = "\n".join(pg_log.read_text(errors="replace").splitlines()[-30:])
            report.sections.append((f"postgres server log tail ({pg_log})", tail))
    return report


# -- databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use and stopped at session end."""
    bindir = pg.find_bindir()
    if bindir is None:
        pytest.skip(PG_MISSING_REASON)
    cluster = pg.PostgresCluster(bindir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, pg_cluster: pg.PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster; its name. Dropped at teardown."""
    name = pg_cluster.create_database()
    request.node.stash[_PG_LOG] = pg_cluster.log_path
    yield name
    with contextlib.suppress(Exception):
        pg_cluster.drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'taskgrid.sqlite'}"
    cluster: pg.PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.url(request.getfixturevalue("pg_database"))


# -- processes ----------------------------------------------------------------------------------


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestProcesses]:
    """Every child process of this test; all are ended at teardown, even after a failure."""
    children = TestProcesses(tmp_path)
    request.node.stash[_PROCESSES] = children
    try:
        yield children
    finally:
        children.stop_all()
    if children.needed_kill:
        warnings.warn(
            f"{', '.join(children.needed_kill)} did not exit after SIGTERM and were SIGKILLed",
            stacklevel=1,
        )


@pytest.fixture
def state_dir(processes: TestProcesses) -> Path:
    """The folder children see as $TASKGRID_TEST_STATE_DIR (fail_times keeps counters there)."""
    return processes.state_dir


@pytest.fixture
def start_coordinator(processes: TestProcesses, db_url: str) -> Callable[..., CoordinatorProcess]:
    """Factory: start_coordinator(heartbeat=0.5, extra_args=(), listen="127.0.0.1:0",
    db_url=<this test's db_url>, env=None, ready_timeout=20.0, access=PLAIN) -> CoordinatorProcess.

    `access` (tests/support/processes.Access: TLS files, admin token) is how the readiness
    probe, and workers' registration checks, reach a secured coordinator."""

    def start(**opts: Any) -> CoordinatorProcess:
        return processes.start_coordinator(opts.pop("db_url", db_url), **opts)

    return start


@pytest.fixture
def coordinator(start_coordinator: Callable[..., CoordinatorProcess]) -> CoordinatorProcess:
    """A coordinator on this test's database with the test defaults (heartbeat 0.5 s)."""
    return start_coordinator()


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest,
    processes: TestProcesses,
    start_coordinator: Callable[..., CoordinatorProcess],
) -> Callable[..., WorkerProcess]:
    """Factory: start_worker(name=None, *, coordinator=None, heartbeat=0.5, tasks=<sample_tasks>,
    groups=(), extra_args=(), env=None, ready=True, ready_timeout=20.0, access=<coordinator's>)
    -> WorkerProcess.

    `coordinator` is a CoordinatorProcess or an address; by default the one this test started
    last, else the `coordinator` fixture.
    """

    def start(
        name: str | None = None,
        *,
        coordinator: CoordinatorProcess | str | None = None,
        **opts: Any,
    ) -> WorkerProcess:
        if coordinator is None:
            if processes.coordinators:
                coordinator = processes.coordinators[-1]
            else:
                coordinator = request.getfixturevalue("coordinator")
        if isinstance(coordinator, str):
            address = coordinator
        else:  # list the worker the way the test reaches its coordinator (TLS, token)
            address = coordinator.address
            opts.setdefault("access", coordinator.access)
        return processes.start_worker(address, name, **opts)

    return start


@pytest.fixture
def client(coordinator: CoordinatorProcess) -> Iterator[Any]:
    """A taskgrid.client.Scheduler connected to the `coordinator` fixture."""
    from taskgrid.client import Scheduler

    scheduler = Scheduler(coordinator.address)
    try:
        yield scheduler
    finally:
        close = getattr(scheduler, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


@pytest.fixture
def clocked(db_url: str) -> Iterator[Any]:
    """A coordinator in this process on a ManualClock (tests/support/inprocess.py)."""
    from tests.support.inprocess import InProcessCoordinator

    coordinator = InProcessCoordinator(db_url)
    try:
        yield coordinator
    finally:
        coordinator.stop()
