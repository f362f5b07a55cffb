"""How to start a worker of each language for the conformance suite."""

from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
HANDLERS = pathlib.Path(__file__).resolve().parent / "handlers.py"
GO_MODULE = ROOT / "worker" / "go"
GO_BINARY = GO_MODULE / "bin" / "taskgrid-worker-conformance"
LANGS = ["python", "go"]


@functools.cache
def go_binary() -> str:
    """The Go conformance worker, built (incrementally, by go's cache) on first use."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    subprocess.run([go, "build", "-o", str(GO_BINARY), "./cmd/taskgrid-worker-conformance"],
                   cwd=GO_MODULE, check=True, env={**_env(), "CGO_ENABLED": "0"})
    return str(GO_BINARY)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def worker_args(lang: str, extra: list[str]) -> dict[str, Any]:
    """start_worker keyword arguments that launch a `lang` worker."""
    if lang == "python":
        return {"tasks": HANDLERS, "extra_args": extra}
    if lang == "go":
        return {"program": [go_binary()], "extra_args": extra}
    raise ValueError(lang)
