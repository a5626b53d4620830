# vidbatch — every target sets up .venv itself when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The customer SDK (clients/python) is tested from its own clean virtual environment.
CLIENT       := clients/python
CLIENT_VENV  := $(CLIENT)/.venv
CLIENT_STAMP := $(CLIENT_VENV)/.installed
CLIENT_SRC   := $(shell find $(CLIENT)/src -name '*.py' -o -name '*.typed') $(CLIENT)/pyproject.toml $(CLIENT)/README.md

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast test-client lint format serve bench check-install clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vidbatch needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install vidbatch with its dev tools

demo: $(STAMP) ## Run the end-to-end demo (SQLite, built-in simulator, no keys)
	$(BIN)/vidbatch demo

test: $(STAMP) ## Run the whole test suite, the SDK's included (PostgreSQL cases skip if no server)
	$(BIN)/pytest
	@$(MAKE) --no-print-directory test-client

$(CLIENT_STAMP): $(CLIENT_SRC)
	$(PYTHON) -m venv --clear $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install ./clients/python"[test]" --quiet --disable-pip-version-check
	@touch $(CLIENT_STAMP)

test-client: $(STAMP) $(CLIENT_STAMP) ## Install the SDK into a clean venv (no server package) and run its tests against `vidbatch serve`
	cd $(CLIENT) && VIDBATCH_SERVER_BIN=$(abspath $(BIN)/vidbatch) VIDBATCH_CLIENT_CLEAN_VENV=1 .venv/bin/pytest -q -p no:cacheprovider

test-fast: $(STAMP) ## Unit tests only
	$(BIN)/pytest tests/unit -q

lint: $(STAMP) ## ruff (lint, format check), the layer contracts (import-linter) and mypy; the SDK too
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	cd $(CLIENT) && ../../$(BIN)/ruff check . && ../../$(BIN)/ruff format --check .
	cd $(CLIENT) && ../../$(BIN)/mypy

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format src tests bench $(CLIENT)
	$(BIN)/ruff check --fix src tests bench
	cd $(CLIENT) && ../../$(BIN)/ruff check --fix .

serve: $(STAMP) ## Serve the API and the worker on 127.0.0.1:8000 (SQLite by default)
	$(BIN)/vidbatch serve

bench: $(STAMP) ## Run the benchmarks (prints figures; see bench/README.md)
	$(BIN)/python -m bench.worker_throughput
	$(BIN)/python -m bench.ingest

check-install: $(STAMP) ## Build the wheel, install it without extras in a fresh venv, run the CLI
	@rm -rf build/check-install && mkdir -p build/check-install
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps -w build/check-install .
	$(PYTHON) -m venv build/check-install/venv
	build/check-install/venv/bin/python -m pip install --quiet --disable-pip-version-check build/check-install/vidbatch-*.whl
	cd build/check-install && venv/bin/vidbatch --help >/dev/null
	cd build/check-install && DATABASE_URL=sqlite:///$$PWD/check.db venv/bin/vidbatch db upgrade
	cd build/check-install && venv/bin/vidbatch demo >demo.log 2>&1 || (tail -n 40 demo.log; exit 1)
	@tail -n 1 build/check-install/demo.log
	@echo "check-install: the wheel installs without extras; --help, db upgrade and demo work"

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(CLIENT_VENV) $(CLIENT)/build build .pytest_cache .mypy_cache .ruff_cache .hypothesis
