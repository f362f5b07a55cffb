#!/usr/bin/env bash
# Lays out .venv/mypy-tree/taskgrid/{coordinator,worker,client,dashboard} as symlinks to the source
# folders, so mypy sees the `taskgrid.*` names that pyproject.toml maps those folders to
# (mypy cannot follow setuptools' package-dir mapping). The generated stubs are left out on
# purpose: they are checked by `make check-protos`, and typed as Any here.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.venv/mypy-tree/taskgrid
rm -rf .venv/mypy-tree
mkdir -p "$tree"
cp taskgrid/__init__.py "$tree/__init__.py"
for pkg in coordinator worker client dashboard; do
  ln -s "$PWD/$pkg" "$tree/$pkg"
done
