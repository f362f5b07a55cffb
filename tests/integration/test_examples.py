"""The client examples (examples/go, examples/ts) against a real coordinator and worker.

Each test builds its example (the Go one with `go build` into tmp_path, the TypeScript one
with `npm ci`, kept in examples/ts/node_modules, and `tsc` into tmp_path), starts a
coordinator and a worker offering `add` (tests/support/sample_tasks.py), runs the example
and checks that it prints the result, 3, and exits 0. The second test of each runs it against
a coordinator with TLS and tokens (--tls-ca, $TASKGRID_TOKEN) and checks the exit codes of a
refused call, a failed task and bad arguments.
They skip only where go or node is not installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.certs import CertFiles, make_certs
from tests.support.processes import Access, CoordinatorProcess

ROOT = Path(__file__).resolve().parents[2]
GO_EXAMPLE = ROOT / "examples" / "go"
TS_EXAMPLE = ROOT / "examples" / "ts"
#: seconds an example may take to queue, wait and print (the task itself is instant)
RUN_TIMEOUT_S = 30
BUILD_TIMEOUT_S = 240
TOKENS = {"client": "example-client-token-0123456789",
          "worker": "example-worker-token-0123456789",
          "admin": "example-admin-token-0123456789"}


def _go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the examples test the client side, not the database."""
    return f"sqlite:///{tmp_path / 'taskgrid.sqlite'}"


@pytest.fixture
def go_example(tmp_path: Path) -> list[str]:
    """The Go example, built into tmp_path (go's build cache keeps later builds quick)."""
    go = _go()
    if go is None:
        pytest.skip("go is not installed")
    binary = tmp_path / "taskgrid-example-go"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_EXAMPLE, check=True,
                   env={**os.environ, "CGO_ENABLED": "0"}, timeout=BUILD_TIMEOUT_S)
    return [str(binary)]


def _npm_ci_once() -> None:
    """`npm ci` in examples/ts unless node_modules is current; one process at a time."""
    with open(TS_EXAMPLE / ".npm-ci.lock", "w") as lock:  # concurrent pytest runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = TS_EXAMPLE / "node_modules" / ".package-lock.json"
        wanted = TS_EXAMPLE / "package-lock.json"
        if (installed.exists() and (TS_EXAMPLE / "node_modules" / ".bin" / "tsc").exists()
                and installed.stat().st_mtime >= wanted.stat().st_mtime):
            return
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=TS_EXAMPLE, check=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture
def ts_example(tmp_path: Path) -> list[str]:
    """The TypeScript example, compiled into tmp_path with the pinned tsc."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    _npm_ci_once()
    out = tmp_path / "dist"
    subprocess.run([str(TS_EXAMPLE / "node_modules" / ".bin" / "tsc"), "--outDir", str(out)],
                   cwd=TS_EXAMPLE, check=True, timeout=BUILD_TIMEOUT_S)
    # Compiled outside examples/ts, so its packages are found through NODE_PATH.
    return ["env", f"NODE_PATH={TS_EXAMPLE / 'node_modules'}", node, str(out / "main.js")]


def run_example(program: list[str], coordinator: str, *args: str, token: str | None = None,
                tls_ca: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKGRID_TOKEN", "TASKGRID_TLS_CA")}
    env["TASKGRID_COORDINATOR"] = coordinator
    if token is not None:
        env["TASKGRID_TOKEN"] = token
    if tls_ca is not None:
        env["TASKGRID_TLS_CA"] = tls_ca
    return subprocess.run([*program, *args], env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "pki")


@pytest.fixture
def secured(start_coordinator: Callable[..., CoordinatorProcess],
            start_worker: Callable[..., object], tmp_path: Path, certs: CertFiles
            ) -> CoordinatorProcess:
    """A coordinator with TLS and client, worker and admin tokens, and a worker on it."""
    path = tmp_path / "tokens"
    path.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    coordinator = start_coordinator(
        extra_args=["--tokens-file", str(path), "--tls-cert", str(certs.server_cert),
                    "--tls-key", str(certs.server_key)],
        access=Access(ca=certs.ca, token=TOKENS["admin"]))
    start_worker(env={"TASKGRID_TOKEN": TOKENS["worker"]}, extra_args=["--tls-ca", str(certs.ca)])
    return coordinator


def _check_add(program: list[str], coordinator: CoordinatorProcess,
               text_args: tuple[str, ...] = ()) -> None:
    # The default task is add [1, 2]; the address comes from $TASKGRID_COORDINATOR.
    done = run_example(program, coordinator.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3", (done.stdout, done.stderr)
    assert "ended TASK_STATUS_COMPLETED" in done.stderr
    # Flags: another function and arguments, the address as a list whose first entry is away.
    done = run_example(program, coordinator.address, "--coordinator",
                       f"127.0.0.1:1,{coordinator.address}", "--function", "add",
                       "--args", "[40, 2]")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42", (done.stdout, done.stderr)
    assert "127.0.0.1:1 is unavailable, trying the next address" in done.stderr
    # Keyword arguments; and integers past 2**53 stay exact as JSON text (args, not args_value).
    done = run_example(program, coordinator.address, "--args", "[1]", "--vars", '{"b": 4}')
    assert (done.returncode, done.stdout.strip()) == (0, "5"), done.stderr
    done = run_example(program, coordinator.address, "--args", "[9007199254740993, 1]",
                       *text_args)
    assert (done.returncode, done.stdout.strip()) == (0, "9007199254740994"), done.stderr


def _check_tls_tokens_and_failure(program: list[str], secured: CoordinatorProcess,
                                  certs: CertFiles) -> None:
    tls = ("--tls-ca", str(certs.ca))
    refused = run_example(program, secured.address, *tls)
    assert refused.returncode == 3, refused.stderr
    assert "UNAUTHENTICATED" in refused.stderr.upper()
    failed = run_example(program, secured.address, *tls, "--function", "fail",
                         "--args", '["nope"]', token=TOKENS["client"])
    assert failed.returncode == 1, failed.stderr
    assert "ended TASK_STATUS_FAILED" in failed.stderr
    assert "nope" in failed.stderr  # the traceback
    bad = run_example(program, secured.address, *tls, "--args", '{"a": 1}',
                      token=TOKENS["client"])
    assert bad.returncode == 2, bad.stderr
    done = run_example(program, secured.address, *tls, token=TOKENS["client"])
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
    # the CA from the environment, as $TASKGRID_TLS_CA
    done = run_example(program, secured.address, token=TOKENS["client"],
                       tls_ca=str(certs.ca))
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr


def test_go_example_queues_waits_and_prints_the_result(
        go_example: list[str], coordinator: CoordinatorProcess,
        start_worker: Callable[..., object]) -> None:
    start_worker()
    _check_add(go_example, coordinator)


def test_go_example_over_tls_with_a_token_and_a_failed_task(
        go_example: list[str], secured: CoordinatorProcess, certs: CertFiles) -> None:
    _check_tls_tokens_and_failure(go_example, secured, certs)


def test_ts_example_queues_waits_and_prints_the_result(
        ts_example: list[str], coordinator: CoordinatorProcess,
        start_worker: Callable[..., object]) -> None:
    start_worker()
    _check_add(ts_example, coordinator, text_args=("--text-args",))


def test_ts_example_over_tls_with_a_token_and_a_failed_task(
        ts_example: list[str], secured: CoordinatorProcess, certs: CertFiles) -> None:
    _check_tls_tokens_and_failure(ts_example, secured, certs)
