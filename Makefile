# Storekeeper: build, run and test plumbing (GNU make).
#
#   make install    create .venv (Python >= 3.11) and install the project with dev extras
#   make run        migrate var/storekeeper.db (or DATABASE_URL) and serve on HOST:PORT; on a
#                   terminal with an empty catalog it first offers the demo catalog
#   make demo       load the demo catalog (80 products, 90 days of stock history)
#   make test       ruff check, ruff format --check, spec linters, sdk-check, pytest
#   make sdk-check  generate the TypeScript clients into build/clients and type-check sdk/*/e2e.ts
#   make contract   live schemathesis run against the production server command
#
# Environment:
#   HOST, PORT                      passed through to `storekeeper serve` (default 127.0.0.1:8080)
#   DEMO=1                          `make run` loads the demo catalog into an empty catalog
#                                   without asking (never blocks without a terminal either way)
#   FORCE=1                         `make demo` adds the demo beside existing products
#   DATABASE_URL                    database for `make run` (default: SQLite in var/)
#   PYTEST_ARGS                     extra pytest arguments, e.g. PYTEST_ARGS="-k smoke -x"
#   PYTEST_WORKERS                  parallel pytest processes (pytest-xdist; default: one per
#                                   core, `auto`; 0 runs in this process)
#   STOREKEEPER_TEST_POSTGRES_URL   admin URL that enables the PostgreSQL variants of the tests,
#                                   e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres
#                                   (not set here; without it they are skipped locally and
#                                   fail when CI=true)
#   CONTRACT_DATABASE_URL, CONTRACT_PORT, CONTRACT_DEMO, SCHEMATHESIS_SEED,
#   SCHEMATHESIS_MAX_EXAMPLES, SCHEMATHESIS_STATEFUL_TIME
#                                   see scripts/contract-live.sh

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# First interpreter found; the version is checked in the recipe below.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto

.PHONY: help venv install run test lint lint-spec sdk-check format contract clean

help: ## List the targets
	@echo "Storekeeper make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install the project with dev extras (same as install)

install: $(STAMP) ## Create .venv and install the project with dev extras

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then \
		if ! "$(PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then \
			echo "error: Python >= 3.11 is required; '$(PYTHON)' is $$("$(PYTHON)" --version 2>&1 | head -n 1 || true)." >&2; \
			echo "       Install python3.11 or run: make PYTHON=/path/to/python3.11 install" >&2; \
			exit 1; \
		fi; \
		echo "creating $(VENV) with $$("$(PYTHON)" --version)"; \
		"$(PYTHON)" -m venv "$(VENV)"; \
	fi
	@"$(BIN)/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
		echo "error: $(VENV) uses $$("$(BIN)/python" --version 2>&1 | head -n 1); Python >= 3.11 is required. Run 'make clean install'." >&2; \
		exit 1; }
	"$(BIN)/pip" install --quiet -e ".[dev]"
	@touch "$(STAMP)"

run: $(STAMP) ## Migrate and serve with uvicorn on HOST:PORT (default 127.0.0.1:8080); offers the demo
	"$(BIN)/storekeeper" demo $(if $(filter 1 yes true,$(DEMO)),--if-empty,--ask)
	HOST="$${HOST:-127.0.0.1}" PORT="$${PORT:-8080}" "$(BIN)/storekeeper" serve

.PHONY: demo
demo: $(STAMP) ## Load the demo catalog into an empty database (FORCE=1: beside existing products)
	"$(BIN)/storekeeper" demo $(if $(filter 1 yes true,$(FORCE)),--force)

test: $(STAMP) lint-spec sdk-check ## ruff, the spec linters, sdk-check, pytest (PYTEST_ARGS passed through)
	"$(BIN)/ruff" check .
	"$(BIN)/ruff" format --check .
	"$(BIN)/pytest" -n "$(PYTEST_WORKERS)" $(PYTEST_ARGS)

NODE_STAMP := node_modules/.installed

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch "$(NODE_STAMP)"

lint-spec: $(NODE_STAMP) ## Spectral and Redocly on openapi/openapi.yaml: zero errors, zero warnings
	bash scripts/lint-spec.sh

# The TypeScript clients, one per stock generator, and the flow written against each. The Python
# client is generated and exercised by tests/e2e/test_sdk_python.py; all four run live in pytest.
SDK_TS_TARGETS := hey-api openapi-fetch orval

sdk-check: $(NODE_STAMP) ## Generate the TypeScript clients (build/clients) and tsc --noEmit each sdk/<target>/e2e.ts
	bash scripts/generate-clients.sh $(SDK_TS_TARGETS)
	for target in $(SDK_TS_TARGETS); do \
		echo "+ tsc --noEmit -p sdk/$$target"; \
		node_modules/.bin/tsc --noEmit -p "sdk/$$target" || exit 1; \
	done

lint: $(STAMP) ## ruff check and ruff format --check
	"$(BIN)/ruff" check .
	"$(BIN)/ruff" format --check .

format: $(STAMP) ## ruff format, then ruff check --fix
	"$(BIN)/ruff" format .
	"$(BIN)/ruff" check --fix .

contract: $(STAMP) ## Live schemathesis run against scripts/serve-production.sh
	VENV="$(VENV)" bash scripts/contract-live.sh

clean: ## Remove .venv, var/ (the local SQLite database), artifacts and caches
	rm -rf "$(VENV)" var artifacts schemathesis-report .schemathesis .pytest_cache .ruff_cache \
		.hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
