"""TLS, mTLS and bearer tokens from the client library, the CLI and the Python worker.

Real coordinators serve TLS with throwaway certificates (tests/support/certs.py); the
checks are what users see: a client or worker that trusts the CA gets its work done, a
plain-text or untrusting client is refused at once (UNAVAILABLE, no hang), mTLS wants a
client certificate, roles limit what a token may do (CLI exit code 5), and a worker with
a bad token says why and gives up. Settings that would leak a token fail before any call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from taskgrid.client import (
    PermissionDeniedError,
    Scheduler,
    TaskRecord,
    TaskStatus,
    TlsConfig,
    UnauthenticatedError,
    UnavailableError,
    _addresses,
    _channel,
    cli,
)
from taskgrid.worker.channel import load_security
from tests.support.certs import CertFiles, make_certs
from tests.support.processes import Access
from tests.support.sqlite_only import db_url  # noqa: F401  (SQLite only)
from tests.support.wait import wait_until

TOKENS = {"client": "client-token-tls-0123456789", "worker": "worker-token-tls-0123456789",
          "admin": "admin-token-tls-0123456789"}
BAD_TOKEN = "not-a-known-token-0123456789"
#: Deadline of calls that must be refused: far above a refusal's real delay, far below a hang.
REFUSED_WITHIN_S = 5.0
EXIT_AUTH = 5
CLI_TIMEOUT_S = 20.0
_ENV_NAMES = (_channel.ENV_TOKEN, _channel.ENV_TLS_CA, _channel.ENV_TLS_CERT,
              _channel.ENV_TLS_KEY)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def _no_security_env(monkeypatch):
    """Tests pass their settings explicitly: an operator's TASKGRID_TOKEN must not leak in."""
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def tls_args(certs: CertFiles, *, client_ca: bool = False) -> list[str]:
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    return args + (["--tls-client-ca", str(certs.ca)] if client_ca else [])


