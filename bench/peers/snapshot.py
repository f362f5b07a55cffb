"""The taskgrid code one bench/compare.py run measures, frozen when the run starts.

Others edit the shared work tree while a run goes on, and each phase starts fresh processes, so
a run that imported taskgrid from the work tree could measure different code in different
rounds. Instead the run copies the sources once (the work tree as it is, or `git archive REV`
for a committed revision) into its folder, laid out under the `taskgrid.*` names that
pyproject.toml maps them to, and every taskgrid process (coordinator, workers, their children,
the bench's client) imports that copy through PYTHONPATH, which wins over the editable install.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
#: taskgrid.<name> -> the folder that pyproject.toml's package-dir maps it to.
LAYOUT = {"": "taskgrid", "coordinator": "coordinator", "worker": "worker", "client": "client",
          "v1": "gen/python/taskgrid/v1"}
SOURCES = sorted(set(LAYOUT.values()))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


class Snapshot:
    """A frozen copy of taskgrid's sources and the environment that imports it."""

    def __init__(self, folder: Path, rev: str | None) -> None:
        src = folder / "src"
        src.mkdir(parents=True)
        if rev is not None:
            self.commit = _git("rev-parse", "--short", rev)
            self.dirty: list[str] = []
            data = subprocess.run(["git", "archive", "--format=tar", rev, *SOURCES], cwd=REPO,
                                  capture_output=True, check=True).stdout
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(src, filter="data")
        else:
            self.commit = _git("rev-parse", "--short", "HEAD")
            status = _git("status", "--porcelain", "--", *SOURCES)
            self.dirty = [line[3:] for line in status.splitlines()]
            for name in SOURCES:
                shutil.copytree(REPO / name, src / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        pkg = folder / "pkg"
        for sub, source in LAYOUT.items():
            shutil.copytree(src / source, pkg / "taskgrid" / sub, dirs_exist_ok=True)
        self.path = pkg
        self.env = dict(os.environ, PYTHONPATH=str(pkg))
        self._check()

    def _check(self) -> None:
        """Every taskgrid package must come from the copy, none from the work tree."""
        names = ["taskgrid"] + [f"taskgrid.{sub}" for sub in LAYOUT if sub]
        code = ("import importlib, sys\n"
                f"for n in {names!r}:\n"
                "    print(importlib.import_module(n).__file__)\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=self.path, env=self.env,
                             capture_output=True, text=True, check=True).stdout.split()
        strays = [f for f in out if not f.startswith(str(self.path))]
        if strays or len(out) != len(names):
            raise RuntimeError(f"the taskgrid copy is not what gets imported: {strays or out}")

    def describe(self) -> str:
        if not self.dirty:
            return f"commit {self.commit}"
        shown = ", ".join(self.dirty[:8]) + (" ..." if len(self.dirty) > 8 else "")
        return (f"commit {self.commit} plus uncommitted changes in the work tree "
                f"({len(self.dirty)} files: {shown})")
