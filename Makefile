# One-command set-up: every target creates what it needs (venv, npm packages) first.
#   make demo   run one job end to end on the local stack (Azurite + local host + local executor)
#   make test   lint, type-check and run the whole test suite, PYTEST_WORKERS (default 2) tests at a time
#   make test-unit  only the tests that need no Azurite (marked `unit` by tests/conftest.py): about a minute
#   make dev    the local stack in the foreground (Ctrl-C stops everything it started)
#   make checkov  scan infra/, templates/ and container/Dockerfile (.checkov.yaml lists each skipped check and why)
#   make test-stress  the suite STRESS_RUNS times (default 5) on a fresh clone with every core kept busy
#   make bench  the benchmark suite: one table of ratios measured side by side, written with a description of
#               the machine to bench/RESULTS.md (about 5 minutes on two cores; not part of make test)
#   make fuzz   schemathesis over the OpenAPI document against a local stack of its own on 127.0.0.1: no 5xx,
#               every answer as documented (bounded: FUZZ_EXAMPLES per operation, FUZZ_SECONDS in all; about
#               10 minutes; not part of make test)
#
# Python 3.13 is required (Azure Functions' Python 3.13 worker, azure-functions-runtime, runs the app
# locally as in Azure); tools/find-python313 finds one or says what to install. PYTHON=... overrides.

PYTHON ?= $(shell tools/find-python313)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# pytest-xdist workers, each with its own Azurite; each test file runs whole in one worker (a module's local
# host is started once), the files in collection order: the long e2e modules first (tests/conftest.py).
# pytest's exit 5 (no test ran) fails the target like any other.
PYTEST_WORKERS ?= 2

CHECKOV_VENV := .venv-checkov
FUZZ_VENV := .venv-fuzz
FUZZ_EXAMPLES ?= 40
FUZZ_SECONDS ?= 600

.PHONY: deps demo test test-unit test-stress bench dev lint typecheck checkov fuzz clean python
STRESS_RUNS ?= 5

python:
	@test -n "$(PYTHON)" || { tools/find-python313 >/dev/null; exit 1; }

# A venv of another Python (an older checkout's 3.11) is replaced, not reused.
$(VENV)/.installed: requirements.txt requirements-dev.txt container/requirements.txt cli/pyproject.toml | python
	@if ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e cli
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed node_modules/.installed

# checkov pins packaging<24, pytest 9 needs packaging>=24: it gets a venv of its own (requirements-checkov.txt).
$(CHECKOV_VENV)/.installed: requirements-checkov.txt | python
	rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml

# schemathesis pins its own hypothesis and HTTP stack: a venv of its own (requirements-fuzz.txt), like checkov's.
$(FUZZ_VENV)/.installed: requirements-fuzz.txt | python
	rm -rf $(FUZZ_VENV) && $(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-fuzz.txt
	touch $@

fuzz: deps $(FUZZ_VENV)/.installed
	$(PY) tools/fuzz.py --schemathesis $(FUZZ_VENV)/bin/schemathesis --max-examples $(FUZZ_EXAMPLES) \
	  --max-time $(FUZZ_SECONDS)

demo: deps
	$(PY) -m devhost.demo

dev: deps
	$(PY) -m devhost

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: deps lint typecheck
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: deps
	$(PY) -m pytest -m unit -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Not in CI: about an hour on two cores. Clones the committed HEAD, so commit first.
test-stress: python
	$(PYTHON) tools/stress_test.py --runs $(STRESS_RUNS)

# Cold start, local throughput and per-run overhead on the local stack, the scale simulation, the janitor.
bench: deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(FUZZ_VENV) node_modules .azurite .azurite.log .loadme .pytest_cache .mypy_cache .ruff_cache .hypothesis
