"""deploy/systemd: `systemd-analyze verify` passes and the units drain workers on stop."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.helpers import DEPLOY, VENV_BIN, tool

UNITS = DEPLOY / "systemd"
INSTALLED_BINARY = "/opt/taskgrid/bin/taskgrid"


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("instance", ["taskgrid-coordinator.service",
                                      "taskgrid-worker@.service",
                                      "taskgrid-worker@batch.service"])
def test_systemd_analyze_verify(tmp_path, instance):
    analyze = tool("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (make deploy-tools installs systemd)")
    binary = VENV_BIN / "taskgrid"
    assert binary.exists(), "pip install -e . installs the taskgrid script"
    # verify needs ExecStart's binary: point it at the venv's instead of the installed path
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert INSTALLED_BINARY in text
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_BINARY, str(binary)))
    out = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / instance)],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.strip()) == (0, ""), out.stdout + out.stderr


@pytest.mark.parametrize("name", ["taskgrid-coordinator.service", "taskgrid-worker@.service"])
def test_unit_policy(name):
    service = _unit(name)["Service"]
    one = {k: v[-1] for k, v in service.items()}
    assert one["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only: the worker drains, its task processes keep running
    assert one["KillMode"] == "mixed"
    assert one["Restart"] == "on-failure"
    assert service["EnvironmentFile"][0].startswith("/etc/taskgrid/")
    assert one["User"] == "taskgrid"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                       "RestrictSUIDSGID": "yes"}.items():
        assert one.get(key) == value, key
    assert one["ExecStart"].startswith(INSTALLED_BINARY + " ")


def _seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*([a-z]*)", value):
        total += int(number) * units[unit]
    return total


def test_worker_stop_timeout_covers_a_drain():
    """Default task timeout 60 s + kill grace 5 s; leave room for long tasks."""
    assert _seconds(_unit("taskgrid-worker@.service")["Service"]["TimeoutStopSec"][-1]) >= 600
    assert _seconds(_unit("taskgrid-coordinator.service")["Service"]["TimeoutStopSec"][-1]) >= 10


def test_worker_instances_have_their_own_settings_and_name():
    service = _unit("taskgrid-worker@.service")["Service"]
    assert "-/etc/taskgrid/worker-%i.env" in service["EnvironmentFile"]
    assert "--name %H-%i" in service["ExecStart"][-1]


def test_sysusers_creates_the_unit_user():
    lines = (UNITS / "taskgrid.sysusers.conf").read_text().splitlines()
    assert any(ln.split()[:2] == ["u", "taskgrid"] for ln in lines if ln.strip())


@pytest.mark.parametrize(("unit", "example"), [
    ("taskgrid-coordinator.service", "coordinator.env.example"),
    ("taskgrid-worker@.service", "worker.env.example"),
])
def test_env_example_sets_what_execstart_uses(unit, example):
    exec_start = _unit(unit)["Service"]["ExecStart"][-1]
    used = set(re.findall(r"\$\{?([A-Z_]+)\}?", exec_start))
    lines = [ln for ln in (UNITS / example).read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assigned = {ln.split("=", 1)[0] for ln in lines}
    assert used <= assigned, sorted(used - assigned)
