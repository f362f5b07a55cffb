"""deploy/k8s: every manifest validates offline against the Kubernetes schemas, and fits."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.helpers import DEPLOY, tool

K8S = DEPLOY / "k8s"
#: the oldest and the newest Kubernetes versions the manifests are checked against
VERSIONS = ["1.30.0", "1.37.0"]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _all() -> list[dict[str, Any]]:
    return [d for p in _manifests() for d in _docs(p)]


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _all() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    containers = _find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kustomization_lists_every_manifest_and_each_exists():
    resources = _kustomization()["resources"]
    for name in resources:
        assert (K8S / name).is_file(), name
    assert sorted(resources) == sorted(p.name for p in _manifests())
    assert len(set(resources)) == len(resources)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_validates(path, version):
    docs = _docs(path)
    assert docs, path
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomize_build_validates():
    """The composed output (namespace, labels, images applied), where kubectl is installed."""
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the per-file checks still ran")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) == len(_all())
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == _kustomization()["namespace"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "taskgrid"
    images = {c["image"] for d in docs if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}
    image = _kustomization()["images"][0]
    assert images == {f"{image['newName']}:{image['newTag']}"}


def test_coordinators_share_the_database():
    assert _find("Deployment", "taskgrid-coordinator")["spec"]["replicas"] == 2
    config = _find("ConfigMap", "taskgrid-config")["data"]
    assert config["TASKGRID_DB"].startswith("postgresql+psycopg://")


def _port(container: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[name]


def test_coordinator_probes_ask_the_health_service_on_the_container_port():
    container = _container("taskgrid-coordinator")
    port = _port(container, "grpc")
    config = _find("ConfigMap", "taskgrid-config")["data"]
    assert config["TASKGRID_LISTEN"] == f"0.0.0.0:{port}"
    coordinator_host = config["TASKGRID_COORDINATOR"].rsplit(":", 1)[0]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        if "grpc" in probe:  # the kubelet's plaintext probe: only without TLS
            assert probe["grpc"]["port"] == port
            continue
        command = probe["exec"]["command"]
        assert command[:2] == ["taskgrid-healthcheck", f"127.0.0.1:{port}"], kind
        # the certificate is checked against the name the workers dial
        assert command[command.index("--server-name") + 1] == coordinator_host
        assert ("--any-status" in command) == (kind != "readinessProbe"), kind


def test_service_reaches_the_coordinators():
    service = _find("Service", "taskgrid-coordinator")["spec"]
    coordinator = _find("Deployment", "taskgrid-coordinator")["spec"]
    assert service["selector"].items() <= coordinator["template"]["metadata"]["labels"].items()
    (port,) = service["ports"]
    container = _container("taskgrid-coordinator")
    assert port["targetPort"] == "grpc" and _port(container, "grpc") == port["port"]
    config = _find("ConfigMap", "taskgrid-config")["data"]
    host, _, dial_port = config["TASKGRID_COORDINATOR"].rpartition(":")
    name = _find("Service", "taskgrid-coordinator")["metadata"]["name"]
    assert host.split(".")[:2] == [name, _kustomization()["namespace"]]
    assert int(dial_port) == port["port"]


def test_secrets_are_referenced_and_are_placeholders():
    secrets = {d["metadata"]["name"]: d for d in _all() if d["kind"] == "Secret"}
    assert {"taskgrid-tokens", "taskgrid-tls"} <= secrets.keys()
    assert secrets["taskgrid-tls"]["type"] == "kubernetes.io/tls"
    for secret in secrets.values():
        for value in secret["stringData"].values():
            # shorter than the 16 characters a token needs: an unedited Secret fails to start
            assert value == "CHANGE-ME"
    referenced = set()
    for deployment in ("taskgrid-coordinator", "taskgrid-worker"):
        spec = _find("Deployment", deployment)["spec"]["template"]["spec"]
        for env in spec["containers"][0].get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
                referenced.add(ref["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    assert referenced == secrets.keys()


def test_workers_drain_before_they_are_killed():
    spec = _find("Deployment", "taskgrid-worker")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 600
    env = {e["name"] for e in spec["containers"][0]["env"]}
    assert {"TASKGRID_TOKEN", "TASKGRID_TLS_CA"} <= env


@pytest.mark.parametrize("deployment", ["taskgrid-coordinator", "taskgrid-worker"])
def test_pods_run_restricted(deployment):
    spec = _find("Deployment", deployment)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    context = spec["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
