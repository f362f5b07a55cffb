"""deploy/compose.yaml: the services fit together, and its secrets script makes usable files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import Any

import pytest
import yaml

from taskgrid.coordinator.auth import Tokens
from tests.deploy.helpers import DEPLOY


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _services() -> dict[str, Any]:
    return _compose()["services"]


def _coordinators() -> dict[str, Any]:
    return {n: s for n, s in _services().items() if s.get("command", [None])[0] == "coordinator"}


def _workers() -> dict[str, Any]:
    return {n: s for n, s in _services().items() if s.get("command", [None])[0] == "worker"}


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_postgres_15_with_a_healthcheck():
    postgres = _services()["postgres"]
    assert postgres["image"].split(":")[1].startswith("15")
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_coordinators_share_postgres_and_listen_on_every_interface():
    coordinators = _coordinators()
    assert len(coordinators) >= 1
    for name, service in coordinators.items():
        command = service["command"]
        assert _flag(command, "--db").startswith("postgresql+psycopg://"), name
        assert "@postgres:" in _flag(command, "--db")
        assert _flag(command, "--listen") == "0.0.0.0:50051"
        # tokens always; the coordinator itself needs no --insecure with them
        assert "--tokens-file" in command and "--insecure" not in command
        assert service["healthcheck"]["test"][1] == "taskgrid-healthcheck"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        # published on the host's loopback only
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))
    assert len({_flag(s["command"], "--db") for s in coordinators.values()}) == 1


def test_two_workers_dial_every_coordinator():
    workers = _workers()
    assert len(workers) == 2
    every = {f"{name}:50051" for name in _coordinators()}
    for name, service in workers.items():
        assert set(_flag(service["command"], "--coordinator").split(",")) == every, name
        for coordinator in _coordinators():
            assert service["depends_on"][coordinator]["condition"] == "service_healthy"
        assert service["stop_signal"] == "SIGTERM"
        # --insecure (plain-text token on the compose network) is the documented demo setting
        assert "--insecure" in service["command"]
    assert "DEMO ON A PRIVATE NETWORK" in (DEPLOY / "compose.yaml").read_text()


def test_every_service_reads_the_generated_secrets():
    for name, service in _services().items():
        assert any(v.startswith("secrets:/secrets") for v in service["volumes"]), name
        if name != "secrets" and name not in _workers():  # workers wait for the coordinators
            assert service["depends_on"]["secrets"]["condition"] == \
                "service_completed_successfully"


@pytest.mark.skipif(os.geteuid() != 0, reason="the script gives files to other users (root)")
def test_secrets_script_makes_tokens_the_coordinator_accepts(tmp_path):
    service = _services()["secrets"]
    assert service["entrypoint"] == ["python", "-c"]
    script = service["command"][0].replace('"/secrets"', repr(str(tmp_path)))
    for _ in range(2):  # a second run keeps what the first made
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        if _ == 0:
            first = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == first
    tokens = Tokens.load(str(tmp_path / "tokens"), environ={})
    for role in ("client", "worker", "admin"):
        token = (tmp_path / f"{role}-token").read_text()
        assert tokens.role_of(token) == role
    host, port, db, user, password = (tmp_path / "pgpass").read_text().strip().split(":")
    command = next(iter(_coordinators().values()))["command"]
    assert f"postgresql+psycopg://{user}@{host}:{port}/{db}" == _flag(command, "--db")
    assert password == (tmp_path / "db-password").read_text()
    # libpq ignores a password file that others may read
    assert stat.S_IMODE((tmp_path / "pgpass").stat().st_mode) == 0o600
    assert (tmp_path / "pgpass").stat().st_uid == 10001
    assert (tmp_path / "db-password").stat().st_uid == 999
