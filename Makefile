# One-command set-up: every target creates what it needs (venv, npm packages) first.
#   make demo   run one job end to end on the local stack (Azurite + local host + local executor)
#   make test   lint, type-check and run the whole test suite
#   make dev    the local stack in the foreground (Ctrl-C stops everything it started)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps demo test dev lint typecheck clean

$(VENV)/.installed: requirements.txt requirements-dev.txt container/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed node_modules/.installed

demo: deps
	$(PY) -m devhost.demo

dev: deps
	$(PY) -m devhost

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: deps lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules .azurite .azurite.log .loadme .pytest_cache .mypy_cache .ruff_cache .hypothesis
