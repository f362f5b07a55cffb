"""The web dashboard in a real browser (issue 13 point 4): fixtures.

What runs: a real coordinator on a SQLite file and real workers (tests/conftest.py), the
dashboard as a real process (`python -m taskgrid dashboard --coordinator ADDR --listen
127.0.0.1:0`, ready once it prints `dashboard listening on http://HOST:PORT`), and Debian's
Chromium (/usr/bin/chromium, headless) driven by Playwright for Python.

Setting up a fresh machine: `make test` runs `make browser-tools` (scripts/ensure_browser.sh
installs Debian's `chromium` package when /usr/bin/chromium is missing) and installs the dev
extra, which holds `playwright`. Playwright's own browser download (`playwright install`) is
never used and does not work here: the browser is launched with
``executable_path=/usr/bin/chromium`` (``$TASKGRID_CHROMIUM`` overrides it). Without Chromium or
Playwright these tests are skipped, with the reason.

- `browser`: one Chromium per test module (not per session: Playwright's sync API would keep
  an event loop marked running for other modules' asyncio tests); `page`: a fresh context (no
  cookies) and page per test, closed before the dashboard stops.
- `start_dashboard(coordinator=None, *, token=None, require_login=False)` starts a dashboard
  and returns it (`.url`); `dashboard` is one on the test's coordinator with no login.
- `shot(page, name)` saves a full-page screenshot to
  test-artifacts/screenshots/<test>-<name>.png at the repository root; every file a test
  took is checked to exist and be non-empty at its teardown.
- Tests wait on conditions only (Playwright's auto-waiting `expect`, `wait_until` on the
  coordinator's state): never fixed sleeps.
- Every browser test runs on SQLite only: `db_url` is overridden here with the SQLite case of
  tests/conftest.py's.

Run them alone with `.venv/bin/python -m pytest -q tests/browser`.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    DEFAULT_READY_TIMEOUT_S,
    ChildProcess,
    CoordinatorProcess,
    TestProcesses,
    stop_all,
)

CHROMIUM = os.environ.get("TASKGRID_CHROMIUM", "/usr/bin/chromium")
#: the one line the dashboard prints on stdout once it serves (with its newline)
READY_LINE = re.compile(r"dashboard listening on (http://\S+:\d+)/?[ \t\r]*\n")
#: Playwright's default wait for a condition (ms); a test passes longer ones where it must
DEFAULT_TIMEOUT_MS = 10_000
#: Chromium flags: this machine's network is closed, so nothing may reach out at start
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
]  # fmt: skip
_DASHBOARDS = pytest.StashKey[list["DashboardProcess"]]()

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
from tests.browser.pages import SCREENSHOTS  # noqa: E402 (it needs playwright)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The browser tests run on SQLite only (a fresh file under tmp_path)."""
    return f"sqlite:///{tmp_path / 'taskgrid.sqlite'}"


# -- the dashboard process ----------------------------------------------------------------------


class DashboardProcess(ChildProcess):
    """A `taskgrid dashboard` child; `.url` (http://HOST:PORT, no trailing slash) once it serves."""

    kind = "dashboard"

    def __init__(
        self, name: str, argv: list[str], log_path: Path, cwd: Path, env: dict[str, str]
    ) -> None:
        super().__init__(name, log_path, cwd, env)
        self._argv = argv
        self.url = ""

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> DashboardProcess:
        """Start it and return once it has printed the address it serves on."""
        self._spawn(self._argv)

        def bound_url() -> str | None:
            match = READY_LINE.search(self.log_text(since_start=True))
            if match:
                return match.group(1).rstrip("/")
            self._fail_if_exited("it printed its address")
            return None

        self.url = self._wait(bound_url, timeout, f"{self.name} to print its address")
        return self


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing browser test's report carries the dashboards' log tails too."""
    report = yield
    if report.failed:
        for dash in item.stash.get(_DASHBOARDS, []):
            if dash.proc is not None:
                report.sections.append(
                    (f"dashboard {dash.name} log tail ({dash.log_path})", dash.log_tail())
                )
    return report


@pytest.fixture
def start_dashboard(
    request: pytest.FixtureRequest, processes: TestProcesses, tmp_path: Path
) -> Iterator[Callable[..., DashboardProcess]]:
    """Factory: start_dashboard(coordinator=None, *, token=None, require_login=False,
    extra_args=()) -> DashboardProcess; by default on the coordinator this test started last
    (else the `coordinator` fixture). Every dashboard is stopped at teardown."""
    started: list[DashboardProcess] = []
    request.node.stash[_DASHBOARDS] = started

    def start(
        coordinator: CoordinatorProcess | str | None = None,
        *,
        token: str | None = None,
        require_login: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> DashboardProcess:
        if coordinator is None:
            coordinator = (processes.coordinators[-1] if processes.coordinators
                           else request.getfixturevalue("coordinator"))
        address = coordinator if isinstance(coordinator, str) else coordinator.address
        argv = [
            sys.executable, "-m", "taskgrid", "dashboard",
            "--coordinator", address, "--listen", "127.0.0.1:0",
        ]  # fmt: skip
        if token:
            argv += ["--token", token]
        if require_login:
            argv.append("--require-login")
        name = f"dashboard-{len(started) + 1}"
        dash = DashboardProcess(name, [*argv, *extra_args], tmp_path / f"{name}.log",
                                tmp_path, dict(processes.env))
        started.append(dash)
        return dash.start()

    try:
        yield start
    finally:
        # an open event stream must not hold a dashboard past a short grace
        killed = stop_all(started, grace_s=3.0)
        if killed:
            warnings.warn(f"{', '.join(killed)} did not exit after SIGTERM and were SIGKILLed",
                          stacklevel=1)


@pytest.fixture
def dashboard(
    start_dashboard: Callable[..., DashboardProcess], coordinator: CoordinatorProcess
) -> str:
    """The URL of a dashboard on the `coordinator` fixture, without login."""
    return start_dashboard(coordinator).url


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per test module, driven by Playwright.

    Not per session: between its calls, Playwright's sync API leaves its event loop marked
    as running in the thread, so a later test of another module in the same pytest process
    (`make test` runs pytest-xdist) could not call asyncio.run(). Module scope ends it before
    pytest moves to another module's test."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: run `make browser-tools` (scripts/ensure_browser.sh)")
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, start_dashboard: Callable[..., DashboardProcess]) -> Iterator[Any]:
    """A page in a fresh browser context (its own cookies), closed before any dashboard stops.

    JavaScript errors the pages throw are collected; the test fails at teardown if any."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(f"{tab.url}: {error}"))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the dashboard's pages: {errors}"


@pytest.fixture
def new_page(
    browser: Any, start_dashboard: Callable[..., DashboardProcess]
) -> Iterator[Callable[[], Any]]:
    """Factory of further pages, each in its own fresh context (another user's session),
    closed before any dashboard stops."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Iterator[Callable[[Any, str], Path]]:
    """shot(page, name): a full-page screenshot to test-artifacts/screenshots/<test>-<name>.png.

    At teardown every screenshot the test took must exist and be non-empty."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    taken: list[Path] = []

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    yield take
    for path in taken:
        assert path.is_file() and path.stat().st_size > 0, f"screenshot {path} missing or empty"
