"""How to start a worker of each language for the conformance suite."""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
HANDLERS = pathlib.Path(__file__).resolve().parent / "handlers.py"
GO_MODULE = ROOT / "worker" / "go"
GO_BINARY = GO_MODULE / "bin" / "taskgrid-worker-conformance"
TS_PACKAGE = ROOT / "worker" / "ts"
TS_CLI = TS_PACKAGE / "dist" / "src" / "cli.js"
TS_HANDLERS = TS_PACKAGE / "dist" / "conformance" / "handlers.js"
LANGS = ["python", "go", "typescript"]


@functools.cache
def go_binary() -> str:
    """The Go conformance worker, built (incrementally, by go's cache) on first use."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    subprocess.run([go, "build", "-o", str(GO_BINARY), "./cmd/taskgrid-worker-conformance"],
                   cwd=GO_MODULE, check=True, env={**os.environ, "CGO_ENABLED": "0"})
    return str(GO_BINARY)


@functools.cache
def ts_worker() -> list[str]:
    """The TypeScript worker with the conformance handlers, built by `make ts` on first use
    (npm ci only when node_modules is older than the lockfile; tsc is quick when current)."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise RuntimeError("the TypeScript worker needs node and npm (Node 20 or later)")
    import fcntl

    with open(ROOT / ".ts-build.lock", "w") as lock:  # one build at a time across xdist workers
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "ts"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return [node, str(TS_CLI), "--tasks", str(TS_HANDLERS)]


def worker_args(lang: str, extra: list[str]) -> dict[str, Any]:
    """start_worker keyword arguments that launch a `lang` worker."""
    if lang == "python":
        return {"tasks": HANDLERS, "extra_args": extra}
    if lang == "go":
        return {"program": [go_binary()], "extra_args": extra}
    if lang == "typescript":
        return {"program": ts_worker(), "extra_args": extra}
    raise ValueError(lang)
