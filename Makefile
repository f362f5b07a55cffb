# taskgrid: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint check-protos protos postgres bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Regenerate the committed stubs from protos/.
protos: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_protos.sh

## Fail when the committed stubs differ from what protos/ generates.
check-protos: $(STAMP)
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python scripts/gen_protos.sh $$tmp && \
	  if diff -r $$tmp/taskgrid/v1 gen/python/taskgrid/v1 >/dev/null; then echo "protos: generated stubs are current"; rm -rf $$tmp; \
	  else diff -r $$tmp/taskgrid/v1 gen/python/taskgrid/v1 | head -20; rm -rf $$tmp; echo "protos: stale stubs, run 'make protos'"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## PostgreSQL server binaries for the PostgreSQL half of the suite.
postgres:
	@scripts/ensure_postgres.sh

test: check-protos lint postgres
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
