#!/usr/bin/env bash
# Regenerates the committed stubs from protos/ (the single source of truth).
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: gen/python)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gen/python}"
py="${PYTHON:-python}"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  protos/taskgrid/v1/*.proto
printf '"""Generated protobuf and gRPC stubs for taskgrid.v1 (do not edit; make protos)."""\n' \
  > "$out/taskgrid/v1/__init__.py"
