"""taskgrid-healthcheck as the Kubernetes probes run it: TLS, dialing 127.0.0.1, checking the
certificate against the Service name; and against a real coordinator set up like the units."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy.helpers import DEPLOY
from tests.support.certs import _make_ca, _make_leaf, _write, make_certs
from tests.support.processes import Access


def _service_name() -> str:
    """The name the probes check the certificate against (coordinator-deployment.yaml)."""
    doc = yaml.safe_load((DEPLOY / "k8s" / "coordinator-deployment.yaml").read_text())
    command = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    return command[command.index("--server-name") + 1]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), *args, "--timeout", "5"],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def tls_health_server(tmp_path):
    """A TLS gRPC health server whose certificate names only the Service, as in the cluster."""
    ca, ca_key = _make_ca("test CA")
    cert, key = _make_leaf("coordinator", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH,
                           [x509.DNSName(_service_name())])
    _write(tmp_path / "ca.crt", ca)
    _write(tmp_path / "tls.crt", cert, key, tmp_path / "tls.key")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials([((tmp_path / "tls.key").read_bytes(),
                                          (tmp_path / "tls.crt").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    yield f"127.0.0.1:{port}", tmp_path / "ca.crt"
    server.stop(0)


def test_probe_command_over_tls(tls_health_server):
    addr, ca = tls_health_server
    out = _check(addr, "--tls-ca", str(ca), "--server-name", _service_name())
    assert out.returncode == 0, out.stderr
    # without the name the certificate does not match 127.0.0.1: no answer
    assert _check(addr, "--tls-ca", str(ca)).returncode == 2
    # plaintext against a TLS port (what the kubelet's own grpc probe does): no answer
    assert _check(addr).returncode == 2


def test_real_coordinator_with_env_tokens_and_tls(tmp_path, start_coordinator):
    """Tokens from TASKGRID_*_TOKENS, TLS files: the health service answers without a token."""
    certs = make_certs(tmp_path / "pki")
    admin = "admin-token-0123456789abcdef"
    coordinator = start_coordinator(
        extra_args=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)],
        env={"TASKGRID_ADMIN_TOKENS": admin, "TASKGRID_CLIENT_TOKENS": "client-token-0123456789ab",
             "TASKGRID_WORKER_TOKENS": "worker-token-0123456789ab"},
        access=Access(ca=certs.ca, token=admin))
    out = _check(coordinator.address, "--tls-ca", str(certs.ca))
    assert (out.returncode, out.stdout.strip()) == (0, f"{coordinator.address}: SERVING"), \
        out.stderr
