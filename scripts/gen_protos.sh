#!/usr/bin/env bash
# Regenerates the committed stubs from protos/ (the single source of truth).
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: gen/python)
#        scripts/gen_protos.sh --go [OUT_DIR]   (default: worker/go/gen/taskgridv1)
#        scripts/gen_protos.sh --ts [OUT_DIR]   (default: examples/ts/gen)
#        scripts/gen_protos.sh --ts-worker [OUT_DIR]   (default: worker/ts/gen)
# The Go stubs use the same protoc (grpc_tools) with protoc-gen-go and
# protoc-gen-go-grpc at the pinned versions below, installed with `go install`
# into worker/go/bin/tools when missing, so every machine generates the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GO_MODULE=taskgrid.local/worker  # worker/go/go.mod; the protos' go_package lives under it

if [ "${1:-}" = "--go" ]; then
  out="${2:-worker/go/gen/taskgridv1}"
  go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
  tools="$PWD/worker/go/bin/tools"
  ensure_plugin() {  # NAME PACKAGE VERSION
    if ! "$tools/$1" --version 2>/dev/null | grep -q -- "${3#v}\$"; then
      GOBIN="$tools" "$go" install "$2@$3"
    fi
  }
  ensure_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
  ensure_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
    "$PROTOC_GEN_GO_GRPC_VERSION"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m grpc_tools.protoc -Iprotos \
    --plugin=protoc-gen-go="$tools/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$tools/protoc-gen-go-grpc" \
    --go_out="$tmp" --go_opt=module="$GO_MODULE" \
    --go-grpc_out="$tmp" --go-grpc_opt=module="$GO_MODULE" \
    protos/taskgrid/v1/*.proto
  mkdir -p "$out"
  rm -f "$out"/*.pb.go
  cp "$tmp"/gen/taskgridv1/*.pb.go "$out"/
  exit 0
fi

# TypeScript (examples/ts): ts-proto, pinned in examples/ts/package-lock.json and installed
# with `npm ci` into examples/ts/node_modules when missing (nothing global). The well-known
# types (google/protobuf/*.proto) come from grpc_tools and are generated beside ours.
# --ts-worker does the same for the TypeScript worker (worker/ts, its own lockfile).
if [ "${1:-}" = "--ts" ] || [ "${1:-}" = "--ts-worker" ]; then
  if [ "$1" = "--ts" ]; then
    out="${2:-examples/ts/gen}"
    ts="$PWD/examples/ts"
  else
    out="${2:-worker/ts/gen}"
    ts="$PWD/worker/ts"
  fi
  if [ ! -x "$ts/node_modules/.bin/protoc-gen-ts_proto" ] ||
     [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; then
    command -v npm >/dev/null || { echo "$0 --ts: needs node and npm (Node 20 or later)" >&2; exit 1; }
    lock=()  # one npm ci at a time (tests/integration/test_examples.py takes the same lock)
    if command -v flock >/dev/null; then lock=(flock "$ts/.npm-ci.lock"); fi
    (cd "$ts" && "${lock[@]}" npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m grpc_tools.protoc -Iprotos \
    --plugin=protoc-gen-ts_proto="$ts/node_modules/.bin/protoc-gen-ts_proto" \
    --ts_proto_out="$tmp" \
    --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true \
    protos/taskgrid/v1/*.proto
  mkdir -p "$out"
  rm -rf "$out/taskgrid" "$out/google"
  cp -R "$tmp"/. "$out"/
  exit 0
fi

out="${1:-gen/python}"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  protos/taskgrid/v1/*.proto
printf '"""Generated protobuf and gRPC stubs for taskgrid.v1 (do not edit; make protos)."""\n' \
  > "$out/taskgrid/v1/__init__.py"
