"""Every flag the deploy files pass to `taskgrid coordinator` / `taskgrid worker` exists."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

import pytest
import yaml

from tests.deploy.helpers import DEPLOY


@functools.cache
def _known(command: str) -> frozenset[str]:
    out = subprocess.run([sys.executable, "-m", "taskgrid", command, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return frozenset(re.findall(r"--[a-z][a-z-]*", out.stdout))


def _invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `taskgrid`) of every coordinator or worker the deploy files start."""
    found = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                found.append((unit.name, line.split()[1:]))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        command = service.get("command")
        if command and command[0] in ("coordinator", "worker"):
            found.append((f"compose:{name}", command))
    for path in (DEPLOY / "k8s").glob("*deployment.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                found.append((path.name, container["args"]))
    return found


@pytest.mark.parametrize(("where", "argv"), _invocations(), ids=[w for w, _ in _invocations()])
def test_flags_exist(where, argv):
    assert argv[0] in ("coordinator", "worker"), where
    flags = {a for a in argv[1:] if a.startswith("--")}
    assert flags, where
    assert flags <= _known(argv[0]), (where, sorted(flags - _known(argv[0])))
