"""The distribution: its name, its dependency ranges, its license metadata, a clean build.

The import name is `taskgrid`; the distribution is `taskgrid-scheduler` (PyPI's `taskgrid` is
another project). Runtime dependencies are ranges, never `==` pins, and the lower bounds of
grpcio and protobuf follow the versions that generated the committed stubs, which refuse an
older runtime at import. `make demo` installs the runtime dependencies only, so what it runs
must import without the dev extra.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DIST_NAME = "taskgrid-scheduler"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
#: the dev extra's packages and their import names: nothing `make demo` runs may import them
DEV_ONLY_MODULES = ["pytest", "_pytest", "hypothesis", "grpc_tools", "mypy", "mypy_protobuf",
                    "cryptography", "yaml", "kubernetes_validate", "xdist", "opentelemetry",
                    "playwright", "httpx"]


def _lower_bound(req: Requirement) -> Version:
    bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert bounds, f"{req} has no lower bound"
    return max(bounds)


def test_distribution_name_is_ours_and_the_import_name_stays_taskgrid() -> None:
    assert PROJECT["name"] == DIST_NAME
    # the installed (editable) distribution is the one that provides the `taskgrid` package
    assert importlib.metadata.metadata(DIST_NAME)["Name"] == DIST_NAME
    assert DIST_NAME in importlib.metadata.packages_distributions()["taskgrid"]
    import taskgrid

    assert importlib.metadata.version(DIST_NAME) == taskgrid.__version__ == PROJECT["version"]


def test_runtime_dependencies_are_ranges_not_pins() -> None:
    names = {req.name.lower() for req in RUNTIME}
    assert {"grpcio", "protobuf", "shtab"} <= names
    for req in RUNTIME:
        operators = {s.operator for s in req.specifier}
        assert not operators & {"==", "==="}, f"runtime dependency pinned: {req}"
        assert ">=" in operators, f"runtime dependency without a lower bound: {req}"
        assert "<" in operators, f"runtime dependency without an upper bound: {req}"
    shtab = next(r for r in RUNTIME if r.name == "shtab")
    assert _lower_bound(shtab) >= Version("1.7")


def test_runtime_dependencies_include_what_is_installed() -> None:
    for req in RUNTIME:
        installed = importlib.metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), (req, installed)


def test_grpc_and_protobuf_lower_bounds_match_the_generated_stubs() -> None:
    stubs = ROOT / "gen" / "python" / "taskgrid" / "v1"
    grpc_generated = {Version(v) for f in stubs.glob("*_pb2_grpc.py")
                      for v in re.findall(r"GRPC_GENERATED_VERSION = '([^']+)'", f.read_text())}
    proto_generated = {Version(v) for f in stubs.glob("*_pb2.py")
                       for v in re.findall(r"# Protobuf Python Version: (\S+)", f.read_text())}
    assert grpc_generated and proto_generated
    by_name = {req.name.lower(): req for req in RUNTIME}
    assert _lower_bound(by_name["grpcio"]) >= max(grpc_generated)
    for name in ("grpcio-health-checking", "grpcio-reflection"):
        assert _lower_bound(by_name[name]) >= max(grpc_generated), name
    assert _lower_bound(by_name["protobuf"]) >= max(proto_generated)


def test_license_is_an_spdx_expression_with_its_file() -> None:
    assert isinstance(PROJECT["license"], str) and PROJECT["license"] == "MIT"
    for pattern in PROJECT["license-files"]:
        assert list(ROOT.glob(pattern)), f"license-files pattern {pattern!r} matches nothing"
    [setuptools] = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                    if r.startswith("setuptools")]
    # the SPDX string and license-files need setuptools 77 (PEP 639)
    assert _lower_bound(setuptools) >= Version("77")


def _source_copy(dest: Path) -> Path:
    """The project's files (tracked and new, not ignored) copied to dest."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not name.startswith(".hypothesis/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.timeout(60)
def test_a_wheel_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the project's files")
    source = _source_copy(tmp_path / "src")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-v", "-w", str(tmp_path / "wheels")],
        cwd=tmp_path, capture_output=True, text=True, timeout=50)
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-3000:]
    warnings = [line for line in output.splitlines()
                if re.search(r"deprecat|BuildBackendWarning|SetuptoolsWarning", line, re.I)]
    assert not warnings, "\n".join(warnings)
    [wheel] = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.startswith("taskgrid_scheduler-")
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
        names = archive.namelist()
    assert f"Name: {DIST_NAME}\n" in text
    assert "License-Expression: MIT\n" in text
    assert not re.search(r"^Requires-Dist: [^;]*==", text.split("Provides-Extra")[0], re.M)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "taskgrid/coordinator/migrations/versions/0001_initial.py" in names


def test_the_demo_imports_nothing_from_the_dev_extra() -> None:
    """What `make demo` runs (scripts/demo.py, its tasks, the CLI) needs runtime deps only."""
    blocker = f"""
import importlib.abc, sys
BLOCKED = {DEV_ONLY_MODULES!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not a runtime dependency")
        return None
sys.meta_path.insert(0, Block())
import runpy
runpy.run_path({str(ROOT / "scripts" / "demo.py")!r}, run_name="demo")
runpy.run_path({str(ROOT / "examples" / "demo_tasks.py")!r}, run_name="demo_tasks")
import taskgrid.cli, taskgrid.client, taskgrid.client.cli
import taskgrid.coordinator.main, taskgrid.coordinator.app
import taskgrid.worker.main, taskgrid.worker.agent, taskgrid.worker.child
for name in BLOCKED:
    assert name not in sys.modules, name
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_make_demo_installs_the_runtime_dependencies_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:(.*)$", makefile, re.M)
    assert demo is not None
    [stamp] = demo.group(1).split()
    stamp_var = stamp.removeprefix("$(").removesuffix(")")
    recipe = re.search(rf"^\$\({stamp_var}\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None, f"no rule for {stamp}"
    assert "pip install -q -e .\n" in recipe.group(1)
    assert "[dev]" not in recipe.group(1)
    test = re.search(r"^test:(.*)$", makefile, re.M)
    assert test is not None and "lint" in test.group(1)
    assert "-e '.[dev]'" in makefile  # make test / make lint keep the dev extra