def run_cli(address, *args, env=None):
    clean = {k: v for k, v in os.environ.items() if k not in _ENV_NAMES}
    proc = subprocess.run(
        [sys.executable, "-m", "taskgrid", *args, "--coordinator", address],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL,
        env={**clean, **(env or {})},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def completed(s: Scheduler, task_id: int) -> None:
    wait_until(lambda: s.task_status(task_id).status is TaskStatus.COMPLETED, timeout=20.0,
               desc=f"task {task_id} COMPLETED")


def refused(call) -> float:
    """Run a call that must fail UNAVAILABLE; return how long the refusal took."""
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        call()
    return time.monotonic() - started


# -- TLS ----------------------------------------------------------------------------------


def test_tls_serves_clients_and_workers_that_trust_the_ca(start_coordinator, start_worker,
                                                          certs):
    coord = start_coordinator(extra_args=tls_args(certs), access=Access(ca=certs.ca))
    start_worker("tls-worker", extra_args=["--tls-ca", str(certs.ca)])
    with Scheduler(coord.address, tls=TlsConfig(ca=certs.ca)) as s:
        queued = s.queue_task("add", pargs=[2, 3])
        completed(s, queued.id)
        assert s.task_status(queued.id, output=True).result == 5
    # the CLI, configured through the environment
    proc = run_cli(coord.address, "status", str(queued.id), "--json",
                   env={"TASKGRID_TLS_CA": str(certs.ca)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["task"]["status"] == "COMPLETED"
    # plain text, or a CA that did not sign the server: refused at once, never a hang
    with Scheduler(coord.address, tls=False, timeout_s=REFUSED_WITHIN_S) as plain:
        assert refused(plain.list_tasks) < REFUSED_WITHIN_S
    with Scheduler(coord.address, tls=TlsConfig(ca=certs.other_ca),
                   timeout_s=REFUSED_WITHIN_S) as stranger:
        assert refused(stranger.list_tasks) < REFUSED_WITHIN_S
    proc = run_cli(coord.address, "tasks")
    assert proc.returncode == 4 and "unavailable" in proc.stderr


def test_mtls_wants_a_client_certificate(start_coordinator, start_worker, certs):
    coord = start_coordinator(
        extra_args=tls_args(certs, client_ca=True),
        access=Access(ca=certs.ca, cert=certs.client_cert, key=certs.client_key))
    with Scheduler(coord.address, tls=TlsConfig(ca=certs.ca),
                   timeout_s=REFUSED_WITHIN_S) as anonymous:
        assert refused(anonymous.list_tasks) < REFUSED_WITHIN_S
    mine = TlsConfig(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    start_worker("mtls-worker", extra_args=[
        "--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert),
        "--tls-key", str(certs.client_key)])
    with Scheduler(coord.address, tls=mine) as s:
        queued = s.queue_task("add", pargs=[1, 1])
        completed(s, queued.id)
    proc = run_cli(coord.address, "tasks", "--json", "--tls-ca", str(certs.ca),
                   "--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key))
    assert proc.returncode == 0, proc.stderr
    assert [t["id"] for t in json.loads(proc.stdout)["tasks"]] == [queued.id]


# -- tokens over TLS ----------------------------------------------------------------------


def test_tokens_and_roles_over_tls(start_coordinator, start_worker, certs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    coord = start_coordinator(extra_args=[*tls_args(certs), "--tokens-file", str(tokens)],
                              access=Access(ca=certs.ca, token=TOKENS["admin"]))
    ca = ["--tls-ca", str(certs.ca)]
    # bad credentials first: they must give up while the good worker starts
    bad = start_worker("bad-token", ready=False, extra_args=ca,
                       env={"TASKGRID_TOKEN": BAD_TOKEN})
    wrong_role = start_worker("client-token", ready=False,
                              extra_args=[*ca, "--token", TOKENS["client"]])
    start_worker("good", extra_args=ca, env={"TASKGRID_TOKEN": TOKENS["worker"]})

    as_client = ["--token", TOKENS["client"], *ca]
    proc = run_cli(coord.address, "queue", "add", "[20, 22]", "--json", *as_client)
    assert proc.returncode == 0, proc.stderr
    task_id = json.loads(proc.stdout)["id"]
    with Scheduler(coord.address, token=TOKENS["client"], tls=TlsConfig(ca=certs.ca)) as s:
        assert TOKENS["client"] not in repr(s)
        completed(s, task_id)
        events = list(s.watch(task_id))  # a stream carries the token too
        assert [e for e in events if isinstance(e, TaskRecord)][-1].status is \
            TaskStatus.COMPLETED
        with pytest.raises(PermissionDeniedError):
            s.kill(worker_name="good")
    proc = run_cli(coord.address, "status", str(task_id), "--json", *as_client)
    assert proc.returncode == 0 and json.loads(proc.stdout)["result"] == 42

    proc = run_cli(coord.address, "kill", "--worker", "good", *as_client)
    assert proc.returncode == EXIT_AUTH, proc
    assert proc.stderr.count("\n") == 1 and "permission denied" in proc.stderr
    proc = run_cli(coord.address, "tasks", *ca)
    assert proc.returncode == EXIT_AUTH and "not authenticated" in proc.stderr
    proc = run_cli(coord.address, "disable", "--worker", "nobody", "--token", TOKENS["admin"],
                   *ca)
    assert proc.returncode == 3 and "no live worker" in proc.stderr, proc.stderr  # allowed
    with Scheduler(coord.address, token=BAD_TOKEN, tls=TlsConfig(ca=certs.ca)) as stranger:
        with pytest.raises(UnauthenticatedError):
            stranger.list_tasks()

    for worker, code in ((bad, "UNAUTHENTICATED"), (wrong_role, "PERMISSION_DENIED")):
        assert worker.wait(15.0) == EXIT_AUTH
        log = worker.log_text()
        assert "rejected this worker's credentials" in log and code in log, log
        assert log.count("rejected this worker's credentials") == 1
    names = {w.worker_name for w in coord.list_workers(include_dead=True)}
    assert names == {"good"}
    logs = coord.log_text() + "".join(w.log_text() for w in (bad, wrong_role))
    logs = "\n".join(line for line in logs.splitlines() if not line.startswith("=== "))
    for token in (*TOKENS.values(), BAD_TOKEN):  # (the harness's "=== argv" lines aside)
        assert token not in logs


# -- settings refused before any call ----------------------------------------------------


def test_a_token_is_never_sent_in_plain_text_beyond_loopback(monkeypatch, capsys):
    with pytest.raises(ValueError, match="refusing to send a token in plain text") as info:
        Scheduler("10.1.2.3:50051", token=TOKENS["client"])
    assert TOKENS["client"] not in str(info.value)
    monkeypatch.setenv("TASKGRID_TOKEN", TOKENS["client"])
    with pytest.raises(ValueError, match="plain text"):
        Scheduler("dns:///coordinator.example:50051")
    with Scheduler("10.1.2.3:50051", insecure=True) as s:  # explicit opt-in
        assert repr(s) == "Scheduler('10.1.2.3:50051', token=<redacted>)"
    with Scheduler("10.1.2.3:50051", token="") as s:  # "" sends none, whatever the env says
        assert "token" not in repr(s)
    for target in ("127.0.0.1:1", "localhost:1", "[::1]:1", "unix:/tmp/x.sock",
                   "ipv4:127.0.0.1:1,127.0.0.2:2"):
        assert _addresses.is_loopback_target(target), target
        Scheduler(target).close()
    for target in ("10.0.0.1:1", "example.com:1", "0.0.0.0:1", "ipv4:127.0.0.1:1,10.0.0.1:2"):
        assert not _addresses.is_loopback_target(target), target

    assert cli.main(["tasks", "--coordinator", "10.1.2.3:1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to send a token in plain text" in err and TOKENS["client"] not in err
    with pytest.raises(ValueError, match="go together"):
        Scheduler(tls=TlsConfig(cert="client.pem"))
    with pytest.raises(ValueError, match="cannot read the TLS CA file"):
        Scheduler(tls=TlsConfig(ca="/nonexistent/ca.pem"))
    with pytest.raises(ValueError, match="printable ASCII"):
        Scheduler(token="two words")


def test_worker_refuses_unusable_security_settings(tmp_path):
    with pytest.raises(ValueError, match="plain text"):
        load_security("10.1.2.3:1", token=TOKENS["worker"], environ={})
    assert load_security("10.1.2.3:1", token=TOKENS["worker"], insecure=True, environ={}).token
    settings = load_security("127.0.0.1:1", environ={"TASKGRID_TOKEN": TOKENS["worker"]})
    assert settings.token == TOKENS["worker"] and TOKENS["worker"] not in repr(settings)
    with pytest.raises(ValueError, match="go together"):
        load_security("127.0.0.1:1", cert="c.pem", environ={})
    proc = subprocess.run(
        [sys.executable, "-m", "taskgrid", "worker", "--tasks", "json",
         "--coordinator", "10.1.2.3:1", "--token", TOKENS["worker"]],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=tmp_path)
    assert proc.returncode == 2
    assert "refusing to send the token in plain text" in proc.stderr
    assert TOKENS["worker"] not in proc.stderr and "Traceback" not in proc.stderr


def test_task_code_never_sees_the_workers_token(coordinator, start_worker, client):
    start_worker("w1", env={"TASKGRID_TOKEN": "worker-secret-token-0123456789"},
                 extra_args=[])
    r = client.queue_task("env_var", pargs=["TASKGRID_TOKEN"])
    wait_until(lambda: client.task_status(r.id).status == "COMPLETED", timeout=15)
    assert client.task_status(r.id, output=True).result is None


# -- TLS that explains itself -------------------------------------------------------------------


def hint_of(scheduler: Scheduler) -> str:
    with pytest.raises(UnavailableError) as info:
        scheduler.list_tasks()
    return str(info.value)


def test_tls_mistakes_name_their_likely_cause(start_coordinator, certs, tmp_path, db_url):  # noqa: F811
    tls_only = start_coordinator(extra_args=tls_args(certs),
                                 access=Access(ca=certs.ca))
    second = (f"sqlite:///{tmp_path / 'second.sqlite'}" if db_url.startswith("sqlite")
              else db_url)  # one coordinator per SQLite file; PostgreSQL takes two
    mtls = start_coordinator(extra_args=tls_args(certs, client_ca=True), db_url=second,
                             access=Access(ca=certs.ca, cert=certs.client_cert,
                                           key=certs.client_key))
    with Scheduler(tls_only.address, timeout_s=5) as plain:
        assert "likely cause: if the coordinator serves TLS, connect with --tls" in hint_of(
            plain)
    with Scheduler(tls_only.address, tls=TlsConfig(ca=certs.other_ca), timeout_s=5) as wrong:
        assert "not signed by a CA this client trusts: pass the CA that signed it with " \
            "--tls-ca" in hint_of(wrong)
    with Scheduler(mtls.address, tls=TlsConfig(ca=certs.ca), timeout_s=5) as anonymous:
        assert "requires client certificates (mTLS), pass --tls-cert and --tls-key" in hint_of(
            anonymous)
    proc = run_cli(tls_only.address, "tasks")  # the CLI shows the same hint
    assert proc.returncode == 4 and "likely cause: if the coordinator serves TLS" in proc.stderr


@pytest.mark.parametrize("lang", ["python", "go"])
def test_a_worker_with_a_tls_mistake_exits_with_a_clear_error(start_coordinator, start_worker,
                                                             certs, lang):
    from tests.conformance.launch import go_binary

    coord = start_coordinator(extra_args=tls_args(certs), access=Access(ca=certs.ca))
    program = {"program": [go_binary()]} if lang == "go" else {}
    worker = start_worker(f"no-tls-{lang}", coordinator=coord.address, ready=False, **program)
    assert worker.wait(60) == EXIT_AUTH
    log = worker.log_text()
    assert "a TLS setting, likely: if the coordinator serves TLS, connect with --tls" in log
