PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
MUTMUT_STAMP := $(VENV)/.installed-mutation
SERVE_STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit clean bench mutation

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The SDK distribution (clients/python) first: the server depends on imagegate-client.
CLIENT := ./clients/python

$(SERVE_STAMP): pyproject.toml $(CLIENT)/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e $(CLIENT)
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP): pyproject.toml $(CLIENT)/pyproject.toml | $(BIN)/python
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(BIN)/pip install -q -e $(CLIENT)
	$(BIN)/pip install -q -e '.[dev,local]'
	touch $@ $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/imagegate serve --host 127.0.0.1 --port 8080

lint: $(STAMP)
	$(BIN)/ruff check src clients tests bench
	$(BIN)/ruff format --check src clients tests bench

# src/ and the SDK strict ([tool.mypy] in pyproject.toml), then the tests (tests/mypy.ini).
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --config-file tests/mypy.ini

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test: lint typecheck unit

$(MUTMUT_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install -q -e '.[dev,mutation]'
	touch $@

# Mutation score per money/limits/routing module (slow; not part of `make test`).
# MODULES="ledger router" limits the run; see docs/development.md.
mutation: $(MUTMUT_STAMP)
	$(BIN)/python mutation/run.py $(MODULES)

# Gateway benchmark vs LiteLLM and Portkey (installs its own tools under bench/gateways/.env).
bench: $(SERVE_STAMP)
	$(MAKE) -C bench/gateways bench

clean:
	rm -rf $(VENV) .imagegate .mypy_cache .ruff_cache .mutation
